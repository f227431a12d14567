"""What the case driver would do next for a case, without sending anything (`plan`), and
the questions it shares with the driver: is the invoice already in Kravia (as mirrored),
does the gate let a step go, can its copy be sent.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from kravia_sync.documents import read_copy
from kravia_sync.engine.diff import SETTLING_STEPS, WorkItem
from kravia_sync.engine.gate import Refusal, RefusalKind, judge
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.identity import Absent, Adopt, OwnIds, Unknown, Verdict
from kravia_sync.lifecycle import (
    CaseState,
    Decision,
    Phase,
    Step,
    Timing,
    after_identity,
    next_step,
)
from kravia_sync.model import Invoice
from kravia_sync.settings import PolicySettings, Settings

__all__ = [
    "Preview",
    "copy_problem",
    "judged",
    "known_verdict",
    "kravia_may_hold",
    "preview",
    "timing_of",
]


@dataclass(frozen=True, slots=True)
class Preview:
    """What the driver would do next for a case, and why."""

    step: str
    detail: str = ""


def known_verdict(settings: Settings, mirror: KraviaMirror, case: CaseState) -> Verdict:
    """Whether Kravia (as mirrored) already has the case's invoice, leaving out the cases a
    person declared are not it."""
    not_these = {int(i) for i in (case.not_kravia_ids or "").split(",") if i.strip().isdigit()}
    return _mirrored_verdict(
        settings,
        mirror,
        case.source,
        case.accounting_invoice_id,
        case.invoice_number,
        not_these=not_these,
    )


def kravia_may_hold(
    settings: Settings, mirror: KraviaMirror, source: str, invoice: Invoice, case: CaseState | None
) -> bool:
    """Whether Kravia (as mirrored) holds a case that is, or may be, this invoice's: an
    invoice the gate keeps out is then driven all the same, for its case to be adopted or
    the invoice parked (`CaseSettler.adopted_instead`)."""
    verdict = (
        known_verdict(settings, mirror, case)
        if case is not None
        else _mirrored_verdict(
            settings, mirror, source, invoice.accounting_invoice_id, invoice.invoice_number
        )
    )
    return not isinstance(verdict, Absent)


def _mirrored_verdict(
    settings: Settings,
    mirror: KraviaMirror,
    source_name: str,
    accounting_invoice_id: str,
    invoice_number: str,
    *,
    not_these: Collection[int] = (),
) -> Verdict:
    """The fallback id is what the source gives an invoice without an id of its own: its
    prefix and number. Where the source's invoice numbers name one invoice each, a case of
    Kravia's with this number under another id the source may have given it may be this
    invoice (`OwnIds`)."""
    source = next((s for s in settings.sources if s.name == source_name), None)
    own_ids = None
    if source is not None and source.unique_invoice_numbers:
        others = tuple(s.id_prefix for s in settings.sources if s.name != source_name)
        own_ids = OwnIds(source.id_prefix, others)
    return mirror.verdict(
        accounting_invoice_id,
        invoice_number,
        fallback_id=(source.id_prefix if source else "") + invoice_number,
        not_these=not_these,
        own_ids=own_ids,
    )


def timing_of(settings: Settings) -> Timing:
    retry = settings.retry
    settle = timedelta(seconds=retry.settle_seconds)
    return Timing(
        settle=settle,
        backoff_base=timedelta(seconds=retry.backoff_base_seconds),
        backoff_cap=timedelta(seconds=retry.backoff_cap_seconds),
        max_lookups=retry.max_lookups,
        boarding=min(settle, MAX_BOARDING),
    )


# The longest a call's intent waits for a place in flight (see `Timing.boarding`): places
# free up within a call's latency, and a lost answer's settling waits this much longer.
MAX_BOARDING = timedelta(seconds=10)


def preview(
    settings: Settings, item: WorkItem, now: datetime, *, mirror: KraviaMirror | None
) -> Preview:
    """What the driver would do next for `item`: one decision path for `plan` and passes."""
    case = item.case
    decision: Decision = next_step(
        case, start=settings.policy.start, now=now, timing=timing_of(settings)
    )
    step = decision.step
    if step is Step.WAIT and decision.not_before is not None:
        return Preview(
            "wait", f"{decision.reason}, not before {decision.not_before:%Y-%m-%d %H:%M:%S %Z}"
        )
    if step in {Step.NONE, Step.WAIT} or step in SETTLING_STEPS | {Step.VERIFY_ADOPTED}:
        return Preview(step.value, decision.reason)
    if not item.copy_checked and step in {Step.REGISTER, Step.UPLOAD}:
        item.copy_problem = copy_problem(item.invoice)
        item.copy_checked = True
    refusal = judged(step, case, item, policy=settings.policy, today=settings.policy.today(now))
    if refusal is not None:
        if step is Step.REGISTER and mirror is not None:
            adopted = _adoption_preview(known_verdict(settings, mirror, case), case, now)
            if adopted is not None:
                return adopted
        shown = "none" if refusal.kind is RefusalKind.APPROVAL else refusal.kind.value
        return Preview(shown, refusal.reason)
    if step is Step.REGISTER and mirror is not None:
        return _register_preview(known_verdict(settings, mirror, case), case, now)
    return Preview(step.value, decision.reason)


def _register_preview(verdict: Verdict, case: CaseState, now: datetime) -> Preview:
    """What a register comes to, given what the mirror says Kravia holds."""
    if isinstance(verdict, Unknown) and verdict.unreadable:
        ids = ", ".join(str(kravia_id) for kravia_id in verdict.kravia_ids)
        return Preview(
            "identify",
            f"Kravia's search lists case {ids} with this invoice number but no "
            "accountingInvoiceId: its details are read first, then it is adopted, "
            "registered, or left to a person",
        )
    if not isinstance(verdict, Absent):
        after = after_identity(case, verdict, now=now)
        return Preview(
            "adopt" if after.phase is Phase.ADOPTED else "needs_review",
            after.last_error or "",
        )
    return Preview("register", "Kravia has no case for it (as last searched)")


def judged(
    step: Step, case: CaseState, item: WorkItem, *, policy: PolicySettings, today: date
) -> Refusal | None:
    """The gate's answer for `step` now (holds are checked again in the intent's own
    transaction). A case the source read kept out is never registered, whatever else
    changed: it is driven only to adopt the case Kravia may hold."""
    refusal = judge(
        step,
        case,
        item.invoice,
        policy=policy,
        today=today,
        hold=None,  # checked in the intent's own transaction
        copy_problem=lambda: item.copy_problem,
    )
    if refusal is None and step is Step.REGISTER:
        return item.kept_out
    return refusal


def _adoption_preview(verdict: Verdict, case: CaseState, now: datetime) -> Preview | None:
    """What a register the gate refuses comes to when Kravia may hold the invoice all the
    same (see `CaseSettler.adopted_instead`); None: the refusal stands."""
    if isinstance(verdict, Adopt):
        return Preview(
            "adopt",
            f"not to be sent, but Kravia holds case {verdict.kravia_id} for it already: "
            "adopted (nothing is sent), so that what changed since reaches Kravia",
        )
    if isinstance(verdict, Absent):
        return None
    return _register_preview(verdict, case, now)


def copy_problem(invoice: Invoice | None) -> str | None:
    """Why the invoice's copy cannot be sent, or None (read within the source's limits)."""
    return read_copy(None if invoice is None else invoice.document).problem
