"""The case lifecycle: what the next remote step for a case is, and what an outcome does to it.

Everything here is pure: a `CaseState` in, a decision or a new `CaseState` out, no I/O. The
reconciler performs the steps and journals them; these functions decide.

    new ─► registering ─► registered ─► uploading ─► documented ─► starting ─► started
              │ ambiguous                                            (manual start waits
              └──► lookup ──► adopt (registered) / new again / needs_review   before starting)

    new ─► adopted (Kravia already had it) ─► verify ─► registered / documented / started

Every write of a case row goes with the revision it was read at (compare-and-set), so a
writer that acted on a stale row cannot overwrite what another wrote since.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

from kravia_sync.identity import Absent, Adopt, Several, Verdict

__all__ = [
    "CaseState",
    "CaseSummary",
    "Decision",
    "Details",
    "Phase",
    "StartPolicy",
    "Step",
    "adopted_at_capital",
    "after_details",
    "after_failure",
    "after_identity",
    "after_lookup",
    "after_success",
    "backing_off",
    "begin",
    "next_step",
    "note_columns",
    "resolved",
]


class Phase(StrEnum):
    NEW = "new"  # known, not yet in Kravia
    REGISTERING = "registering"  # register sent, answer unknown
    REGISTERED = "registered"  # in Kravia, no copy uploaded yet
    ADOPTED = "adopted"  # Kravia already had it (state lost or restored): its progress unknown
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
    VERIFY_ADOPTED = "verify_adopted"  # read an adopted case's details: copy? started?
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
    {
        Phase.REGISTERED,
        Phase.ADOPTED,
        Phase.UPLOADING,
        Phase.DOCUMENTED,
        Phase.STARTING,
        Phase.STARTED,
    }
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
    # Grows with every write of the row; 0: never stored. A write names the revision it read.
    revision: int = 0
    # A call in flight, or whose answer was lost, is settled only on a search of Kravia that
    # began after this time, on Kravia's clock (where Kravia's answers give it; else ours).
    settle_after: datetime | None = None
    # Kravia cases a person declared are not this invoice (`resolve --as new`), comma-separated.
    not_kravia_ids: str | None = None
    # Once sent: the lowest amount seen since, which Kravia was told of (drops are counted
    # from it, so an amount that rises and drops back is not forwarded twice).
    amount_floor: Decimal | None = None

    @property
    def stored(self) -> bool:
        return self.revision > 0


class CaseSummary(NamedTuple):
    """What a diff needs of a stored case to pass over an unchanged record cheaply (and the
    invoice number it was stored with, where known: a record of another number is not its)."""

    record_hash: str
    phase: Phase
    source: str
    invoice_number: str | None = None


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
    boarding: timedelta = timedelta(0)  # the longest a journaled call waits to leave


def next_step(  # noqa: PLR0911 - one return per phase reads best
    case: CaseState, *, start: StartPolicy, now: datetime, timing: Timing
) -> Decision:
    """The next remote step for `case`, or why there is none."""
    if case.phase in RESTING_PHASES:
        return Decision(Step.NONE, reason=case.phase.value)
    if case.phase in SETTLING_STEP:
        since = case.pending_since or case.updated_at
        if since > now:  # our clock went back: the driver settles on Kravia's clock instead
            since = now - timing.settle
        retry_at = (
            case.next_attempt_at
            if backing_off(case.next_attempt_at, set_at=case.updated_at, now=now)
            else None
        )
        not_before = max(since + timing.settle, retry_at or since)
        step = SETTLING_STEP[case.phase]
        if now < not_before:
            return Decision(Step.WAIT, not_before, f"{step.value} after the answer was lost")
        return Decision(step)
    if backing_off(case.next_attempt_at, set_at=case.updated_at, now=now):
        return Decision(Step.WAIT, case.next_attempt_at, "backing off after a failed attempt")
    if case.phase is Phase.NEW:
        return Decision(Step.REGISTER)
    if case.phase is Phase.ADOPTED:
        return Decision(Step.VERIFY_ADOPTED, reason="Kravia already had it: read its details")
    if case.phase is Phase.REGISTERED and case.has_document:
        return Decision(Step.UPLOAD)
    if start is StartPolicy.MANUAL and case.approved_at is None:
        return Decision(Step.NONE, reason="awaiting approval (start = manual): kravia-sync start")
    return Decision(Step.START)


def backing_off(next_attempt_at: datetime | None, *, set_at: datetime, now: datetime) -> bool:
    """Whether a back-off set at `set_at` (our clock then) still runs: not once our clock has
    gone back past the moment it was set (it would run for as long again as the clock went
    back); a retry after a transient failure harms nobody."""
    return next_attempt_at is not None and set_at <= now < next_attempt_at


# A call in flight whose answer was lost, and the step that settles it.
SETTLING_STEP = {
    Phase.REGISTERING: Step.LOOKUP,
    Phase.UPLOADING: Step.VERIFY_UPLOAD,
    Phase.STARTING: Step.VERIFY_START,
}


def begin(
    case: CaseState,
    step: Step,
    *,
    attempt_id: str,
    now: datetime,
    settle_after: datetime | None = None,
) -> CaseState:
    """The state to commit, with the journal intent, before sending `step`; `settle_after`:
    if its answer is lost, when (on Kravia's clock) a search may settle it. An earlier
    back-off is over (the step is sent): left in place, it would hold up settling a lost
    answer for as long as a clock that went back makes it run."""
    return replace(
        case,
        phase=SENDING_PHASE[step],
        pending_attempt=attempt_id,
        pending_since=now,
        updated_at=now,
        settle_after=settle_after,
        next_attempt_at=None,
    )


def _settled(case: CaseState, phase: Phase, *, now: datetime, **changes: Any) -> CaseState:  # noqa: ANN401
    """`case` in `phase` with nothing in flight and no back-off."""
    return replace(
        case,
        phase=phase,
        pending_attempt=None,
        pending_since=None,
        settle_after=None,
        next_attempt_at=None,
        updated_at=now,
        **changes,
    )


def after_success(
    case: CaseState, step: Step, *, now: datetime, kravia_id: int | None = None
) -> CaseState:
    """The state after Kravia confirmed `step`."""
    if step is Step.REGISTER:
        if kravia_id is None:
            raise ValueError("a successful register has a Kravia id")
        reached: dict[str, Any] = {
            "phase": Phase.REGISTERED,
            "kravia_id": kravia_id,
            "registered_fingerprint": case.fingerprint,
            "registered_at": case.pending_since or now,
        }
    elif step in (Step.UPLOAD, Step.START):
        reached = {"phase": Phase.DOCUMENTED if step is Step.UPLOAD else Phase.STARTED}
    else:
        raise ValueError(f"{step} is not a sending step")
    return replace(
        case,
        pending_attempt=None,
        pending_since=None,
        settle_after=None,
        attempts=0,
        lookups=0,
        next_attempt_at=None,
        last_error=None,
        updated_at=now,
        **reached,
    )


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
    """The state after `step` failed as `failure`: transient, terminal, ambiguous; or auth,
    config (refused unapplied: the pass stops), not_sent (it never left): nothing held."""
    if failure == "ambiguous":
        # Keep the sending phase and the attempt: the next step is to look, not to resend.
        return replace(case, last_error=message, updated_at=now)
    cleared = replace(
        case, pending_attempt=None, pending_since=None, settle_after=None, updated_at=now
    )
    if failure in {"auth", "config", "not_sent"}:
        return replace(cleared, phase=_phase_before(step, case), last_error=message)
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


def after_lookup_failed(
    case: CaseState, *, now: datetime, retry_in: timedelta, max_lookups: int, why: str
) -> CaseState:
    """A lost register could not be settled this time (Kravia's search did not answer in
    full): look again later, and after `max_lookups` tries ask a person."""
    lookups = case.lookups + 1
    if lookups >= max_lookups:
        return replace(
            case,
            phase=Phase.NEEDS_REVIEW,
            lookups=lookups,
            updated_at=now,
            last_error=(
                f"the register's answer was lost and {lookups} searches of Kravia failed "
                f"({why}): check Kravia for this accountingInvoiceId, then resolve it"
            ),
        )
    return replace(
        case, lookups=lookups, next_attempt_at=now + retry_in, updated_at=now, last_error=why
    )


def after_identity(case: CaseState, verdict: Verdict, *, now: datetime) -> CaseState:
    """The state after judging whether Kravia already has the case's invoice, before a
    register (`case` is new) or to settle a register whose answer was lost (`case` is
    registering).

    Adopt: after a lost answer the case is the one we registered (registered); before any
    register it is one Kravia had already (adopted: its copy and start are checked next).
    Absent: register (again). Several or unknown: a person decides (`kravia-sync resolve`).
    """
    lost_answer = case.phase is Phase.REGISTERING
    if isinstance(verdict, Adopt):
        if lost_answer:
            return replace(
                after_success(case, Step.REGISTER, now=now, kravia_id=verdict.kravia_id),
                last_error=None,
            )
        return _settled(
            case,
            Phase.ADOPTED,
            now=now,
            kravia_id=verdict.kravia_id,
            registered_fingerprint=case.fingerprint,
            attempts=0,
            lookups=0,
            last_error=(
                f"Kravia already had case {verdict.kravia_id} for this accountingInvoiceId: "
                "adopted, not registered again"
            ),
        )
    if isinstance(verdict, Absent):
        if not lost_answer:
            return case
        return _settled(
            case,
            Phase.NEW,
            now=now,
            lookups=0,
            last_error=(
                "the register's answer was lost and Kravia has no such case: registering again"
            ),
        )
    if isinstance(verdict, Several):
        ids = ", ".join(str(kravia_id) for kravia_id in verdict.kravia_ids)
        reason = (
            f"Kravia holds {len(verdict.kravia_ids)} cases with this accountingInvoiceId: "
            f"{ids}; resolve with --as kravia:<id> naming the one that is this invoice"
        )
    else:
        reason = verdict.reason
    return replace(case, phase=Phase.NEEDS_REVIEW, updated_at=now, last_error=reason)


def after_lookup(
    case: CaseState,
    found: list[int],
    *,
    now: datetime,
    complete: bool,
    retry_in: timedelta,
    max_lookups: int,
) -> CaseState:
    """The state after searching Kravia for a register whose answer was lost: `found` are the
    cases with its accountingInvoiceId (see `after_identity` for the full judgement)."""
    if not complete:
        return after_lookup_failed(
            case,
            now=now,
            retry_in=retry_in,
            max_lookups=max_lookups,
            why="Kravia's search did not answer in full",
        )
    verdict: Verdict
    if len(found) == 1:
        verdict = Adopt(found[0])
    elif found:
        verdict = Several(tuple(sorted(found)))
    else:
        verdict = Absent()
    return after_identity(case, verdict, now=now)


@dataclass(frozen=True, slots=True)
class Details:
    """What a case's details tell, each None when they do not say."""

    documented: bool | None  # an invoice copy is attached
    started: bool | None  # collection was started (Start no longer offered, or a later status)


def after_details(
    case: CaseState,
    step: Step,
    details: Details,
    *,
    now: datetime,
    resend_unconfirmed_uploads: bool,
    max_unconfirmed: int,
) -> CaseState:
    """The state after reading a case's details to settle a lost upload or Start answer, or
    to learn how far an adopted case got.

    Harmless ambiguity is settled by sending again: a Start the details cannot confirm is sent
    again (Kravia's answer that Start is no longer available then counts as done); an upload
    they cannot confirm is sent again when `resend_unconfirmed_uploads` (a second copy of a PDF
    harms nobody). After `max_unconfirmed` rounds without an answer a person looks."""
    if step is Step.VERIFY_ADOPTED:
        return _after_adopted(
            case, details, now=now, resend_unconfirmed_uploads=resend_unconfirmed_uploads
        )
    if step is Step.VERIFY_UPLOAD:
        if details.documented:
            phase = Phase.STARTED if details.started else Phase.DOCUMENTED
            return _settled(case, phase, now=now, lookups=0, last_error=None)
        if details.documented is None and not resend_unconfirmed_uploads:
            return _review(
                case,
                now,
                "the upload's answer was lost and Kravia's case details do not list documents; "
                "check the copy in Kravia, then resolve (retry.resend_unconfirmed_uploads sends "
                "it again instead)",
            )
        return _send_again(
            case, Phase.REGISTERED, "upload", details.documented, now=now, limit=max_unconfirmed
        )
    if step is Step.VERIFY_START:
        if details.started:
            return _settled(case, Phase.STARTED, now=now, lookups=0, last_error=None)
        before = Phase.DOCUMENTED if case.has_document else Phase.REGISTERED
        return _send_again(case, before, "Start", details.started, now=now, limit=max_unconfirmed)
    raise ValueError(f"{step} is not a verify step")


def _send_again(
    case: CaseState, phase: Phase, what: str, known: bool | None, *, now: datetime, limit: int
) -> CaseState:
    lookups = case.lookups + 1
    seen = "did not take effect" if known is False else "cannot be confirmed from the details"
    if lookups > limit:
        return _review(
            case,
            now,
            f"{what} {seen} after {lookups} attempts whose answers were lost: check the case "
            "in Kravia, then resolve",
        )
    return _settled(
        case, phase, now=now, lookups=lookups, last_error=f"the {what} {seen}: sending it again"
    )


def _after_adopted(
    case: CaseState, details: Details, *, now: datetime, resend_unconfirmed_uploads: bool
) -> CaseState:
    if details.started:
        return _settled(case, Phase.STARTED, now=now, lookups=0, last_error=None)
    if details.documented or not case.has_document:
        phase = Phase.DOCUMENTED if details.documented else Phase.REGISTERED
    elif details.documented is None and not resend_unconfirmed_uploads:
        return _review(
            case,
            now,
            "adopted from Kravia, whose case details do not list documents: check the copy in "
            "Kravia, then resolve",
        )
    else:
        phase = Phase.REGISTERED  # the copy goes up (again, if it was there unseen)
    # Start not known to be done: it is sent, and an "already started" answer counts as done.
    return _settled(case, phase, now=now, lookups=0 if details.started is False else 1)


def adopted_at_capital(case: CaseState, capital: Decimal | None) -> CaseState:
    """An adopted case whose capital in Kravia is above the source's amount: what was paid
    in between was never forwarded from this state store (it was lost, or restored from an
    older copy). The capital becomes the case's amount floor, so the next pass forwards the
    gap as a drop (where the source's payments are its amount drops)."""
    if capital is None or case.amount is None or capital <= case.amount:
        return case
    floor = capital if case.amount_floor is None else max(case.amount_floor, capital)
    # No record hash: the next pass reads the record in full, and sees the gap.
    return replace(case, amount_floor=floor, record_hash="")


def _review(case: CaseState, now: datetime, reason: str) -> CaseState:
    return replace(case, phase=Phase.NEEDS_REVIEW, updated_at=now, last_error=reason)


# Where the engine parks a case for a person (`kravia-sync resolve` takes it out).
PARKED_PHASES = frozenset({Phase.REJECTED, Phase.NEEDS_REVIEW})


def resolved(
    case: CaseState,
    *,
    kravia_id: int | None,
    now: datetime,
    note: str,
    not_these: Collection[int] = (),
    gone_from_kravia: bool = False,
) -> CaseState:
    """A person's decision on a parked case. `kravia_id` None: Kravia has no case for this
    invoice, so it is sent from the start; `not_these` are the Kravia cases they checked and
    found are not it (never judged "maybe this invoice" again). Refused for a case known to
    be in Kravia (a second case), unless its Kravia id is `gone_from_kravia` (Kravia's search
    does not know it: a mistyped id, a deleted case). Otherwise the invoice is Kravia's case
    `kravia_id`: adopted, its copy and start are checked next."""
    if case.phase not in PARKED_PHASES:
        raise ValueError(
            f"{case.accounting_invoice_id} is {case.phase.value}: only rejected or "
            "needs_review cases are resolved by hand"
        )
    if kravia_id is None and case.kravia_id is not None and not gone_from_kravia:
        raise ValueError(
            f"{case.accounting_invoice_id} is Kravia's case {case.kravia_id}: sending it again "
            f"would make a second case; use --as kravia:{case.kravia_id} to continue it (or, "
            "having checked that Kravia no longer has that case, --force)"
        )
    excluded = {int(i) for i in (case.not_kravia_ids or "").split(",") if i.strip().isdigit()}
    excluded |= set(not_these)
    base = _settled(
        case,
        Phase.NEW,
        now=now,
        attempts=0,
        lookups=0,
        last_error=note,
        not_kravia_ids=",".join(str(i) for i in sorted(excluded)) or None,
    )
    if kravia_id is None:
        return replace(base, kravia_id=None, registered_fingerprint=None)
    return replace(
        base,
        phase=Phase.ADOPTED,
        kravia_id=kravia_id,
        registered_fingerprint=case.registered_fingerprint or case.fingerprint,
    )


def note_columns(case: CaseState) -> dict[str, object]:
    """The columns a note on a case owns (written alone: the rest of the row is not
    rewritten)."""
    return {
        "attention": case.attention,
        "hold_action_at": case.hold_action_at,
        "updated_at": case.updated_at,
    }
