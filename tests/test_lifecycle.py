"""Tests of the case lifecycle (`kravia_sync.lifecycle`): pure decisions and transitions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kravia_sync.identity import Absent, Adopt, Unknown
from kravia_sync.lifecycle import (
    IN_KRAVIA_PHASES,
    CaseState,
    Decision,
    Details,
    Phase,
    StartPolicy,
    Step,
    Timing,
    adopted_at_capital,
    after_details,
    after_failure,
    after_identity,
    after_lookup,
    after_success,
    backing_off,
    begin,
    next_step,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SETTLE = timedelta(minutes=2)
TIMING = Timing(
    settle=SETTLE,
    backoff_base=timedelta(seconds=2),
    backoff_cap=timedelta(hours=1),
    max_lookups=3,
)
RETRY = timedelta(seconds=30)
SENDING = {Phase.REGISTERING, Phase.UPLOADING, Phase.STARTING}
RESTING = {Phase.STARTED, Phase.REJECTED, Phase.NEEDS_REVIEW}


def make_case(phase: Phase = Phase.NEW, **changes: object) -> CaseState:
    """A case in `phase`; cases that are in Kravia carry a Kravia id."""
    defaults: dict[str, object] = {
        "accounting_invoice_id": "A-20003",
        "source": "erp",
        "record_key": "invoices.csv:2",
        "invoice_number": "20003",
        "phase": phase,
        "fingerprint": "f" * 32,
        "record_hash": "h" * 32,
        "has_document": True,
        "first_seen_at": T0 - timedelta(days=1),
        "updated_at": T0 - timedelta(hours=1),
    }
    if phase in IN_KRAVIA_PHASES:
        defaults["kravia_id"] = 501
        defaults["registered_fingerprint"] = "f" * 32
    if phase in SENDING:
        defaults["pending_attempt"] = "att-1"
        defaults["pending_since"] = T0
    return CaseState(**{**defaults, **changes})  # type: ignore[arg-type]


class TestNextStepResting:
    @pytest.mark.parametrize("phase", sorted(RESTING))
    @pytest.mark.parametrize("start", list(StartPolicy))
    @pytest.mark.parametrize("backoff", [None, T0 + timedelta(hours=1)])
    def test_nothing_to_do(self, phase, start, backoff):
        """Started, rejected and needs-review cases have no next step, whatever else is set."""
        case = make_case(phase, next_attempt_at=backoff)

        assert next_step(case, start=start, now=T0, timing=TIMING) == Decision(
            Step.NONE, reason=phase.value
        )


class TestNextStepSending:
    @pytest.mark.parametrize(
        ("phase", "step"),
        [
            (Phase.REGISTERING, Step.LOOKUP),
            (Phase.UPLOADING, Step.VERIFY_UPLOAD),
            (Phase.STARTING, Step.VERIFY_START),
        ],
    )
    @pytest.mark.parametrize("start", list(StartPolicy))
    def test_settle_window(self, phase, step, start):
        """A lost answer is looked into only after the settle time; before that, wait."""
        case = make_case(phase, pending_since=T0)

        early = next_step(case, start=start, now=T0 + SETTLE / 2, timing=TIMING)
        edge = next_step(case, start=start, now=T0 + SETTLE, timing=TIMING)
        late = next_step(case, start=start, now=T0 + SETTLE * 5, timing=TIMING)

        assert early.step is Step.WAIT
        assert early.not_before == T0 + SETTLE
        assert step.value in early.reason
        assert edge == Decision(step)
        assert late == Decision(step)

    @pytest.mark.parametrize("phase", sorted(SENDING))
    def test_backoff_after_settle(self, phase):
        """A retry time later than the settle time delays the look further."""
        later = T0 + SETTLE * 10
        case = make_case(phase, pending_since=T0, next_attempt_at=later)

        waiting = next_step(case, start=StartPolicy.AUTO, now=T0 + SETTLE * 2, timing=TIMING)
        due = next_step(case, start=StartPolicy.AUTO, now=later, timing=TIMING)

        assert waiting.step is Step.WAIT
        assert waiting.not_before == later
        assert due.step is not Step.WAIT

    @pytest.mark.parametrize("phase", sorted(SENDING))
    def test_stale_backoff_does_not_shorten_settle(self, phase):
        """A retry time from before the attempt does not cut the settle time short."""
        case = make_case(phase, pending_since=T0, next_attempt_at=T0 - timedelta(hours=1))

        decision = next_step(case, start=StartPolicy.AUTO, now=T0 + SETTLE / 2, timing=TIMING)

        assert decision == Decision(Step.WAIT, T0 + SETTLE, decision.reason)

    def test_without_pending_since_uses_updated_at(self):
        """Without a pending time, the case's last update starts the settle window."""
        case = make_case(Phase.REGISTERING, pending_since=None, updated_at=T0)

        decision = next_step(case, start=StartPolicy.AUTO, now=T0 + SETTLE / 2, timing=TIMING)

        assert decision.step is Step.WAIT
        assert decision.not_before == T0 + SETTLE


class TestNextStepForward:
    @pytest.mark.parametrize(
        ("phase", "has_document", "start", "expected"),
        [
            (Phase.NEW, True, StartPolicy.AUTO, Step.REGISTER),
            (Phase.NEW, True, StartPolicy.MANUAL, Step.REGISTER),
            (Phase.NEW, False, StartPolicy.AUTO, Step.REGISTER),
            (Phase.NEW, False, StartPolicy.MANUAL, Step.REGISTER),
            (Phase.REGISTERED, True, StartPolicy.AUTO, Step.UPLOAD),
            (Phase.REGISTERED, True, StartPolicy.MANUAL, Step.UPLOAD),
            (Phase.REGISTERED, False, StartPolicy.AUTO, Step.START),
            (Phase.REGISTERED, False, StartPolicy.MANUAL, Step.NONE),
            (Phase.DOCUMENTED, True, StartPolicy.AUTO, Step.START),
            (Phase.DOCUMENTED, True, StartPolicy.MANUAL, Step.NONE),
            (Phase.DOCUMENTED, False, StartPolicy.AUTO, Step.START),
            (Phase.DOCUMENTED, False, StartPolicy.MANUAL, Step.NONE),
        ],
    )
    def test_table(self, phase, has_document, start, expected):
        """Register new cases, upload a copy when there is one, then start unless manual."""
        case = make_case(phase, has_document=has_document)

        decision = next_step(case, start=start, now=T0, timing=TIMING)

        assert decision.step is expected
        assert decision.not_before is None
        if expected is Step.NONE:
            assert "manual" in decision.reason

    @pytest.mark.parametrize("phase", [Phase.NEW, Phase.REGISTERED, Phase.DOCUMENTED])
    @pytest.mark.parametrize("start", list(StartPolicy))
    def test_backoff_window(self, phase, start):
        """Inside the backoff window the case waits; at its end it goes on."""
        until = T0 + RETRY
        case = make_case(phase, next_attempt_at=until)

        inside = next_step(case, start=start, now=T0, timing=TIMING)
        at_end = next_step(case, start=start, now=until, timing=TIMING)

        assert inside.step is Step.WAIT
        assert inside.not_before == until
        assert "backing off" in inside.reason
        assert at_end.step is not Step.WAIT

    def test_past_backoff_ignored(self):
        """A retry time in the past does not hold the case back."""
        case = make_case(Phase.NEW, next_attempt_at=T0 - RETRY)

        assert next_step(case, start=StartPolicy.AUTO, now=T0, timing=TIMING).step is Step.REGISTER


class TestBegin:
    @pytest.mark.parametrize(
        ("from_phase", "step", "sending"),
        [
            (Phase.NEW, Step.REGISTER, Phase.REGISTERING),
            (Phase.REGISTERED, Step.UPLOAD, Phase.UPLOADING),
            (Phase.DOCUMENTED, Step.START, Phase.STARTING),
            (Phase.REGISTERED, Step.START, Phase.STARTING),
        ],
    )
    def test_enters_sending_phase(self, from_phase, step, sending):
        """begin records the sending phase, the attempt and when it was sent."""
        case = make_case(from_phase, attempts=2)

        begun = begin(case, step, attempt_id="att-9", now=T0)

        assert begun.phase is sending
        assert begun.pending_attempt == "att-9"
        assert begun.pending_since == T0
        assert begun.updated_at == T0
        assert begun.attempts == 2
        assert begun.kravia_id == case.kravia_id

    def test_an_earlier_back_off_does_not_hold_up_settling_a_lost_answer(self):
        """Seed 1785 of the engine model: a Start answered 429 backs off an hour ahead on a
        clock that then went back an hour; the Start is sent again (the clock went back past
        the back-off) and its answer lost. Settling it waits for the settle time only."""
        backed_off = make_case(
            Phase.REGISTERED, next_attempt_at=T0 + timedelta(hours=1), updated_at=T0 + RETRY
        )
        sent_at = T0 - timedelta(minutes=55)  # the clock went back

        begun = begin(backed_off, Step.START, attempt_id="att-1", now=sent_at)
        later = sent_at + SETTLE + timedelta(seconds=1)

        assert begun.next_attempt_at is None
        decision = next_step(begun, start=StartPolicy.AUTO, now=later, timing=TIMING)
        assert decision.step is Step.VERIFY_START

    @pytest.mark.parametrize("step", [Step.LOOKUP, Step.VERIFY_START, Step.NONE])
    def test_only_sending_steps(self, step):
        """Only steps that change Kravia are begun."""
        with pytest.raises(KeyError):
            begin(make_case(), step, attempt_id="x", now=T0)


class TestAfterSuccess:
    def test_register(self):
        """A confirmed register records the Kravia id and the fingerprint it was sent with."""
        case = begin(
            make_case(Phase.NEW, attempts=3, lookups=1, last_error="503", next_attempt_at=T0),
            Step.REGISTER,
            attempt_id="att-1",
            now=T0,
        )

        done = after_success(case, Step.REGISTER, now=T0 + RETRY, kravia_id=777)

        assert done.phase is Phase.REGISTERED
        assert done.kravia_id == 777
        assert done.registered_fingerprint == case.fingerprint
        assert done.registered_at == T0  # when the register was sent, not when it was answered
        assert (done.pending_attempt, done.pending_since) == (None, None)
        assert (done.attempts, done.lookups) == (0, 0)
        assert done.next_attempt_at is None
        assert done.last_error is None
        assert done.updated_at == T0 + RETRY

    def test_register_needs_id(self):
        """A register cannot succeed without the id Kravia gave."""
        with pytest.raises(ValueError, match="Kravia id"):
            after_success(make_case(Phase.REGISTERING), Step.REGISTER, now=T0)

    @pytest.mark.parametrize(
        ("phase", "step", "expected"),
        [
            (Phase.UPLOADING, Step.UPLOAD, Phase.DOCUMENTED),
            (Phase.STARTING, Step.START, Phase.STARTED),
        ],
    )
    def test_upload_and_start(self, phase, step, expected):
        """A confirmed upload documents the case; a confirmed start starts it; the id stays."""
        done = after_success(make_case(phase, attempts=1), step, now=T0)

        assert done.phase is expected
        assert done.kravia_id == 501
        assert done.pending_attempt is None
        assert done.attempts == 0

    def test_not_a_sending_step(self):
        """Success of a non-sending step is a programming error."""
        with pytest.raises(ValueError, match="not a sending step"):
            after_success(make_case(Phase.REGISTERING), Step.LOOKUP, now=T0)


class TestAfterFailure:
    @pytest.mark.parametrize(
        ("sending", "step", "has_document", "back_to"),
        [
            (Phase.REGISTERING, Step.REGISTER, True, Phase.NEW),
            (Phase.UPLOADING, Step.UPLOAD, True, Phase.REGISTERED),
            (Phase.STARTING, Step.START, True, Phase.DOCUMENTED),
            (Phase.STARTING, Step.START, False, Phase.REGISTERED),
        ],
    )
    def test_transient(self, sending, step, has_document, back_to):
        """A transient failure goes back to the phase before, one attempt more, backing off."""
        case = make_case(sending, has_document=has_document, attempts=2)
        if step is Step.REGISTER:
            case = replace(case, kravia_id=None, registered_fingerprint=None)

        failed = after_failure(
            case, step, failure="transient", message="503 busy", now=T0, retry_in=RETRY
        )

        assert failed.phase is back_to
        assert failed.attempts == 3
        assert failed.next_attempt_at == T0 + RETRY
        assert failed.last_error == "503 busy"
        assert (failed.pending_attempt, failed.pending_since) == (None, None)
        assert failed.kravia_id == case.kravia_id

    def test_terminal_register_rejected(self):
        """Kravia refusing a register rejects the case until the source changes it."""
        case = make_case(Phase.REGISTERING)

        failed = after_failure(
            case, Step.REGISTER, failure="terminal", message="400 bad", now=T0, retry_in=RETRY
        )

        assert failed.phase is Phase.REJECTED
        assert failed.last_error == "400 bad"
        assert failed.pending_attempt is None
        assert next_step(failed, start=StartPolicy.AUTO, now=T0, timing=TIMING).step is Step.NONE

    @pytest.mark.parametrize(
        ("sending", "step"), [(Phase.UPLOADING, Step.UPLOAD), (Phase.STARTING, Step.START)]
    )
    def test_terminal_after_register_needs_review(self, sending, step):
        """Kravia refusing an upload or start of a registered case asks a person to look."""
        case = make_case(sending)

        failed = after_failure(
            case, step, failure="terminal", message="400 nope", now=T0, retry_in=RETRY
        )

        assert failed.phase is Phase.NEEDS_REVIEW
        assert failed.kravia_id == 501
        assert step.value in failed.last_error
        assert "400 nope" in failed.last_error
        assert failed.pending_attempt is None

    @pytest.mark.parametrize(
        ("sending", "step"),
        [
            (Phase.REGISTERING, Step.REGISTER),
            (Phase.UPLOADING, Step.UPLOAD),
            (Phase.STARTING, Step.START),
        ],
    )
    def test_ambiguous_keeps_sending_phase(self, sending, step):
        """An ambiguous failure keeps the sending phase and attempt: the next step is to look."""
        case = make_case(sending, pending_attempt="att-4", pending_since=T0, attempts=1)

        failed = after_failure(
            case, step, failure="ambiguous", message="read timeout", now=T0, retry_in=RETRY
        )

        assert failed.phase is sending
        assert failed.pending_attempt == "att-4"
        assert failed.pending_since == T0
        assert failed.attempts == 1
        assert failed.last_error == "read timeout"
        assert next_step(failed, start=StartPolicy.AUTO, now=T0, timing=TIMING).step is Step.WAIT


class TestAfterLookup:
    def lookup(self, found: list[int], *, complete: bool = True, lookups: int = 0) -> CaseState:
        case = make_case(Phase.REGISTERING, lookups=lookups, last_error="read timeout")
        return after_lookup(
            case, found, now=T0, complete=complete, retry_in=RETRY, max_lookups=TIMING.max_lookups
        )

    def test_one_found_adopted(self):
        """Exactly one case found: it is adopted, the case is registered with its id."""
        adopted = self.lookup([812])

        assert adopted.phase is Phase.REGISTERED
        assert adopted.kravia_id == 812
        assert adopted.registered_fingerprint == adopted.fingerprint
        assert adopted.pending_attempt is None
        assert adopted.last_error is None

    def test_none_found_registers_again(self):
        """None found by a complete search: the case is new again, with a note why."""
        again = self.lookup([], lookups=2)

        assert again.phase is Phase.NEW
        assert again.kravia_id is None
        assert (again.pending_attempt, again.pending_since) == (None, None)
        assert again.lookups == 0
        assert again.next_attempt_at is None
        assert "registering again" in again.last_error
        assert next_step(again, start=StartPolicy.AUTO, now=T0, timing=TIMING).step is Step.REGISTER

    def test_several_found_needs_review(self):
        """Several found: a person must look; the message lists every id."""
        review = self.lookup([903, 901, 902])

        assert review.phase is Phase.NEEDS_REVIEW
        assert review.kravia_id is None
        assert "3 cases" in review.last_error
        assert "901, 902, 903" in review.last_error

    @pytest.mark.parametrize("found", [[], [812], [1, 2]])
    def test_incomplete_retries(self, found):
        """An incomplete search decides nothing: look again later, one lookup more."""
        retry = self.lookup(found, complete=False, lookups=0)

        assert retry.phase is Phase.REGISTERING
        assert retry.kravia_id is None
        assert retry.lookups == 1
        assert retry.next_attempt_at == T0 + RETRY
        assert retry.pending_attempt == "att-1"
        decision = next_step(retry, start=StartPolicy.AUTO, now=T0 + RETRY / 2, timing=TIMING)
        assert decision.step is Step.WAIT

    def test_incomplete_too_often_needs_review(self):
        """After max_lookups incomplete searches, a person must look."""
        review = self.lookup([], complete=False, lookups=TIMING.max_lookups - 1)

        assert review.phase is Phase.NEEDS_REVIEW
        assert review.lookups == TIMING.max_lookups
        assert "accountingInvoiceId" in review.last_error


def settle(case: CaseState, step: Step, seen: Details, *, resend: bool = True) -> CaseState:
    return after_details(
        case,
        step,
        seen,
        now=T0 + RETRY,
        resend_unconfirmed_uploads=resend,
        max_unconfirmed=TIMING.max_lookups,
    )


class TestAfterDetails:
    @pytest.mark.parametrize(
        ("sending", "step", "has_document", "done", "expected"),
        [
            (Phase.UPLOADING, Step.VERIFY_UPLOAD, True, True, Phase.DOCUMENTED),
            (Phase.UPLOADING, Step.VERIFY_UPLOAD, True, False, Phase.REGISTERED),
            (Phase.STARTING, Step.VERIFY_START, True, True, Phase.STARTED),
            (Phase.STARTING, Step.VERIFY_START, True, False, Phase.DOCUMENTED),
            (Phase.STARTING, Step.VERIFY_START, False, True, Phase.STARTED),
            (Phase.STARTING, Step.VERIFY_START, False, False, Phase.REGISTERED),
        ],
    )
    def test_table(self, sending, step, has_document, done, expected):
        """Reading the case settles a lost answer: done moves on, not done goes back."""
        case = make_case(sending, has_document=has_document, lookups=0, next_attempt_at=T0)
        seen = (
            Details(documented=done, started=None)
            if step is Step.VERIFY_UPLOAD
            else Details(documented=None, started=done)
        )

        settled = settle(case, step, seen)

        assert settled.phase is expected
        assert settled.kravia_id == 501
        assert (settled.pending_attempt, settled.pending_since) == (None, None)
        assert settled.lookups == (0 if done else 1)
        assert settled.next_attempt_at is None
        assert settled.updated_at == T0 + RETRY

    def test_unconfirmed_start_is_sent_again(self):
        """Details that do not tell whether Start took effect send it again (harmless), and
        mark the case so Kravia's "already started" answer then counts as done."""
        case = make_case(Phase.STARTING, has_document=True)

        again = settle(case, Step.VERIFY_START, Details(documented=True, started=None))

        assert again.phase is Phase.DOCUMENTED
        assert again.lookups == 1
        assert "sending it again" in again.last_error
        assert next_step(again, start=StartPolicy.AUTO, now=T0 + RETRY, timing=TIMING).step is (
            Step.START
        )

    def test_unconfirmed_upload_is_sent_again(self):
        """Details without a list of documents send the copy again (a second copy harms
        nobody)."""
        case = make_case(Phase.UPLOADING, has_document=True)

        again = settle(case, Step.VERIFY_UPLOAD, Details(documented=None, started=None))

        assert again.phase is Phase.REGISTERED
        assert next_step(again, start=StartPolicy.AUTO, now=T0 + RETRY, timing=TIMING).step is (
            Step.UPLOAD
        )

    def test_unconfirmed_upload_parks_when_resending_is_off(self):
        """With resend_unconfirmed_uploads = false, an upload the details cannot confirm goes
        to a person."""
        case = make_case(Phase.UPLOADING, has_document=True)

        review = settle(
            case, Step.VERIFY_UPLOAD, Details(documented=None, started=None), resend=False
        )

        assert review.phase is Phase.NEEDS_REVIEW
        assert "resolve" in review.last_error

    def test_unconfirmed_rounds_are_bounded(self):
        """After max_lookups rounds of answers lost and details that cannot tell, a person
        looks: never an endless loop."""
        case = make_case(Phase.STARTING, lookups=TIMING.max_lookups)

        review = settle(case, Step.VERIFY_START, Details(documented=None, started=None))

        assert review.phase is Phase.NEEDS_REVIEW
        assert "resolve" in review.last_error

    @pytest.mark.parametrize(
        ("has_document", "seen", "expected", "lookups"),
        [
            (True, Details(documented=True, started=True), Phase.STARTED, 0),
            (False, Details(documented=None, started=True), Phase.STARTED, 0),
            (True, Details(documented=True, started=False), Phase.DOCUMENTED, 0),
            (True, Details(documented=False, started=False), Phase.REGISTERED, 0),
            (True, Details(documented=None, started=None), Phase.REGISTERED, 1),
            (False, Details(documented=None, started=None), Phase.REGISTERED, 1),
            (False, Details(documented=False, started=False), Phase.REGISTERED, 0),
        ],
    )
    def test_adopted(self, has_document, seen, expected, lookups):
        """An adopted case continues from where Kravia's details say it is; a Start they do
        not rule out is sent as a resend ("already started" then counts as done)."""
        case = make_case(Phase.ADOPTED, has_document=has_document)

        settled = settle(case, Step.VERIFY_ADOPTED, seen)

        assert settled.phase is expected
        assert settled.lookups == lookups
        assert settled.kravia_id == 501

    @pytest.mark.parametrize("step", [Step.LOOKUP, Step.UPLOAD, Step.START])
    def test_not_a_verify_step(self, step):
        """Only verify steps are settled by after_details."""
        with pytest.raises(ValueError, match="not a verify step"):
            settle(make_case(Phase.STARTING), step, Details(documented=True, started=True))


class TestAfterIdentity:
    def test_kravia_already_has_it_before_any_register(self):
        """A new case whose invoice Kravia already has is adopted with that id, never sent."""
        adopted = after_identity(make_case(Phase.NEW, kravia_id=None), Adopt(77), now=T0)

        assert adopted.phase is Phase.ADOPTED
        assert adopted.kravia_id == 77
        assert next_step(adopted, start=StartPolicy.AUTO, now=T0, timing=TIMING).step is (
            Step.VERIFY_ADOPTED
        )

    def test_absent_before_a_register_changes_nothing(self):
        """Nothing in Kravia: the new case stays as it is, to be registered."""
        case = make_case(Phase.NEW, kravia_id=None)

        assert after_identity(case, Absent(), now=T0) is case

    def test_unknown_parks_with_the_reason(self):
        """A case in Kravia that may be this invoice parks it with the reason and a way out."""
        case = make_case(Phase.NEW, kravia_id=None)

        review = after_identity(case, Unknown("it may be this invoice", (5,)), now=T0)

        assert review.phase is Phase.NEEDS_REVIEW
        assert review.last_error == "it may be this invoice"


# --- properties -------------------------------------------------------------------------------

FAILURES = st.sampled_from(["transient", "terminal", "ambiguous"])
OUTCOME = st.one_of(
    st.tuples(st.just("ok"), st.integers(1, 10**6)),
    st.tuples(st.just("fail"), FAILURES),
)
LOOKUP_RESULT = st.tuples(st.lists(st.integers(1, 10**6), max_size=3, unique=True), st.booleans())
KNOWN = st.sampled_from([True, False, None])
DETAILS = st.builds(Details, documented=KNOWN, started=KNOWN)


def drive(case: CaseState, data: st.DataObject, start: StartPolicy, steps: int) -> list[CaseState]:
    """Drive a case as the reconciler does, with outcomes drawn by hypothesis; the history."""
    now = T0
    history = [case]
    for number in range(steps):
        decision = next_step(case, start=start, now=now, timing=TIMING)
        assert not (decision.step is Step.REGISTER and case.kravia_id is not None), case
        if decision.step is Step.NONE:
            if data.draw(st.booleans(), label="source toggles document"):
                case = replace(case, has_document=not case.has_document)
            else:
                break
        elif decision.step is Step.WAIT:
            assert decision.not_before is not None
            assert decision.not_before > now
            now = decision.not_before
        elif decision.step is Step.LOOKUP:
            found, complete = data.draw(LOOKUP_RESULT, label="lookup")
            case = after_lookup(
                case,
                found,
                now=now,
                complete=complete,
                retry_in=RETRY,
                max_lookups=TIMING.max_lookups,
            )
        elif decision.step in {Step.VERIFY_UPLOAD, Step.VERIFY_START, Step.VERIFY_ADOPTED}:
            seen = data.draw(DETAILS, label="details")
            case = after_details(
                case,
                decision.step,
                seen,
                now=now,
                resend_unconfirmed_uploads=True,
                max_unconfirmed=TIMING.max_lookups,
            )
        else:
            case = begin(case, decision.step, attempt_id=f"att-{number}", now=now)
            history.append(case)
            kind, value = data.draw(OUTCOME, label=f"{decision.step.value} outcome")
            if kind == "ok":
                case = after_success(case, decision.step, now=now, kravia_id=int(value))
            else:
                case = after_failure(
                    case, decision.step, failure=str(value), message="x", now=now, retry_in=RETRY
                )
        history.append(case)
        now += timedelta(seconds=1)
    return history


class TestLifecycleProperties:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data(), start=st.sampled_from(list(StartPolicy)), has_document=st.booleans())
    def test_registered_case_never_new_again(self, data, start, has_document):
        """Once a case has a Kravia id it never returns to NEW, and is never registered again."""
        case = make_case(Phase.NEW, has_document=has_document, updated_at=T0)

        history = drive(case, data, start, steps=40)

        seen_id = None
        for state in history:
            if seen_id is not None:
                assert state.kravia_id == seen_id
                assert state.phase is not Phase.NEW
            if state.kravia_id is not None:
                seen_id = state.kravia_id

    @settings(max_examples=200, deadline=None)
    @given(data=st.data(), start=st.sampled_from(list(StartPolicy)))
    def test_sending_phase_always_has_pending_attempt(self, data, start):
        """Whenever a case is in a sending phase, it carries the attempt that is in flight."""
        history = drive(make_case(Phase.NEW, updated_at=T0), data, start, steps=40)

        for state in history:
            if state.phase in SENDING:
                assert state.pending_attempt is not None
                assert state.pending_since is not None
            else:
                assert state.pending_attempt is None or state.phase is Phase.NEEDS_REVIEW

    @settings(max_examples=200, deadline=None)
    @given(data=st.data())
    def test_manual_never_starts(self, data):
        """With start = manual, a case is never sent a Start (it is started only where
        Kravia's details say it is: someone started it there)."""
        history = drive(make_case(Phase.NEW, updated_at=T0), data, StartPolicy.MANUAL, steps=40)

        assert all(state.phase is not Phase.STARTING for state in history)


class TestClockGoneBack:
    def test_a_back_off_set_before_our_clock_went_back_is_over(self):
        """A back-off of 30 s set at 12:00 is not waited out for an hour when the clock is
        set back to 11:00: the retry is due (a retry after a transient failure harms nobody)."""
        case = make_case(
            Phase.NEW, updated_at=T0, next_attempt_at=T0 + RETRY, attempts=1, last_error="503"
        )

        assert (
            next_step(
                case, start=StartPolicy.AUTO, now=T0 + timedelta(seconds=5), timing=TIMING
            ).step
            is Step.WAIT
        )
        assert (
            next_step(case, start=StartPolicy.AUTO, now=T0 - timedelta(hours=1), timing=TIMING).step
            is Step.REGISTER
        )

    def test_a_lost_answer_is_settled_though_an_old_back_off_is_ahead_of_the_clock(self):
        case = make_case(
            Phase.REGISTERING,
            pending_attempt="a",
            pending_since=T0,
            updated_at=T0,
            next_attempt_at=T0 + timedelta(minutes=5),
        )

        decision = next_step(
            case, start=StartPolicy.AUTO, now=T0 - timedelta(hours=1), timing=TIMING
        )

        assert decision.step is Step.LOOKUP

    @pytest.mark.parametrize(
        ("set_at", "now", "expected"),
        [
            (T0, T0 + timedelta(seconds=1), True),
            (T0, T0 + RETRY, False),
            (T0, T0 - timedelta(seconds=1), False),
        ],
    )
    def test_backing_off(self, set_at, now, expected):
        assert backing_off(T0 + RETRY, set_at=set_at, now=now) is expected
        assert backing_off(None, set_at=set_at, now=now) is False


class TestAdoptedAtCapital:
    def test_kravia_holding_more_than_the_source_owes_sets_the_floor(self):
        case = make_case(Phase.STARTED, amount=Decimal("800.00"))

        adopted = adopted_at_capital(case, Decimal("1000.00"))

        assert adopted.amount_floor == Decimal("1000.00")
        assert adopted.record_hash == ""  # the next pass reads the record in full

    @pytest.mark.parametrize("capital", [None, Decimal("800.00"), Decimal("500.00")])
    def test_otherwise_nothing_changes(self, capital):
        case = make_case(Phase.STARTED, amount=Decimal("800.00"))

        assert adopted_at_capital(case, capital) == case


def test_a_lost_upload_whose_details_show_the_case_started_is_started():
    """Someone (or a Start this store forgot) started the case: no Start is sent."""
    case = make_case(Phase.UPLOADING, pending_attempt="a", pending_since=T0)

    after = after_details(
        case,
        Step.VERIFY_UPLOAD,
        Details(documented=True, started=True),
        now=T0,
        resend_unconfirmed_uploads=True,
        max_unconfirmed=3,
    )

    assert after.phase is Phase.STARTED
