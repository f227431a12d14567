"""What `plan` lists: each case's next step (`case_preview`), the held cases Kravia has and
what their holds come to (`holds`), the invoices the gate keeps out (held, not yet eligible),
and the payments and credit notes a pass would forward. Nothing here writes or calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

from kravia_sync.engine.case_preview import Preview, preview, timing_of
from kravia_sync.engine.diff import WorkItem, WorkList
from kravia_sync.engine.holds import hold_effect_text
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.engine.payment_stage import payments_due
from kravia_sync.engine.summary import PlannedAction, RunSummary
from kravia_sync.payments import PaymentKind, PaymentState, PaymentStep
from kravia_sync.settings import Settings
from kravia_sync.state.records import QuarantineEntry, QuarantineKind
from kravia_sync.state.store import StateStore

__all__ = ["KeptOutList", "list_plan", "payment_planned"]

# The kinds of kept-out records `plan` lists, and the step it lists them as (invalid records
# are the run's problems, listed as those).
_KEPT_OUT_STEPS = {QuarantineKind.HELD: "held", QuarantineKind.WAITING: "waiting"}


class KeptOutList:
    """The records a dry run's source reads kept out as held or not yet eligible."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, QuarantineEntry]] = []

    def add(self, source: str, entries: Iterable[QuarantineEntry]) -> None:
        self._entries.extend((source, entry) for entry in entries if entry.kind in _KEPT_OUT_STEPS)

    def planned(self, listed: set[str]) -> list[PlannedAction]:
        """Each as `plan` lists it, but for those whose accountingInvoiceId is `listed`
        already (a case driven all the same, a held case Kravia has)."""
        return [
            _kept_out_planned(source, entry)
            for source, entry in self._entries
            if entry.accounting_invoice_id is None or entry.accounting_invoice_id not in listed
        ]


def _kept_out_planned(source: str, entry: QuarantineEntry) -> PlannedAction:
    step = _KEPT_OUT_STEPS[entry.kind]
    # Kept out and listed by no other stage: the store knows no case of it in Kravia.
    detail = f"{entry.reason}; {hold_effect_text(None, None)}" if step == "held" else entry.reason
    return PlannedAction(
        source=source,
        accounting_invoice_id=entry.accounting_invoice_id or "",
        invoice_number=entry.invoice_number or entry.record_key,
        change="kept_out",
        step=step,
        detail=detail,
    )


def payment_planned(payment: PaymentState, step: PaymentStep) -> PlannedAction:
    """A payment or credit note a pass would send (or, after a lost answer, verify)."""
    kind = "credit note" if payment.kind is PaymentKind.CREDIT_NOTE else "payment"
    return PlannedAction(
        source=payment.source,
        accounting_invoice_id=", ".join(payment.invoices),
        invoice_number="",
        change=payment.kind.value,
        step=f"{step.value}_payment",
        detail=f"{kind} {payment.payment_id} of {payment.amount}, dated {payment.paid_on}",
    )


async def list_plan(
    settings: Settings,
    store: StateStore,
    work: WorkList,
    summary: RunSummary,
    *,
    mirror: KraviaMirror | None,
    held: list[PlannedAction],
    kept_out: KeptOutList,
    payment_work: list[PaymentState],
    now: datetime,
) -> None:
    """Into `summary.planned`: each case's next step, the held cases Kravia has, the
    invoices kept out, and the payments due (counted as `payments_to_forward` too)."""
    listed: set[str] = set()
    for item in work:
        shown = await asyncio.to_thread(preview, settings, item, now, mirror=mirror)
        summary.planned.append(_planned(item, shown))
        listed.add(item.case.accounting_invoice_id)
    summary.planned.extend(held)
    listed.update(action.accounting_invoice_id for action in held)
    summary.planned.extend(kept_out.planned(listed))
    due = payments_due(store, payment_work, now=now, settle=timing_of(settings).settle)
    summary.counts["payments_to_forward"] += len(due)
    summary.planned.extend(payment_planned(payment, step) for payment, step in due)


def _planned(item: WorkItem, shown: Preview) -> PlannedAction:
    return PlannedAction(
        source=item.case.source,
        accounting_invoice_id=item.case.accounting_invoice_id,
        invoice_number=item.case.invoice_number,
        change=item.change.value,
        step=shown.step,
        detail=shown.detail,
    )
