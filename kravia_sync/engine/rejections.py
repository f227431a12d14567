"""The records a source read keeps out of Kravia, each with the field and the reason.

A record is quarantined when it is invalid (a field, a duplicate id, an id another source
owns, a judgement that failed) or when the gate keeps its invoice out for now (held,
waiting, a bad copy). `Rejections` collects them for one read, counting each by kind; the
state store's quarantine table is then synced to them, and the invalid ones are the run's
problems.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from kravia_sync.connector import SourceRecord
from kravia_sync.engine.gate import Refusal
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import Invoice, record_accounting_id
from kravia_sync.state.records import QuarantineEntry, QuarantineKind

__all__ = ["Rejections"]


class Rejections:
    """The quarantine of one source read; counts go into the read's `counts`."""

    def __init__(self, source: str, id_prefix: str, counts: Counter[str]) -> None:
        self.source = source
        self.id_prefix = id_prefix
        self.counts = counts
        self.entries: dict[str, QuarantineEntry] = {}
        self.kept_out = 0  # records the gate keeps out (held, waiting, or a bad copy)

    def problems(self) -> list[dict[str, str]]:
        """The invalid records, as the run reports problems."""
        return [
            {
                "source": self.source,
                "record": entry.record_key,
                "field": entry.field,
                "reason": entry.reason,
            }
            for entry in self.entries.values()
            if entry.kind == QuarantineKind.INVALID
        ]

    def reject(self, entry: QuarantineEntry) -> None:
        if not all(is_text(text) for text in _texts(entry)):
            entry = _as_text(entry)
        self.entries[entry.record_key] = entry
        self.counts[entry.kind] += 1

    def unjudgeable(self, key: str, aid: str | None, exc: Exception) -> None:
        """A record whose judgement failed unexpectedly."""
        self.reject(
            QuarantineEntry(
                key,
                QuarantineKind.INVALID,
                "record",
                f"the record could not be judged ({type(exc).__name__}: {exc}); correct it in "
                "the source",
                aid,
            )
        )

    def owned_elsewhere(
        self, key: str, aid: str | None, owner: str, number: str | None = None
    ) -> None:
        self.reject(
            QuarantineEntry(
                key,
                QuarantineKind.INVALID,
                "accounting_invoice_id",
                f"accountingInvoiceId {aid!r} already belongs to source {owner!r}; "
                "set id_prefix to keep the sources apart",
                aid,
                number,
            )
        )

    def duplicate(self, aid: str, first: str, key: str, *, first_too: bool) -> None:
        """Two records with one accountingInvoiceId: neither new one is sent (`first_too`:
        the first was new, and is taken back)."""
        reason = f"accountingInvoiceId {aid!r} is used by both {first} and {key}"
        self.reject(
            QuarantineEntry(key, QuarantineKind.INVALID, "accounting_invoice_id", reason, aid)
        )
        if first_too:
            self.reject(
                QuarantineEntry(first, QuarantineKind.INVALID, "accounting_invoice_id", reason, aid)
            )

    def validated(
        self, record: SourceRecord, aid: str | None, *, unique: bool = True
    ) -> Invoice | None:
        """The record's invoice; None, with the record quarantined, when it is invalid.
        `unique`: whether the source's invoice numbers tell its invoices apart (else an
        invoice needs an id of its own)."""
        number = record.fields.get("invoice_number")
        try:
            if not unique and record_accounting_id(record.fields, exclude_number=True) is None:
                raise InvalidRecordError(  # noqa: TRY301 - reported like any invalid field
                    "accounting_invoice_id",
                    "required: this source's invoice numbers repeat (unique_invoice_numbers "
                    "= false), so an invoice without an id of its own cannot be told apart",
                )
            invoice = Invoice.from_record(
                record.fields, id_prefix=self.id_prefix, document=record.document
            )
            if invoice.accounting_invoice_id != aid:
                # Never diff under one id and register under another.
                raise InvalidRecordError(  # noqa: TRY301 - reported like any invalid field
                    "accounting_invoice_id",
                    f"the id {aid!r} becomes {invoice.accounting_invoice_id!r} when validated; "
                    "correct it in the source",
                )
        except InvalidRecordError as exc:
            self.reject(
                QuarantineEntry(
                    record.key,
                    QuarantineKind.INVALID,
                    exc.field,
                    exc.reason,
                    aid,
                    None if number is None else str(number),
                )
            )
            return None
        return invoice

    def kept_out_by_gate(self, key: str, invoice: Invoice, refusal: Refusal) -> None:
        """The record is reported held, waiting or invalid with the gate's reason."""
        self.kept_out += 1
        self.reject(
            QuarantineEntry(
                key,
                QuarantineKind(refusal.kind.value),
                refusal.field,
                refusal.reason,
                invoice.accounting_invoice_id,
                invoice.invoice_number,
            )
        )


def is_text(value: str) -> bool:
    """Whether `value` can be stored and shown: text with no half of a UTF-16 surrogate pair
    (a JSON file may hold one, `"\\ud800"`; UTF-8 cannot)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _texts(entry: QuarantineEntry) -> list[str]:
    return [
        text
        for text in (
            entry.record_key,
            entry.reason,
            entry.accounting_invoice_id,
            entry.invoice_number,
        )
        if text is not None
    ]


def _as_text(entry: QuarantineEntry) -> QuarantineEntry:
    """The entry with each half surrogate pair shown as U+FFFD, so that it can be kept."""

    def text(value: str | None) -> str | None:
        if value is None:
            return None
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)

    return replace(
        entry,
        record_key=text(entry.record_key) or "",
        reason=text(entry.reason) or "",
        accounting_invoice_id=text(entry.accounting_invoice_id),
        invoice_number=text(entry.invoice_number),
    )
