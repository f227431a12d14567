"""How much of an amount drop is still to be sent to Kravia, and which lines are netted.

An amount drop (a payment derived from an invoice's amount going down) may be Kravia's own
payout echoed back by the accounting system, or already accounted for by Kravia's capital:
`DropSizing` takes Kravia's payouts out and limits each line to what the source says is still
owed, parking the payment for a person where the money cannot be told apart. The rules are
the pure functions of `kravia_sync.payments`; this module reads Kravia's case details and
settlements for them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import structlog

from kravia_sync.kravia.answers import CaseStanding, Settlement
from kravia_sync.kravia.answers import PaymentKind as RecordedKind
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.lifecycle import CaseState
from kravia_sync.payments import (
    PaymentLine,
    PaymentPhase,
    PaymentState,
    explain_by_payouts,
    limit_to_owed,
)
from kravia_sync.state.store import StateStore

__all__ = ["DropSizing", "net_late_registers", "payouts_of"]

log = structlog.get_logger("kravia_sync.engine.forwarding")


class DropSizing:
    """The lines of amount drops still to be sent, for one forwarding run (Kravia's
    settlements are read once, when first needed)."""

    def __init__(
        self, store: StateStore, client: KraviaClient, *, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self._settlements: list[Settlement] | None = None

    async def drop_lines(
        self,
        payment: PaymentState,
        cases: Mapping[str, CaseState],
        standings: Mapping[str, CaseStanding],
        counts: Counter[str],
    ) -> tuple[tuple[PaymentLine, ...], list[CaseState], list[str]] | PaymentState:
        """What of an amount drop is still to be sent: Kravia's own payouts taken out, each
        line limited to what the source says is owed; the payment as written when it is not
        sent (parked or netted)."""
        unknown = _unknown_money(standings)
        if unknown is not None:
            # Money of a type we cannot read could be Kravia's own payout: never sent
            # back on a guess.
            review = replace(
                payment, phase=PaymentPhase.NEEDS_REVIEW, updated_at=self.clock(), note=unknown
            )
            self.store.write_payments([review], [])
            return review
        lines, case_updates, notes = await self.explain(payment, cases, standings)
        remaining = {aid: standing.remaining_capital for aid, standing in standings.items()}
        limited = self._limited_to_owed(payment, lines, cases, remaining, counts)
        if isinstance(limited, PaymentState):
            return limited
        lines, owed_notes = limited
        if owed_notes and not any(line.amount for line in lines):
            netted = replace(
                payment,
                phase=PaymentPhase.NETTED,
                updated_at=self.clock(),
                note="; ".join(notes + owed_notes),
            )
            self.store.write_payments([netted], [], case_notes=payouts_of(case_updates))
            return netted  # counted by `forward`, as every payment's final phase
        return lines, case_updates, notes + owed_notes

    def _limited_to_owed(
        self,
        payment: PaymentState,
        lines: tuple[PaymentLine, ...],
        cases: Mapping[str, CaseState],
        remaining: Mapping[str, Decimal | None],
        counts: Counter[str],
    ) -> tuple[tuple[PaymentLine, ...], list[str]] | PaymentState:
        """A drop's lines limited so no case's capital falls below what the source says is
        owed (`limit_to_owed`), with a note per line limited; the payment as written when a
        case's capital cannot be read (a person looks: a drop sent on a guess could be money
        paid twice)."""
        now = self.clock()
        unread = [
            line.accounting_invoice_id
            for line in lines
            if remaining.get(line.accounting_invoice_id) is None
        ]
        if unread:
            review = replace(
                payment,
                phase=PaymentPhase.NEEDS_REVIEW,
                updated_at=now,
                note=(
                    f"Kravia's case details do not say the capital left on {', '.join(unread)}, "
                    "so how much of the drop is still to be paid cannot be told: check the case "
                    f"in Kravia, then kravia-sync resolve --payment {payment.payment_id}"
                ),
            )
            self.store.write_payments([review], [])
            return review
        owed = {aid: cases[aid].amount for aid in payment.invoices}
        limited, notes = limit_to_owed(lines, remaining, owed)
        for note in notes:
            log.warning(
                "payment limited to what was paid", payment_id=payment.payment_id, detail=note
            )
            counts["payments_limited"] += 1
        return limited, notes

    async def explain(
        self,
        payment: PaymentState,
        cases: Mapping[str, CaseState],
        standings: Mapping[str, CaseStanding],
    ) -> tuple[tuple[PaymentLine, ...], list[CaseState], list[str]]:
        """The part of a derived payment (an amount drop) that Kravia's own payouts do not
        explain; the cases with the payouts now accounted for; notes. Kravia's payouts on a
        case are those its details list as collected; where the details list no payments,
        those of `GET settlements` (booked or not). Neither readable: the call fails and the
        payment waits, since a payout we cannot see could be echoed back."""
        lines: list[PaymentLine] = []
        updates: list[CaseState] = []
        notes: list[str] = []
        for line in payment.lines:
            case = cases[line.accounting_invoice_id]
            standing = standings[line.accounting_invoice_id]
            if standing.payments is not None:
                collected = sum(
                    (p.amount for p in standing.payments if p.kind is RecordedKind.COLLECTED),
                    Decimal(0),
                )
            else:
                collected = await self._settled(case.kravia_id)
            explained, accounted = explain_by_payouts(
                line.amount, collected=collected, accounted=case.payouts_accounted or Decimal(0)
            )
            if explained:
                notes.append(
                    f"{explained} of the drop on {line.accounting_invoice_id} is Kravia's own "
                    "payout: not sent back"
                )
                updates.append(replace(case, payouts_accounted=accounted))
            lines.append(replace(line, amount=line.amount - explained))
        return tuple(lines), updates, notes

    async def _settled(self, kravia_id: int | None) -> Decimal:
        """What Kravia's settlements say it paid out on one case."""
        if self._settlements is None:
            self._settlements = await self.client.settlements(exclude_closed=False)
        return sum(
            (
                line.amount
                for settlement in self._settlements
                for line in settlement.lines
                if line.kravia_id == kravia_id
            ),
            Decimal(0),
        )


def net_late_registers(
    payment: PaymentState, cases: Mapping[str, CaseState], *, now: datetime
) -> PaymentState:
    """A case whose register's answer was lost when the payment was first seen may have
    been registered again since, with the source's amount of then, which already left
    the payment out: such lines are netted, not sent."""
    late = [
        line
        for line in payment.lines
        if (registered := cases[line.accounting_invoice_id].registered_at) is not None
        and payment.first_seen_at <= registered
    ]
    if not late:
        return payment
    netted = ", ".join(f"{line.amount} on {line.accounting_invoice_id}" for line in late)
    note = (
        f"netted {netted}: the register that created the case was sent after this was "
        "first seen, with an amount that already left it out"
    )
    kept = tuple(line for line in payment.lines if line not in late)
    if not kept:
        return replace(payment, phase=PaymentPhase.NETTED, note=note, updated_at=now)
    joined = f"{payment.note}; {note}" if payment.note else note
    return replace(payment, lines=kept, note=joined, updated_at=now)


def _unknown_money(standings: Mapping[str, CaseStanding]) -> str | None:
    """Why money Kravia lists on a case cannot be told apart from its own payouts, or None."""
    for aid, standing in standings.items():
        unknown = [p for p in standing.payments or () if p.kind is RecordedKind.UNKNOWN]
        if unknown:
            return (
                f"Kravia lists {unknown[0].amount} of a type we do not know on {aid}'s case: it "
                "may be Kravia's own payout, which must not be sent back. Check the case in "
                "Kravia, then resolve this payment (--as new to send it, --as sent to drop it)"
            )
    return None


def payouts_of(cases: list[CaseState]) -> list[tuple[str, dict[str, Decimal | None]]]:
    """Only the payouts accounted for: the rest of each case row is not ours to write."""
    return [
        (case.accounting_invoice_id, {"payouts_accounted": case.payouts_accounted})
        for case in cases
    ]
