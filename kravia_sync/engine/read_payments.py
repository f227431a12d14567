"""The payments and credit notes of one source read: the ones the source reports as records,
or, where its amounts tell of money paid, the drops in an invoice's amount (see
`SourceConfig.payments`). Kept in read order with the key of the record each came from, for
`kravia_sync.payments.plan_payments`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import date
from decimal import Decimal

from kravia_sync.connector import PaymentRecord
from kravia_sync.engine.rejections import Rejections
from kravia_sync.errors import InvalidRecordError
from kravia_sync.lifecycle import CaseState
from kravia_sync.model import Invoice
from kravia_sync.payments import Payment, derived_payment, is_credit_note_record
from kravia_sync.settings import PaymentsMode
from kravia_sync.state.records import QuarantineEntry, QuarantineKind

__all__ = ["ReadPayments"]


class ReadPayments:
    """Collects one read's payments; `mode` is how the source tells of money paid."""

    def __init__(
        self, mode: PaymentsMode, *, id_prefix: str, counts: Counter[str], rejections: Rejections
    ) -> None:
        self.mode = mode
        self.id_prefix = id_prefix
        self.counts = counts
        self.rejections = rejections
        self.items: list[tuple[str, Payment]] = []
        # Ids the source gave invoices after their cases were registered: id → the case's.
        self.aliases: Mapping[str, str] = {}

    def add_record(self, record: PaymentRecord) -> None:
        """A payment or credit note the source reports: validated and kept. Where amounts
        tell of money paid, a credit note is still kept (a credit note is no payment, and
        reaches Kravia as one with the source's id; the drop it causes then waits for it and
        is sized against Kravia's capital, see `kravia_sync.payments.drop_waits`)."""
        self.counts["payments_read"] += 1
        if self.mode is PaymentsMode.OFF or (
            self.mode is PaymentsMode.AMOUNT_DROPS and not is_credit_note_record(record.fields)
        ):
            # The amounts tell of money paid (or nothing should): counted, not forwarded.
            self.counts["payments_ignored"] += 1
            return
        try:
            payment = Payment.from_record(record.fields, id_prefix=self.id_prefix)
        except InvalidRecordError as exc:
            self.rejections.reject(
                QuarantineEntry(record.key, QuarantineKind.INVALID, exc.field, exc.reason)
            )
            return
        case_id = self.aliases.get(payment.accounting_invoice_id)
        if case_id is not None:
            payment = payment.model_copy(update={"accounting_invoice_id": case_id})
        self.items.append((record.key, payment))

    def add_drop(
        self,
        key: str,
        invoice: Invoice,
        dropped_from: Decimal,
        existing: CaseState | None,
        *,
        on: date,
    ) -> None:
        """The invoice's amount went down from `dropped_from` (`existing`: its stored case):
        money paid, where the source's amounts tell of it."""
        if self.mode is not PaymentsMode.AMOUNT_DROPS:
            return
        drop = derived_payment(
            invoice.accounting_invoice_id,
            dropped_from,
            invoice.amount,
            on=on,
            since=""
            if existing is None or existing.changed_at is None
            else existing.changed_at.isoformat(),
        )
        self.items.append((key, drop))
        self.counts["amount_drops"] += 1
