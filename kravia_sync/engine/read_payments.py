"""The payments and credit notes of one source read: the ones the source reports as records,
or, where its amounts tell of money paid, the drops in an invoice's amount (see
`SourceConfig.payments`). Kept in read order with the key of the record each came from, for
`kravia_sync.payments.plan_payments`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
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
        self.items.append((record.key, payment))  # as the source names it: `name_cases`

    def name_cases(self, aliases: Mapping[str, str], unclear: Collection[str]) -> None:
        """Once the read is complete, before any drop is added: each payment the source
        reported names the case of its invoice, through the ids the source gave invoices after
        their cases were registered (`aliases`: id → the case's, as this read left them). A
        payment on an id in `unclear` (the accountingInvoiceId of one invoice's case, which
        the source now gives another) is quarantined: which invoice it is for cannot be told."""
        kept: list[tuple[str, Payment]] = []
        for key, payment in self.items:
            named = payment.accounting_invoice_id
            if named in unclear:
                self.rejections.reject(
                    QuarantineEntry(
                        key,
                        QuarantineKind.INVALID,
                        "accounting_invoice_id",
                        f"the invoice id {named!r} is that of an invoice's case at Kravia, and "
                        "the source now gives it to another invoice (quarantined): which of the "
                        "two this payment is for cannot be told; nothing is sent for it",
                        named,
                    )
                )
                continue
            case_id = aliases.get(named)
            kept.append(
                (
                    key,
                    payment
                    if case_id is None
                    else payment.model_copy(update={"accounting_invoice_id": case_id}),
                )
            )
        self.items[:] = kept  # the same list: `SourceDiff.payments` is it

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
