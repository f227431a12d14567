"""Cases Kravia has whose invoice left the source: what explains it, and the note a person
reads while nothing does. Pure: no I/O (`kravia_sync.engine.status` reads and writes).

An invoice leaving the source usually means it was paid or credited. That is explained, and
needs no one, when (first match):

1. Kravia reports the case closed (its status, as last pulled back);
2. Kravia reports no capital left on it (`kravia_remaining` <= 0, as last pulled back);
3. a payment or credit note forwarded for it left Kravia nothing: one of its lines was sent
   (or not sent, Kravia having nothing left) for all the capital Kravia reported left just
   before (`left_before`); capital only ever goes down, so nothing is left since;
4. where Kravia's capital was not read: the payments and credit notes forwarded for it sum
   to at least the amount it was registered with. That amount is known only while the
   source's amount never changed after it was sent (no `amount_floor`); after a change, only
   Kravia's own figures (1 to 3) explain it, never a guess.

Otherwise the case gets `gone_note`, until one of these holds: the note then clears itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from kravia_sync.kravia.answers import reports_closed
from kravia_sync.lifecycle import CaseState
from kravia_sync.payments import PaymentPhase, PaymentState

__all__ = [
    "FORWARDED_PHASES",
    "GONE_NOTE_START",
    "forwarding_covers",
    "gone_explained",
    "gone_note",
    "is_gone_note",
    "kravia_reports_settled",
]

# The phases of a payment whose money reached Kravia, or found nothing left to reduce.
FORWARDED_PHASES = frozenset({PaymentPhase.SENT, PaymentPhase.NOTHING_LEFT})

GONE_NOTE_START = "no longer in the source, and no payment or credit note forwarded explains it"


def gone_note(case: CaseState) -> str:
    """The note on a case Kravia still collects although its invoice left the source."""
    left = "" if case.kravia_remaining is None else f" ({case.kravia_remaining} left)"
    return (
        f"{GONE_NOTE_START}: Kravia still collects{left}. Was it paid? Forward the payment, "
        "or stop the case in Kravia"
    )


def is_gone_note(note: str | None) -> bool:
    """Whether `note` is a `gone_note` (whatever capital it names)."""
    return note is not None and note.startswith(GONE_NOTE_START)


def gone_explained(case: CaseState, forwarded: Iterable[PaymentState]) -> str | None:
    """Why `case`, gone from the source, needs no one (see the module's rules), or None.
    `forwarded`: payments and credit notes with a line on the case (only those in
    `FORWARDED_PHASES` count)."""
    return kravia_reports_settled(case) or forwarding_covers(case, forwarded)


def kravia_reports_settled(case: CaseState) -> str | None:
    """Rules 1 and 2: Kravia, as last pulled back, reports the case closed or nothing left
    on it; why, or None."""
    if reports_closed(case.kravia_status):
        return f"Kravia reports the case {case.kravia_status}"
    if case.kravia_remaining is not None and case.kravia_remaining <= 0:
        return "Kravia reports nothing left to collect"
    return None


def forwarding_covers(case: CaseState, forwarded: Iterable[PaymentState]) -> str | None:
    """Rules 3 and 4: the payments and credit notes forwarded for the case cover what
    Kravia had to collect; why, or None."""
    lines = [
        (payment, line.sent, line.left_before)
        for payment in forwarded
        if payment.phase in FORWARDED_PHASES
        for line in payment.lines
        if line.accounting_invoice_id == case.accounting_invoice_id and line.sent is not None
    ]
    for payment, sent, left_before in lines:
        if left_before is not None and sent >= left_before:
            what = payment.kind.value.replace("_", " ")
            return (
                f"{what} {payment.payment_id} left Kravia nothing to collect "
                f"({sent} of the {left_before} left)"
            )
    registered = case.amount if case.amount_floor is None else None
    total = sum((sent for _, sent, _ in lines), Decimal(0))
    if registered is not None and lines and total >= registered:
        return (
            f"payments and credit notes forwarded ({total}) cover the {registered} it was sent with"
        )
    return None
