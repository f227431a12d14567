"""The journal lines of payment calls, and the Kravia id each payment line goes to."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime

from kravia_sync.lifecycle import CaseState
from kravia_sync.logging import redact
from kravia_sync.payments import PaymentLine, PaymentState
from kravia_sync.state.records import JournalEntry, JournalKind

__all__ = ["kravia_id_of", "payment_journal"]


def payment_journal(
    payment: PaymentState,
    operation: str,
    attempt_id: str,
    kind: JournalKind,
    *,
    outcome: str | None = None,
    status: int | None = None,
    message: str | None = None,
    started: float | None = None,
    at: datetime,
    run_id: int | None,
) -> JournalEntry:
    """A journal line of a payment's call (its intent, or its outcome)."""
    return JournalEntry(
        attempt_id=attempt_id,
        kind=kind,
        operation=operation,
        accounting_invoice_id=payment.lines[0].accounting_invoice_id,
        at=at,
        run_id=run_id,
        outcome=outcome,
        http_status=status,
        duration_ms=None if started is None else round((time.monotonic() - started) * 1000),
        message=None if message is None else redact(message)[:1000],
        payment_id=payment.payment_id,
    )


def kravia_id_of(cases: Mapping[str, CaseState], line: PaymentLine) -> int:
    kravia_id = cases[line.accounting_invoice_id].kravia_id
    if kravia_id is None:
        raise ValueError(f"{line.accounting_invoice_id} is not in Kravia")
    return kravia_id
