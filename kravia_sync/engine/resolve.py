"""A person settles what the engine parked: `kravia-sync resolve`.

The engine parks a case (needs_review, rejected) or a payment (needs_review) only where
going on could make a second case or a second payment. A person looks in Kravia and says
what is true; the decision is written over exactly the state they were shown (compare-and-
set) and journaled with their reason. Nothing is sent from here: the next pass carries it out.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from kravia_sync.errors import KraviaSyncError
from kravia_sync.lifecycle import CaseState, resolved
from kravia_sync.payments import PaymentPhase, PaymentState
from kravia_sync.state.records import JournalEntry, JournalKind
from kravia_sync.state.store import StateStore

__all__ = ["ResolveError", "resolve_case", "resolve_payment"]


class ResolveError(KraviaSyncError):
    """The resolution cannot be made; the message says why and what to do."""


def _case_decision(decision: str) -> int | None:
    """None for 'new'; the Kravia id for 'kravia:ID'."""
    text = decision.strip().lower()
    if text == "new":
        return None
    prefix, _, number = text.partition(":")
    if prefix == "kravia" and number.isdigit() and int(number) > 0:
        return int(number)
    raise ResolveError(f"--as {decision!r}: a case is resolved --as new or --as kravia:<id>")


def _parked(store: StateStore, invoice: str) -> CaseState:
    found = store.cases_named(invoice)
    exact = [case for case in found if case.accounting_invoice_id == invoice]
    found = exact or found
    if not found:
        raise ResolveError(f"no case matches {invoice!r}")
    if len(found) > 1:
        ids = ", ".join(case.accounting_invoice_id for case in found)
        raise ResolveError(
            f"{invoice!r} matches several cases ({ids}): name its accountingInvoiceId"
        )
    return found[0]


def resolve_case(
    store: StateStore, invoice: str, decision: str, reason: str, by: str, *, force: bool = False
) -> str:
    """Settle one parked case; a line saying what the next pass will do. `force`: send a case
    known to be in Kravia again (the person checked that Kravia no longer has it)."""
    kravia_id = _case_decision(decision)
    case = _parked(store, invoice)
    now = datetime.now(UTC)
    note = f"resolved by {by} as {decision.strip()}: {reason}"
    if kravia_id is not None:
        _check_claimed_case(store, case, kravia_id)
    # --as new: every case Kravia holds that could have been this invoice was looked at and
    # is not it; it is never judged "maybe this invoice" again.
    known = store.known_in_kravia(case.accounting_invoice_id, case.invoice_number)
    gone = case.kravia_id is not None and (force or store.mirrored_case(case.kravia_id) is None)
    try:
        after = resolved(
            case,
            kravia_id=kravia_id,
            now=now,
            note=note,
            not_these=[] if kravia_id is not None else [k.kravia_id for k in known],
            gone_from_kravia=gone,
        )
    except ValueError as exc:
        raise ResolveError(str(exc)) from None
    entry = JournalEntry(
        attempt_id=uuid.uuid4().hex,
        kind=JournalKind.OPERATOR,
        operation="resolve",
        accounting_invoice_id=case.accounting_invoice_id,
        at=now,
        kravia_id=after.kravia_id,
        message=f"{case.phase.value} ({case.last_error or '-'}) → {note}"[:1000],
    )
    if store.resolve_case(case, after, entry) is None:
        raise ResolveError(
            f"{case.accounting_invoice_id} changed while you decided (a pass is running?): "
            "look at it again with kravia-sync cases"
        )
    if kravia_id is None:
        return f"{case.accounting_invoice_id}: will be registered by the next pass"
    return (
        f"{case.accounting_invoice_id}: is Kravia's case {kravia_id}; the next pass checks its "
        "copy and start"
    )


def _check_claimed_case(store: StateStore, case: CaseState, kravia_id: int) -> None:
    """`--as kravia:ID` must name a case that can be this invoice: one Kravia's search knows
    under another accountingInvoiceId is refused (a typo would adopt another debtor's case),
    unless it has this invoice's number (registered before the invoice's id appeared or
    changed: the case the engine parked this one for)."""
    known = store.mirrored_case(kravia_id)
    if known is None or known.accounting_invoice_id in {None, case.accounting_invoice_id}:
        return
    if known.invoice_number is not None and known.invoice_number == case.invoice_number:
        return
    raise ResolveError(
        f"Kravia's case {kravia_id} is accountingInvoiceId {known.accounting_invoice_id!r} "
        f"(invoice {known.invoice_number}), not {case.accounting_invoice_id!r}: check the id"
    )


def resolve_payment(store: StateStore, payment_id: str, decision: str, reason: str, by: str) -> str:
    """Settle one payment or credit note that needs review; a line saying what happens."""
    text = decision.strip().lower()
    if text not in {"sent", "new"}:
        raise ResolveError(f"--as {decision!r}: a payment is resolved --as sent or --as new")
    found = [p for p in store.all_payments(limit=1_000_000) if p.payment_id == payment_id]
    if not found:
        raise ResolveError(f"no payment or credit note {payment_id!r}")
    if len(found) > 1:
        raise ResolveError(f"{payment_id!r} is known from several sources: resolve it in one")
    payment: PaymentState = found[0]
    if payment.phase is not PaymentPhase.NEEDS_REVIEW:
        raise ResolveError(f"{payment_id} is {payment.phase.value}, not needs_review")
    now = datetime.now(UTC)
    note = f"resolved by {by} as {text}: {reason}"
    after = replace(
        payment,
        phase=PaymentPhase.SENT if text == "sent" else PaymentPhase.NEW,
        pending_attempt=None,
        pending_since=None,
        next_attempt_at=None,
        attempts=0,
        updated_at=now,
        note=note,
    )
    entry = JournalEntry(
        attempt_id=uuid.uuid4().hex,
        kind=JournalKind.OPERATOR,
        operation="resolve",
        accounting_invoice_id=payment.lines[0].accounting_invoice_id,
        at=now,
        message=f"{payment.note or '-'} → {note}"[:1000],
        payment_id=payment.payment_id,
    )
    if not store.resolve_payment(payment, after, entry):
        raise ResolveError(f"{payment_id} changed while you decided: look at it again")
    if text == "sent":
        return f"{payment_id}: recorded as in Kravia; nothing more is sent for it"
    return f"{payment_id}: will be sent by the next pass"
