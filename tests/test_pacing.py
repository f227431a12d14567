"""The adaptive pace of calls to Kravia: its rules one by one, then seeded runs against
stand-ins for Kravia's limits (a token bucket, a server that takes only so many calls at once)
in simulated time, then the client honouring it over real HTTP."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from dataclasses import dataclass

import httpx
import pytest

from kravia_sync.engine.driver import paced_unless_stopped
from kravia_sync.kravia.calls import CallGate
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import KraviaError
from kravia_sync.kravia.pacing import (
    CUBIC_PLATEAU_SECONDS,
    REFUSALS_TO_TELL,
    SLOW_START_LIMIT,
    WINDOW_HOLD_SECONDS,
    Pacing,
    Signal,
)

OK, THROTTLED, OVERLOADED = Signal.ANSWERED, Signal.THROTTLED, Signal.OVERLOADED


def answer(pacing: Pacing, signal: Signal, *, sent_at: float, now: float, **kwargs: float) -> None:
    """One call, sent with the limit in full use, and its answer."""
    pacing.sent(sent_at, pacing.limit)
    pacing.answered(signal, sent_at=sent_at, now=now, **kwargs)


class TestRules:
    def test_slow_start_doubles_up_to_max_in_flight(self):
        pacing = Pacing(max_in_flight=16)
        assert pacing.limit == SLOW_START_LIMIT
        seen = []
        for step in range(5):
            for _ in range(pacing.limit):
                answer(pacing, OK, sent_at=step, now=step + 0.01, latency=0.01)
            seen.append(pacing.limit)
        assert seen == [4, 8, 16, 16, 16]
        assert pacing.rate is None  # no rate until Kravia asks for one

    def test_calls_one_at_a_time_do_not_raise_the_limit(self):
        """Growth needs the limit in use: a run of single calls (the canary, a slow source)
        says nothing of how many Kravia takes at once."""
        pacing = Pacing(max_in_flight=16)
        for step in range(50):
            pacing.sent(step, 1)
            pacing.answered(OK, sent_at=step, now=step + 0.01, latency=0.01)
        assert pacing.limit == SLOW_START_LIMIT

    def test_max_in_flight_of_one_is_one(self):
        pacing = Pacing(max_in_flight=1)
        answer(pacing, OK, sent_at=0, now=0.01, latency=0.01)
        assert pacing.limit == 1

    def test_overload_halves_once_per_round(self):
        """503s to calls that left before the cut are the same trouble: one cut, not four."""
        pacing = Pacing(max_in_flight=16)
        for _ in range(14):
            answer(pacing, OK, sent_at=0, now=0.01, latency=0.01)
        assert pacing.limit == 16
        for _ in range(4):
            answer(pacing, OVERLOADED, sent_at=0.02, now=0.05)
        assert pacing.limit == 8
        answer(pacing, OVERLOADED, sent_at=0.06, now=0.08)  # left after the cut: cuts again
        assert pacing.limit == 4
        assert pacing.overloaded == 5

    def test_after_a_cut_growth_is_one_per_round(self):
        pacing = Pacing(max_in_flight=16)
        for _ in range(14):
            answer(pacing, OK, sent_at=0, now=0.01, latency=0.01)
        answer(pacing, OVERLOADED, sent_at=0.02, now=0.05)
        assert pacing.limit == 8
        for _ in range(9):  # about one round of answers at 8 in flight
            answer(pacing, OK, sent_at=0.1, now=0.11, latency=0.01)
        assert pacing.limit == 9  # grew by one, not doubled
        for _ in range(200):
            answer(pacing, OK, sent_at=0.2, now=0.21, latency=0.01)
        assert pacing.limit == 15  # for a while, just under the limit that met the 503
        answer(pacing, OK, sent_at=WINDOW_HOLD_SECONDS, now=WINDOW_HOLD_SECONDS + 0.1)
        for _ in range(200):
            answer(pacing, OK, sent_at=40.0, now=40.01, latency=0.01)
        assert pacing.limit == 16  # then on, but never past max_in_flight

    def test_overload_never_goes_below_one(self):
        pacing = Pacing(max_in_flight=4)
        for step in range(10):
            answer(pacing, OVERLOADED, sent_at=step, now=step + 0.5)
        assert pacing.limit == 1

    def test_slow_answers_trim_the_limit(self):
        """Answers ten times slower than the fastest seen mean Kravia queues our calls."""
        pacing = Pacing(max_in_flight=16)
        for _ in range(14):
            answer(pacing, OK, sent_at=0, now=0.01, latency=0.01)
        now = 1.0
        for _ in range(60):
            now += 0.5
            answer(pacing, OK, sent_at=now - 0.4, now=now, latency=0.4)
        assert pacing.limit < 16

    def test_a_429_sets_a_rate_from_what_got_through(self):
        pacing = Pacing(max_in_flight=16)
        for i in range(30):  # 20 calls answered within the last second
            answer(pacing, OK, sent_at=i * 0.05, now=i * 0.05 + 0.01, latency=0.01)
        answer(pacing, THROTTLED, sent_at=1.5, now=1.5)
        assert pacing.rate == pytest.approx(0.9 * 20)
        assert pacing.throttled == 1

    def test_a_429_that_cuts_the_rate_pauses_every_call_for_its_retry_after(self):
        pacing = Pacing(max_in_flight=16)
        answer(pacing, THROTTLED, sent_at=0, now=1.0, retry_after=7.0)
        assert pacing.delay(1.0) == pytest.approx(7.0)

    def test_a_429_below_what_got_through_before_is_not_about_the_pace(self):
        """Once Kravia has shown what it takes (between two 429s), a 429 met while slower
        than that neither cuts the rate nor pauses the others: the case waits on its own."""
        pacing = Pacing(max_in_flight=16)
        now = 0.0
        for _ in range(40):
            now += 0.025
            answer(pacing, OK, sent_at=now - 0.01, now=now, latency=0.01)
        answer(pacing, THROTTLED, sent_at=now, now=now + 0.01)  # the first: a rate is set
        for _ in range(80):  # 40 a second went through, then Kravia refused again
            now += 0.025
            answer(pacing, OK, sent_at=now - 0.01, now=now, latency=0.01)
        answer(pacing, THROTTLED, sent_at=now, now=now + 0.01)
        cut_to = pacing.rate
        assert cut_to is not None
        assert cut_to < 40
        now += 0.5
        answer(pacing, THROTTLED, sent_at=now, now=now + 0.01, retry_after=5.0)
        assert pacing.rate == pytest.approx(cut_to, rel=0.01)
        assert pacing.delay(now + 0.01) < 1.0

    def test_a_503_retry_after_is_honoured_too(self):
        pacing = Pacing(max_in_flight=16)
        answer(pacing, OVERLOADED, sent_at=0, now=1.0, retry_after=3.0)
        assert pacing.delay(1.0) == pytest.approx(3.0)

    def test_late_429s_do_not_cut_again(self):
        pacing = Pacing(max_in_flight=16)
        for i in range(10):
            answer(pacing, OK, sent_at=i * 0.05, now=i * 0.05 + 0.01, latency=0.01)
        answer(pacing, THROTTLED, sent_at=0.5, now=0.6)
        first = pacing.rate
        for _ in range(5):  # in flight when the first came back
            answer(pacing, THROTTLED, sent_at=0.55, now=0.62)
        assert pacing.rate == first
        assert pacing.throttled == 6

    def test_calls_leave_spaced_by_the_rate(self):
        pacing = Pacing(max_in_flight=16, ceiling=4.0)
        assert pacing.rate == 4.0
        pacing.sent(10.0)
        assert pacing.delay(10.0) == pytest.approx(0.25)
        pacing.sent(10.25)
        assert pacing.delay(10.25) == pytest.approx(0.25)

    def test_the_configured_rate_is_a_hard_ceiling(self):
        """However well Kravia answers, the pace never passes requests_per_second."""
        pacing = Pacing(max_in_flight=16, ceiling=5.0)
        for i in range(30):
            answer(pacing, OK, sent_at=i * 0.2, now=i * 0.2 + 0.01, latency=0.01)
        answer(pacing, THROTTLED, sent_at=6.0, now=6.01)
        for i in range(10_000):
            now = 7.0 + i * 0.2
            answer(pacing, OK, sent_at=now - 0.01, now=now, latency=0.01)
        assert pacing.rate == 5.0

    def test_after_a_cut_the_rate_climbs_back_and_past(self):
        """CUBIC's curve: back at the rate that met the 429 after the plateau time, then
        probing past it, so a limit Kravia raises is found again."""
        pacing = Pacing(max_in_flight=64)
        now = 0.0
        for _ in range(20):  # 20/s got through
            now += 0.05
            answer(pacing, OK, sent_at=now - 0.01, now=now, latency=0.01)
        answer(pacing, THROTTLED, sent_at=now, now=now + 0.01)  # the first: a probe begins
        now += 2.0
        for _ in range(60):
            now += 0.05
            answer(pacing, OK, sent_at=now - 0.01, now=now, latency=0.01)
        answer(pacing, THROTTLED, sent_at=now, now=now + 0.01)  # the probe ends
        cut_at, met = now + 0.01, pacing.rate
        assert met is not None
        rates = {}
        at = cut_at
        for seconds in (1, CUBIC_PLATEAU_SECONDS, 3 * CUBIC_PLATEAU_SECONDS):
            while at < cut_at + seconds:  # calls keep leaving (time without calls stands still)
                at = min(at + 0.5, cut_at + seconds)
                answer(pacing, OK, sent_at=at - 0.01, now=at)
            rates[seconds] = pacing.rate
        assert rates[1] == pytest.approx(met, rel=0.02)
        assert rates[CUBIC_PLATEAU_SECONDS] == pytest.approx(met / 0.9, rel=0.01)
        assert rates[3 * CUBIC_PLATEAU_SECONDS] > 1.5 * met

    @staticmethod
    def _cut_at_20_per_second(pacing: Pacing) -> float:
        """20 calls/s answered, then a 429 (a rate of 18/s); the time after it."""
        now = 0.0
        for _ in range(40):
            now += 0.05
            answer(pacing, OK, sent_at=now - 0.01, now=now, latency=0.01)
        answer(pacing, THROTTLED, sent_at=now, now=now + 0.01)
        return now + 0.01

    def test_an_idle_spell_does_not_raise_the_rate(self):
        """A daemon idle for an hour between passes: the curve stands still, so the next pass
        starts near the rate Kravia allowed, not at thousands of calls a second."""
        pacing = Pacing(max_in_flight=16)
        now = self._cut_at_20_per_second(pacing)
        for _ in range(100):  # ten seconds at the rate
            now += 0.1
            answer(pacing, OK, sent_at=now - 0.01, now=now, latency=0.01)
        before = pacing.rate
        assert before is not None
        for idle in (3600.0, 30 * 86400.0):
            now += idle
            answer(pacing, OK, sent_at=now, now=now + 0.01, latency=0.01)
            assert pacing.rate is not None
            assert pacing.rate <= 1.05 * before, idle

    def test_refusing_for_counts_an_unbroken_run_of_refusals(self):
        """How long Kravia has refused every call: said only after REFUSALS_TO_TELL refusals
        in a row, from the first of them to the latest, and back to nothing at a good answer."""
        pacing = Pacing(max_in_flight=16)
        for n in range(REFUSALS_TO_TELL - 1):
            answer(pacing, THROTTLED if n % 2 else OVERLOADED, sent_at=10.0 + n, now=10.0 + n)
        assert pacing.refusing_for() == 0.0
        answer(pacing, THROTTLED, sent_at=100.0, now=100.0)
        assert pacing.refusing_for() == pytest.approx(90.0)
        answer(pacing, OK, sent_at=101.0, now=101.0, latency=0.01)
        assert pacing.refusing_for() == 0.0

    def test_a_long_spell_without_calls_ends_a_run_of_refusals(self):
        """A daemon whose last pass met only refusals, an hour before: its next pass does not
        count the hour as refusals (it would give up before sending anything, pass after
        pass), and starts a run of its own."""
        pacing = Pacing(max_in_flight=16)
        for n in range(REFUSALS_TO_TELL + 10):
            answer(pacing, THROTTLED, sent_at=10.0 * n, now=10.0 * n)
        assert pacing.refusing_for() == pytest.approx(10.0 * (REFUSALS_TO_TELL + 9))
        pacing.booked(3600.0 + 10.0 * REFUSALS_TO_TELL)
        assert pacing.refusing_for() == 0.0

    def test_snapshot(self):
        pacing = Pacing(max_in_flight=16, ceiling=30.0)
        for i in range(5):
            answer(pacing, OK, sent_at=i * 0.1, now=i * 0.1 + 0.05, latency=0.05)
        snapshot = pacing.snapshot(0.5)
        assert snapshot.as_dict() == {
            "limit": 7,
            "max_in_flight": 16,
            "rate": 30.0,
            "ceiling": 30.0,
            "achieved": 5.0,
            "throttled": 0,
            "overloaded": 0,
        }

    def test_bad_settings_are_refused(self):
        with pytest.raises(ValueError, match="max_in_flight"):
            Pacing(max_in_flight=0)
        with pytest.raises(ValueError, match="requests_per_second"):
            Pacing(max_in_flight=1, ceiling=0)


# --- seeded runs against stand-ins for Kravia's limits, in simulated time ----------------------


@dataclass
class Run:
    answered: int = 0
    throttled: int = 0
    overloaded: int = 0
    peak_in_flight: int = 0
    seconds: float = 0.0

    @property
    def achieved(self) -> float:
        return self.answered / self.seconds

    @property
    def share_throttled(self) -> float:
        return self.throttled / max(1, self.answered + self.throttled)


def drive(
    pacing: Pacing,
    *,
    seconds: float,
    latency: float,
    rng: random.Random,
    bucket: tuple[float, float] | None = None,
    capacity: int | None = None,
    retry_after: float | None = 1.0,
) -> Run:
    """Keep `pacing` busy for `seconds` of simulated time against a server that answers in
    `latency` (+ up to 30 % jitter) and either spends a token of `bucket` (rate, burst) per call
    (429 with `retry_after` when none is left) or takes at most `capacity` calls at once (503
    beyond)."""
    run = Run(seconds=seconds)
    tokens, filled_at = (bucket[1], 0.0) if bucket else (0.0, 0.0)
    in_flight: list[tuple[float, float, Signal]] = []
    now = 0.0
    while now < seconds:
        while in_flight and in_flight[0][0] <= now:
            done, sent, signal = heapq.heappop(in_flight)
            pause = retry_after if signal is not OK else None
            pacing.answered(signal, sent_at=sent, now=done, latency=done - sent, retry_after=pause)
        if len(in_flight) < pacing.limit and pacing.delay(now) <= 0:
            signal = OK
            if bucket is not None:
                tokens = min(bucket[1], tokens + (now - filled_at) * bucket[0])
                filled_at = now
                if tokens >= 1:
                    tokens -= 1
                else:
                    signal = THROTTLED
            if capacity is not None and len(in_flight) >= capacity:
                signal = OVERLOADED
            run.answered += signal is OK
            run.throttled += signal is THROTTLED
            run.overloaded += signal is OVERLOADED
            pacing.sent(now, len(in_flight) + 1)
            heapq.heappush(in_flight, (now + latency * (1 + 0.3 * rng.random()), now, signal))
            run.peak_in_flight = max(run.peak_in_flight, len(in_flight))
            continue
        moments = [in_flight[0][0]] if in_flight else []
        if len(in_flight) < pacing.limit:
            moments.append(now + max(pacing.delay(now), 0.0) + 1e-9)
        now = min(moments)
    return run


TOKEN_BUCKETS = [
    (rate, burst_seconds, latency, seed)
    for seed, (rate, burst_seconds, latency) in enumerate(
        (rate, burst_seconds, latency)
        for rate in (5.0, 20.0, 50.0)
        for burst_seconds in (1.0, 2.0)
        for latency in (0.01, 0.05, 0.2)
    )
]


@pytest.mark.parametrize(("rate", "burst_seconds", "latency", "seed"), TOKEN_BUCKETS)
def test_a_token_bucket_is_found_and_kept_to(
    rate: float, burst_seconds: float, latency: float, seed: int
) -> None:
    """Against a limit of R calls a second (a burst of one or two seconds' worth), with no
    rate configured: at least 0.9 R achieved over five minutes, at most 2 % of calls met
    with 429."""
    run = drive(
        Pacing(max_in_flight=16),
        seconds=300.0,
        latency=latency,
        rng=random.Random(seed),
        bucket=(rate, rate * burst_seconds),
    )
    assert run.achieved >= 0.9 * rate, run
    assert run.share_throttled <= 0.02, run


@pytest.mark.parametrize("seed", range(4))
def test_a_strict_limit_without_burst_is_found(seed: int) -> None:
    """A limit with no burst at all (calls evenly spaced or refused) gives no measure of
    itself at first: the first guess is low and the probe climbs from it; still at least
    0.6 R over five minutes with few 429s."""
    rng = random.Random(seed)
    rate = rng.choice((5.0, 20.0, 50.0))
    run = drive(Pacing(max_in_flight=16), seconds=300.0, latency=0.02, rng=rng, bucket=(rate, 1.0))
    assert run.achieved >= 0.6 * rate, run
    assert run.share_throttled <= 0.02, run


@pytest.mark.parametrize("seed", range(6))
def test_a_server_that_takes_few_calls_at_once_is_not_flooded(seed: int) -> None:
    """A server that takes `capacity` calls at once and answers 503 beyond: the limit comes
    down to it and the 503s stay few, with most of what the server can take achieved."""
    rng = random.Random(seed)
    capacity = rng.choice((2, 4, 6, 10))
    latency = rng.choice((0.01, 0.05))
    run = drive(
        Pacing(max_in_flight=16),
        seconds=120.0,
        latency=latency,
        rng=rng,
        capacity=capacity,
        retry_after=None,
    )
    best = capacity / (latency * 1.15)
    assert run.overloaded / (run.answered + run.overloaded) <= 0.05, run
    assert run.achieved >= 0.6 * best, run


def test_without_limits_the_ceiling_is_reached_at_once() -> None:
    """Kravia answering everything: max_in_flight within a few round trips, and no rate."""
    pacing = Pacing(max_in_flight=16)
    run = drive(pacing, seconds=1.0, latency=0.025, rng=random.Random(1))
    assert pacing.limit == 16
    assert pacing.rate is None
    assert run.peak_in_flight == 16
    assert run.achieved >= 0.9 * 16 / (0.025 * 1.15)


# --- the client over HTTP ------------------------------------------------------------------


def test_the_client_pauses_every_call_for_a_retry_after() -> None:
    """One 429 with Retry-After: 1 holds back every call the engine makes meanwhile, and the
    client says it saw it."""
    leaving: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        leaving.append(time.monotonic())
        if len(leaving) == 1:
            return httpx.Response(429, headers={"Retry-After": "1"})
        return httpx.Response(200)

    async def go() -> dict[str, float | int | None]:
        client = KraviaClient(
            base_url="http://kravia.test/api/v2/",
            token="t",  # noqa: S106 - a stand-in
            transport=httpx.MockTransport(handler),
        )
        async with client:
            with pytest.raises(KraviaError):
                await client.start(1, message="m")
            await asyncio.gather(*(client.start(n, message="m") for n in range(2, 6)))
            return client.pacing().as_dict()

    pace = asyncio.run(go())
    assert len(leaving) == 5
    assert min(later - leaving[0] for later in leaving[1:]) >= 0.95
    assert pace["throttled"] == 1
    assert pace["rate"] is not None


class TestBoarding:
    """A case's call books its turn at the pace, journals its intent, then boards: the
    place it takes must come within the time its intent allowed for, or not at all."""

    def test_a_call_whose_boarding_time_is_over_does_not_board_though_a_place_is_free(
        self,
    ) -> None:
        gate = CallGate(Pacing(max_in_flight=4))

        async def go() -> tuple[float | None, float | None]:
            await gate.pace()
            late = await gate.board(-0.5)  # the intent's commit took longer than allowed
            await gate.pace()
            in_time = await gate.board(1.0)
            return late, in_time

        late, in_time = asyncio.run(go())

        assert late is None
        assert in_time is not None
        assert gate.in_flight == 1

    def test_a_full_gate_turns_a_call_away_when_its_time_is_up(self) -> None:
        gate = CallGate(Pacing(max_in_flight=1))

        async def go() -> tuple[float | None, float]:
            await gate.enter()  # the one place, held by a call in flight
            await gate.pace()
            began = time.monotonic()
            boarded = await gate.board(0.1)
            return boarded, time.monotonic() - began

        boarded, waited = asyncio.run(go())

        assert boarded is None
        assert 0.09 <= waited < 1.0
        assert gate.in_flight == 1

    def test_calls_booked_while_places_were_full_leave_at_the_ceiling_not_all_at_once(
        self,
    ) -> None:
        """Four calls booked their turns (at 20 a second) while the only place was taken:
        when it frees, they leave one rate interval apart, as `enter` would send them."""
        gate = CallGate(Pacing(max_in_flight=4, ceiling=20.0))
        departures: list[float] = []

        async def one() -> None:
            await gate.pace()
            boarded = await gate.board(5.0)
            assert boarded is not None
            departures.append(boarded)
            gate.leave()

        async def go() -> None:
            hold = [await gate.enter() for _ in range(gate.pacing.limit)]  # every place taken
            waiting = [asyncio.create_task(one()) for _ in range(4)]
            await asyncio.sleep(0.3)  # every turn booked by now
            for _ in hold:
                gate.leave()
            await asyncio.gather(*waiting)

        asyncio.run(go())

        gaps = [later - earlier for earlier, later in itertools.pairwise(departures)]
        assert len(gaps) == 3
        assert min(gaps) >= 0.045  # 1/20 s, less the clock's grain


class TestAStopEndsTheWaitForATurn:
    """Asked to stop during a long wait for a turn at the pace (a Retry-After pause of up to a
    minute), a case's next call is given up at once, before its intent is journaled."""

    def test_a_stop_during_the_wait_ends_it(self) -> None:
        cancelled: list[bool] = []

        async def paused_for_a_minute() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        async def go() -> tuple[bool, float]:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.05, stop.set)
            started = time.monotonic()
            paced = await paced_unless_stopped(paused_for_a_minute, stop)
            return paced, time.monotonic() - started

        paced, waited = asyncio.run(go())
        assert paced is False
        assert waited < 5
        assert cancelled == [True]

    def test_without_a_stop_the_turn_is_taken(self) -> None:
        turns: list[str] = []

        async def pace() -> None:
            turns.append("taken")

        assert asyncio.run(paced_unless_stopped(pace, asyncio.Event())) is True
        assert turns == ["taken"]

    def test_once_stopped_no_turn_is_asked_for(self) -> None:
        turns: list[str] = []

        async def pace() -> None:
            turns.append("taken")

        async def go() -> bool:
            stop = asyncio.Event()
            stop.set()
            return await paced_unless_stopped(pace, stop)

        assert asyncio.run(go()) is False
        assert turns == []
