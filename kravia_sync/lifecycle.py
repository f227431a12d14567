"""The case lifecycle: what the next remote step for a case is, and what an outcome does to it.

Everything here is pure: a `CaseState` in, a decision or a new `CaseState` out, no I/O. The
reconciler performs the steps and journals them; these functions decide.

    new ─► registering ─► registered ─► uploading ─► documented ─► starting ─► started
              │ ambiguous                                            (manual start waits
              └──► lookup ──► adopt (registered) / new again / needs_review   before starting)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

__all__ = [
    "CaseState",
    "CaseSummary",
    "Decision",
    "Phase",
    "StartPolicy",
    "Step",
    "after_failure",
    "after_lookup",
    "after_success",
    "after_verify",
    "begin",
    "next_step",
]


class Phase(StrEnum):
    NEW = "new"  # known, not yet in Kravia
    REGISTERING = "registering"  # register sent, answer unknown
    REGISTERED = "registered"  # in Kravia, no copy uploaded yet
    UPLOADING = "uploading"  # document sent, answer unknown
    DOCUMENTED = "documented"  # in Kravia with its copy
    STARTING = "starting"  # Start sent, answer unknown
    STARTED = "started"  # collection running
    REJECTED = "rejected"  # Kravia refused the register (4xx): waits for the source to change
    NEEDS_REVIEW = "needs_review"  # a person must look: the engine will not guess


class StartPolicy(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class Step(StrEnum):
    REGISTER = "register"
    LOOKUP = "lookup"  # search Kravia for a register whose answer was lost
    UPLOAD = "upload"
    VERIFY_UPLOAD = "verify_upload"  # read the case's details after a lost upload answer
    START = "start"
    VERIFY_START = "verify_start"
    WAIT = "wait"  # something to do, but not before `not_before`
    NONE = "none"  # nothing to do now


# Steps that change something in Kravia, and the phase a case is in while one is in flight.
SENDING_PHASE = {
    Step.REGISTER: Phase.REGISTERING,
    Step.UPLOAD: Phase.UPLOADING,
    Step.START: Phase.STARTING,
}
RESTING_PHASES = frozenset({Phase.STARTED, Phase.REJECTED, Phase.NEEDS_REVIEW})
IN_KRAVIA_PHASES = frozenset(
    {Phase.REGISTERED, Phase.UPLOADING, Phase.DOCUMENTED, Phase.STARTING, Phase.STARTED}
)


@dataclass(frozen=True, slots=True)
class CaseState:
    """One source invoice as the state store knows it."""

    accounting_invoice_id: str
    source: str
    record_key: str
    invoice_number: str
    phase: Phase
    fingerprint: str
    record_hash: str
    has_document: bool
    first_seen_at: datetime
    updated_at: datetime
    kravia_id: int | None = None
    registered_fingerprint: str | None = None
    pending_attempt: str | None = None
    pending_since: datetime | None = None
    attempts: int = 0
    lookups: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    changed_at: datetime | None = None
    amount: Decimal | None = None  # the source's outstanding amount when last validated
    payouts_accounted: Decimal | None = None  # Kravia payouts already matched to amount drops
    attention: str | None = None  # a change in the source a person must act on in Kravia
    approved_at: datetime | None = None  # start = manual: when an operator approved the start
    kravia_status: str | None = None  # as Kravia last reported it
    kravia_remaining: Decimal | None = None  # capital left, as Kravia last reported it
    status_at: datetime | None = None
    hold_action_at: datetime | None = None  # when policy.hold_action was sent for a hold
    # When the register that created the Kravia case was sent: its amount was the source's
    # then, so a payment first seen before it is already left out of it.
    registered_at: datetime | None = None


class CaseSummary(NamedTuple):
    """What a diff needs of a stored case to pass over an unchanged record cheaply."""

    record_hash: str
    phase: Phase
    source: str


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    not_before: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Timing:
    """How long to wait: before trusting a lookup, and between attempts."""

    settle: timedelta  # after a lost answer, before looking (the call may still be in flight)
    backoff_base: timedelta
    backoff_cap: timedelta
    max_lookups: int = 8


def next_step(  # noqa: PLR0911 - one return per phase reads best
    case: CaseState, *, start: StartPolicy, now: datetime, timing: Timing
) -> Decision:
    """The next remote step for `case`, or why there is none."""
    if case.phase in RESTING_PHASES:
        return Decision(Step.NONE, reason=case.phase.value)
    if case.phase in {Phase.REGISTERING, Phase.UPLOADING, Phase.STARTING}:
        since = case.pending_since or case.updated_at
        not_before = max(since + timing.settle, case.next_attempt_at or since)
        step = {
            Phase.REGISTERING: Step.LOOKUP,
            Phase.UPLOADING: Step.VERIFY_UPLOAD,
            Phase.STARTING: Step.VERIFY_START,
        }[case.phase]
        if now < not_before:
            return Decision(Step.WAIT, not_before, f"{step.value} after the answer was lost")
        return Decision(step)
    if case.next_attempt_at is not None and now < case.next_attempt_at:
        return Decision(Step.WAIT, case.next_attempt_at, "backing off after a failed attempt")
    if case.phase is Phase.NEW:
        return Decision(Step.REGISTER)
    if case.phase is Phase.REGISTERED and case.has_document:
        return Decision(Step.UPLOAD)
    if start is StartPolicy.MANUAL and case.approved_at is None:
        return Decision(Step.NONE, reason="awaiting approval (start = manual): kravia-sync start")
    return Decision(Step.START)


def begin(case: CaseState, step: Step, *, attempt_id: str, now: datetime) -> CaseState:
    """The state to commit, with the journal intent, before sending `step`."""
    return replace(
        case,
        phase=SENDING_PHASE[step],
        pending_attempt=attempt_id,
        pending_since=now,
        updated_at=now,
    )


def after_success(
    case: CaseState, step: Step, *, now: datetime, kravia_id: int | None = None
) -> CaseState:
    """The state after Kravia confirmed `step`."""
    settled = replace(
        case,
        pending_attempt=None,
        pending_since=None,
        attempts=0,
        lookups=0,
        next_attempt_at=None,
        last_error=None,
        updated_at=now,
    )
    if step is Step.REGISTER:
        if kravia_id is None:
            raise ValueError("a successful register has a Kravia id")
        return replace(
            settled,
            phase=Phase.REGISTERED,
            kravia_id=kravia_id,
            registered_fingerprint=case.fingerprint,
            registered_at=case.pending_since or now,
        )
    if step is Step.UPLOAD:
        return replace(settled, phase=Phase.DOCUMENTED)
    if step is Step.START:
        return replace(settled, phase=Phase.STARTED)
    raise ValueError(f"{step} is not a sending step")


def _phase_before(step: Step, case: CaseState) -> Phase:
    if step is Step.REGISTER:
        return Phase.NEW
    if step is Step.UPLOAD:
        return Phase.REGISTERED
    return Phase.DOCUMENTED if case.has_document else Phase.REGISTERED


def after_failure(
    case: CaseState,
    step: Step,
    *,
    failure: str,
    message: str,
    now: datetime,
    retry_in: timedelta,
) -> CaseState:
    """The state after `step` failed as `failure` (transient, terminal or ambiguous)."""
    if failure == "ambiguous":
        # Keep the sending phase and the attempt: the next step is to look, not to resend.
        return replace(case, last_error=message, updated_at=now)
    cleared = replace(case, pending_attempt=None, pending_since=None, updated_at=now)
    if failure == "terminal":
        if step is Step.REGISTER:
            return replace(cleared, phase=Phase.REJECTED, last_error=message)
        return replace(
            cleared,
            phase=Phase.NEEDS_REVIEW,
            last_error=f"Kravia refused {step.value}: {message}",
        )
    return replace(
        cleared,
        phase=_phase_before(step, case),
        attempts=case.attempts + 1,
        next_attempt_at=now + retry_in,
        last_error=message,
    )


def after_lookup(
    case: CaseState,
    found: list[int],
    *,
    now: datetime,
    complete: bool,
    retry_in: timedelta,
    max_lookups: int,
) -> CaseState:
    """The state after searching Kravia for a register whose answer was lost.

    One case found: adopt it. None found by a complete search: it does not exist, register
    again. More than one, or no complete answer too many times: a person must look.
    """
    if complete and len(found) == 1:
        return replace(
            after_success(case, Step.REGISTER, now=now, kravia_id=found[0]),
            last_error=None,
        )
    if complete and not found:
        return replace(
            case,
            phase=Phase.NEW,
            pending_attempt=None,
            pending_since=None,
            lookups=0,
            next_attempt_at=None,
            updated_at=now,
            last_error=(
                "the register's answer was lost and Kravia has no such case: registering again"
            ),
        )
    if complete:
        ids = ", ".join(str(kravia_id) for kravia_id in sorted(found))
        return replace(
            case,
            phase=Phase.NEEDS_REVIEW,
            updated_at=now,
            last_error=f"Kravia holds {len(found)} cases with this accountingInvoiceId: {ids}",
        )
    lookups = case.lookups + 1
    if lookups >= max_lookups:
        return replace(
            case,
            phase=Phase.NEEDS_REVIEW,
            lookups=lookups,
            updated_at=now,
            last_error=(
                f"the register's answer was lost and {lookups} searches of Kravia failed: "
                "check Kravia for this accountingInvoiceId before releasing it"
            ),
        )
    return replace(case, lookups=lookups, next_attempt_at=now + retry_in, updated_at=now)


def after_verify(case: CaseState, step: Step, *, done: bool, now: datetime) -> CaseState:
    """The state after reading the case's details to settle a lost upload or start answer."""
    if step is Step.VERIFY_UPLOAD:
        target = Phase.DOCUMENTED if done else Phase.REGISTERED
    elif step is Step.VERIFY_START:
        if done:
            target = Phase.STARTED
        else:
            target = Phase.DOCUMENTED if case.has_document else Phase.REGISTERED
    else:
        raise ValueError(f"{step} is not a verify step")
    return replace(
        case,
        phase=target,
        pending_attempt=None,
        pending_since=None,
        lookups=0,
        next_attempt_at=None,
        updated_at=now,
    )
