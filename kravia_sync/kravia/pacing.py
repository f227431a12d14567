"""How fast calls leave for Kravia: a concurrency limit and a rate that follow Kravia's answers.

Kravia publishes no rate limit (see `kravia.py`'s assumptions), so a fixed pace is either too
slow for everyone or too fast for someone. The pace is found the way TCP finds what a path
carries, from the answers themselves:

- **Concurrency** starts at 2 and grows by one per good answer (doubling each round trip, TCP's
  slow start) up to `max_in_flight`, but only while more than half of it is in use (RFC 7661:
  calls made one at a time say nothing of how many Kravia takes at once). An overload signal
  (502, 503, 504, a timeout) halves it and ends the slow start; after that it grows by one per
  round of good answers (1/limit per answer), for `WINDOW_HOLD_SECONDS` only to just under the
  limit that met the trouble, then on towards `max_in_flight`. Answers much slower than the
  fastest seen lately (Kravia queueing our calls) hold growth and trim the limit by a tenth.
- **Rate**: none until Kravia answers 429. The first 429 sets a rate of 90 % of the calls
  answered in the last second (or since the first call, when that is sooner): what got
  through is what Kravia lets through. When fewer than `PROBE_BELOW` got through, that is no
  measure (a limit without burst refuses the second call at once), so a probe starts that
  adds a call per second for each good answer (doubling the rate each second it is what holds
  calls back) and the next 429 ends it. From then on the rate follows CUBIC (RFC 9438): each
  429 cuts it to 90 % of the rate that met it, or of what got through since the last cut if
  less (never below half the rate in force, a quarter of the most calls Kravia answered in a
  second lately, nor `MIN_RATE`: however the 429s come, a pass is slowed, not stalled; a limit
  Kravia lowers far is followed as that "lately" fades, over a minute); it climbs back to that
  rate in `CUBIC_PLATEAU_SECONDS`, stays close to it for a while, then probes past it faster
  and faster, so it finds the limit again if Kravia raises it.
- **Not every 429 is about the pace.** Between two 429s that cut the rate Kravia had no room
  for a call at either end, so what it took in between is at most its limit. A 429 met while
  the rate is no faster than that is not about the pace (a gateway's hiccup, a refusal of one
  call): the case waits on its own and the others go on.
- **Retry-After** on a 429 that cuts the rate, or on a 503, pauses every new call until then;
  any other 429's Retry-After is for its own call (the engine waits it before trying again).
- A cut happens once per round, and at most once in `MIN_MEASURE_SECONDS`: answers to calls
  that left before the last cut are the same trouble seen late, and sooner than that it is
  too early to tell whether the cut was enough.
- **Time without calls does not count.** When no call leaves for a while (between a daemon's
  passes, a long Retry-After pause), the rate's curve stands still and resumes where it was
  (RFC 9438 §5.8): an hour between passes is no evidence that Kravia takes more.
- A configured `requests_per_second` is a hard ceiling over all of it.

Everything here is arithmetic on times passed in (`time.monotonic()` seconds): no clock, no I/O.
`kravia.CallGate` does the waiting.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Pacing", "PacingSnapshot", "Signal"]

SLOW_START_LIMIT = 2  # calls in flight before any answer has come back
RATE_CUT = 0.9  # a 429 sets the rate to this share of the rate that met it
DEEPEST_CUT = 0.5  # ... but never below this share of the rate in force ...
PEAK_FLOOR = 0.25  # ... nor below this share of the most calls answered in a second lately
PEAK_MEMORY_SECONDS = 60.0  # ("lately": that most is forgotten over about this long)
PROBE_BELOW = 10  # a first 429 with fewer calls answered in the last second starts a probe
PROBE_GROWTH_PER_ANSWER = 1.0  # calls/s added per good answer while probing after the first 429
CUBIC_PLATEAU_SECONDS = 30.0  # after a cut, the rate is back where it met the 429 after this
MIN_RATE = 0.5  # calls/s: the slowest the pace goes on its own (Retry-After can pause longer)
WINDOW_CUT = 0.5  # an overload signal halves the concurrency limit
WINDOW_HOLD_SECONDS = 30.0  # after a cut, the limit stays under the one that met trouble
LATENCY_CUT = 0.9  # ... slow answers trim it by a tenth
LATENCY_FACTOR = 3.0  # answers are slow past this many times the fastest seen lately ...
LATENCY_SLACK = 0.1  # ... and this many seconds more than it
LATENCY_SMOOTHING = 0.1  # weight of the newest answer in the running latency
LATENCY_EPOCH = 256  # answers after which the fastest-seen forgets older answers
ACHIEVED_WINDOW = 1.0  # seconds over which "answered lately" is counted
MIN_MEASURE_SECONDS = 0.5  # a cut is judged (and what got through since read) after this
REFUSALS_TO_TELL = 20  # refusals in a row before "Kravia refuses every call" is said at all
# A run of refusals ends with a call leaving after a spell without any this long (longer than
# any Retry-After pause): a daemon's next pass, an hour on, starts a run of its own.
REFUSAL_RUN_GAP_SECONDS = 120.0
IDLE_SECONDS = 2.0  # no call leaving for longer (and two rate intervals): the curve stands still


class Signal(StrEnum):
    """What one answer says about Kravia's load."""

    ANSWERED = "answered"  # any answer that is no sign of load (2xx, 4xx but 429)
    THROTTLED = "throttled"  # 429 Too Many Requests
    OVERLOADED = "overloaded"  # 502, 503, 504 or no answer in time


@dataclass(frozen=True, slots=True)
class PacingSnapshot:
    """The pace now, for the progress display, the `--json` summary and `/metrics`."""

    limit: int  # calls allowed in flight now
    max_in_flight: int
    rate: float | None  # calls per second allowed now (None: no rate applies)
    ceiling: float | None  # the configured requests_per_second
    achieved: float  # calls answered in the last second
    throttled: int  # 429s seen
    overloaded: int  # 502/503/504s and timeouts seen

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "limit": self.limit,
            "max_in_flight": self.max_in_flight,
            "rate": None if self.rate is None else round(self.rate, 2),
            "ceiling": self.ceiling,
            "achieved": round(self.achieved, 2),
            "throttled": self.throttled,
            "overloaded": self.overloaded,
        }


class Pacing:
    """The adaptive limits of one client (or one daemon, across its passes)."""

    def __init__(self, *, max_in_flight: int, ceiling: float | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if ceiling is not None and ceiling <= 0:
            raise ValueError("requests_per_second must be above 0")
        self.max_in_flight = max_in_flight
        self.ceiling = ceiling
        self._window = float(min(SLOW_START_LIMIT, max_in_flight))
        self._slow_start = True
        self._first_sent = math.inf
        self._in_flight_at_send = 0  # calls out when the last one left
        self._rate: float | None = None  # learned from 429s
        self._probing = False  # between the first 429 and the second
        self._rate_met = 0.0  # the rate that met the last 429 (CUBIC's W_max)
        self._peak, self._peak_at = 0.0, 0.0  # the most calls answered in a second, and when
        self._allowed: float | None = None  # what Kravia let through when it last met one
        self._good_since_cut = 0  # good answers since then
        self._next_departure = -math.inf
        self._last_booked = -math.inf
        self._paused_until = -math.inf
        self._last_window_cut = -math.inf
        self._window_met = float(max_in_flight)  # the limit that met the last overload
        self._last_rate_cut = -math.inf
        self._answered: deque[float] = deque()
        self._fastest = math.inf  # fastest answer this epoch and the one before
        self._fastest_epoch = math.inf
        self._epoch_answers = 0
        self._latency: float | None = None  # smoothed
        self.throttled = 0
        self.overloaded = 0
        self._refused_in_a_row = 0  # 429s and overloads since the last good answer ...
        self._refused_since = math.inf  # ... when the first of them came ...
        self._refused_last = -math.inf  # ... and the latest

    # --- what the gate asks -------------------------------------------------------------------
    @property
    def limit(self) -> int:
        """Calls allowed in flight now."""
        return max(1, min(self.max_in_flight, math.floor(self._window)))

    @property
    def rate(self) -> float | None:
        """Calls per second allowed now, or None when no rate applies."""
        if self._rate is None:
            return self.ceiling
        return self._rate if self.ceiling is None else min(self._rate, self.ceiling)

    def refusing_for(self) -> float:
        """Seconds for which Kravia has refused every call (429s, overloads, timeouts): from the
        first refusal of the run to the latest, once at least `REFUSALS_TO_TELL` in a row; 0
        when fewer, when an answer was good since, or when calls stopped for a long spell (the
        run ends: time without calls is not time Kravia refused them)."""
        if self._refused_in_a_row < REFUSALS_TO_TELL:
            return 0.0
        return self._refused_last - self._refused_since

    def paused_for(self, now: float) -> float:
        """Seconds a Retry-After pause still holds every call back (0 or less: none)."""
        return self._paused_until - now

    def delay(self, now: float) -> float:
        """Seconds before the next call may leave (0 or less: now), a slot being free."""
        return max(self._paused_until, self._next_departure) - now

    def sent(self, now: float, in_flight: int = 1) -> None:
        """A call left at `now`, making `in_flight` calls out: the next one leaves one rate
        interval later."""
        self.booked(now)
        self.boarded(in_flight)

    def booked(self, now: float) -> None:
        """A call took its turn at the pace at `now` (it leaves once it has a place in
        flight): the next one leaves one rate interval later."""
        self._first_sent = min(self._first_sent, now)
        self._stand_still_while_idle(now)
        if now - self._last_booked > REFUSAL_RUN_GAP_SECONDS:
            self._end_refusals()
        self._last_booked = now
        rate = self.rate
        if rate is not None:
            self._next_departure = max(now, self._next_departure) + 1.0 / rate

    def _stand_still_while_idle(self, now: float) -> None:
        """A call leaving after a spell without any: the rate's curve (and what got through
        since the last cut) goes on from where it stood before the spell."""
        rate = self.rate
        if self._last_rate_cut == -math.inf or rate is None:
            return
        idle = now - max(self._last_booked, self._last_rate_cut) - max(IDLE_SECONDS, 2.0 / rate)
        if idle > 0:
            self._last_rate_cut += idle

    def _end_refusals(self) -> None:
        self._refused_in_a_row, self._refused_since, self._refused_last = 0, math.inf, -math.inf

    def boarded(self, in_flight: int) -> None:
        """A call whose turn was booked left, making `in_flight` calls out."""
        self._in_flight_at_send = in_flight

    # --- what the answers say -----------------------------------------------------------------
    def answered(
        self,
        signal: Signal,
        *,
        sent_at: float,
        now: float,
        latency: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Take in one answer to a call that left at `sent_at` (`latency`: how long the
        answer took; `retry_after`: the seconds a Retry-After header asked for)."""
        pause = retry_after if retry_after is not None and retry_after > 0 else None
        if signal is Signal.ANSWERED:
            self._end_refusals()
        else:
            self._refused_in_a_row += 1
            self._refused_since = min(self._refused_since, now)
            self._refused_last = max(self._refused_last, now)
        if signal is Signal.THROTTLED:
            if not self._throttled(sent_at, now):
                return  # not about the pace: the case waits its Retry-After, the rest go on
        elif signal is Signal.OVERLOADED:
            self._overloaded(sent_at, now)
        else:
            self._good(sent_at, now, latency)
        if pause is not None:
            self._paused_until = max(self._paused_until, now + pause)

    def _throttled(self, sent_at: float, now: float) -> bool:
        """Take in a 429; whether it was about the pace (and cut the rate)."""
        self.throttled += 1
        if sent_at < self._last_rate_cut:
            return False  # left before the last cut: the same trouble, seen late
        if now - self._last_rate_cut < MIN_MEASURE_SECONDS:
            return False  # too soon to tell whether the last cut was enough
        rate = self.rate
        if self._allowed is not None and rate is not None and rate <= self._allowed:
            # Slower than Kravia let calls through before, refused all the same: not a limit
            # on the pace (a faulty gateway, a refusal of this one call). Cutting on would
            # only stall the pass.
            return False
        met = self._rate_meeting_429(now)
        # What Kravia took since the last cut, when both ends were 429s (it had no room for a
        # call at either): never more than its limit, so slower than this no 429 is about
        # the pace. (Not after the first 429: its count includes what Kravia had saved up.)
        self._allowed = self._since_cut(now) if rate is not None and not self._probing else None
        # A first 429 after only a few calls got through says little of the rate: probe.
        self._probing = self._rate is None and self._achieved(now) < PROBE_BELOW
        floor = max(MIN_RATE, PEAK_FLOOR * self._peak_now(now))
        if rate is not None:
            floor = max(floor, DEEPEST_CUT * rate)
        self._rate = max(floor, RATE_CUT * met)
        self._rate_met = self._rate / RATE_CUT  # where the curve levels out
        self._last_rate_cut = now
        self._good_since_cut = 0
        rate = self.rate
        assert rate is not None  # noqa: S101 - a learned rate is set just above
        self._next_departure = max(self._next_departure, now + 1.0 / rate)
        return True

    def _peak_now(self, now: float) -> float:
        """The most calls answered in a second lately, forgotten over `PEAK_MEMORY_SECONDS`."""
        return self._peak * math.exp(-(now - self._peak_at) / PEAK_MEMORY_SECONDS)

    def _since_cut(self, now: float) -> float | None:
        """Calls sent after the last cut and answered well, per second since it (None before
        a cut, or too soon after one to say much)."""
        elapsed = now - self._last_rate_cut
        if elapsed < MIN_MEASURE_SECONDS:
            return None
        return self._good_since_cut / elapsed

    def _rate_meeting_429(self, now: float) -> float:
        """The rate that met a 429 (CUBIC's W_max): the rate in force, or what Kravia let
        through if less (the rate was above its limit, was not what held calls back, or
        Kravia lowered its limit).

        What got through, for the first 429: the calls answered in the last second (or since
        the first call, when that is sooner), which may include a burst Kravia had saved up.
        After that: the calls sent after the last cut and answered well, per second since it
        (Kravia had no room for a call at either 429, so what it took in between is what it
        allows over that time; low when calls went slower than it allows for long). Too soon
        after a cut to read it, the rate in force is taken."""
        rate = self.rate
        if self._last_rate_cut == -math.inf:  # the first 429 (under a ceiling, or none)
            elapsed = min(ACHIEVED_WINDOW, now - self._first_sent)
            through = self._achieved(now) / elapsed if elapsed > 0 else 0.0
        else:
            through = self._since_cut(now) or 0.0
        if rate is None:
            return through or 1.0
        return min(rate, through) if through else rate

    def _grow_rate(self, now: float) -> None:
        """A good answer while a rate applies: the probe's step, or CUBIC's curve."""
        assert self._rate is not None  # noqa: S101 - called only then
        if self._probing:
            grown = self._rate + PROBE_GROWTH_PER_ANSWER
        else:
            elapsed = (now - self._last_rate_cut) / CUBIC_PLATEAU_SECONDS - 1.0
            grown = self._rate_met * (1.0 + (1.0 - RATE_CUT) * elapsed**3)
        self._rate = max(self._rate, grown)
        if self.ceiling is not None:
            self._rate = min(self._rate, self.ceiling)

    def _overloaded(self, sent_at: float, now: float) -> None:
        self.overloaded += 1
        self._cut_window(sent_at, now, WINDOW_CUT)

    def _cut_window(self, sent_at: float, now: float, factor: float) -> None:
        self._slow_start = False
        if sent_at < self._last_window_cut:
            return
        self._window_met = self._window
        self._window = max(1.0, self._window * factor)
        self._last_window_cut = now

    def _window_cap(self, now: float) -> float:
        """How far the limit may grow now: to max_in_flight, but for a while after a cut only
        to just under the limit that met the trouble (so it is not met again at once)."""
        if now - self._last_window_cut < WINDOW_HOLD_SECONDS:
            return max(1.0, min(float(self.max_in_flight), self._window_met - 1.0))
        return float(self.max_in_flight)

    def _good(self, sent_at: float, now: float, latency: float | None) -> None:
        self._answered.append(now)
        achieved = self._achieved(now) / ACHIEVED_WINDOW
        if achieved > self._peak_now(now):
            self._peak, self._peak_at = achieved, now
        if sent_at >= self._last_rate_cut:  # Kravia took it after the cut
            self._good_since_cut += 1
        if self._rate is not None:
            self._grow_rate(now)
        if latency is not None and self._slow(latency):
            self._cut_window(sent_at, now, LATENCY_CUT)
            return
        if 2 * self._in_flight_at_send <= self.limit:
            return  # the limit is not what holds calls back: no evidence it could be higher
        step = 1.0 if self._slow_start else 1.0 / self._window
        self._window = max(self._window, min(self._window_cap(now), self._window + step))

    def _slow(self, latency: float) -> bool:
        """Take in one latency; whether answers are now slow enough to mean queueing."""
        self._epoch_answers += 1
        if self._epoch_answers >= LATENCY_EPOCH:
            self._fastest, self._fastest_epoch = self._fastest_epoch, math.inf
            self._epoch_answers = 0
        self._fastest_epoch = min(self._fastest_epoch, latency)
        self._fastest = min(self._fastest, latency)
        if self._latency is None:
            self._latency = latency
        else:
            self._latency += LATENCY_SMOOTHING * (latency - self._latency)
        fastest = self._fastest
        return self._latency > max(fastest * LATENCY_FACTOR, fastest + LATENCY_SLACK)

    def _achieved(self, now: float) -> int:
        """Calls answered well in the last `ACHIEVED_WINDOW` seconds."""
        answered = self._answered
        while answered and answered[0] <= now - ACHIEVED_WINDOW:
            answered.popleft()
        return len(answered)

    def snapshot(self, now: float) -> PacingSnapshot:
        return PacingSnapshot(
            limit=self.limit,
            max_in_flight=self.max_in_flight,
            rate=self.rate,
            ceiling=self.ceiling,
            achieved=self._achieved(now) / ACHIEVED_WINDOW,
            throttled=self.throttled,
            overloaded=self.overloaded,
        )
