"""Select and diff: what one source record means for its case. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from kravia_sync.connector import RecordStamp, SourceRecord
from kravia_sync.lifecycle import IN_KRAVIA_PHASES, CaseState, Phase
from kravia_sync.model import Invoice, record_accounting_id

__all__ = ["Assessment", "Change", "assess", "record_hash"]


class Change(StrEnum):
    NEW = "new"  # not known yet: to be registered
    PENDING = "pending"  # known, its lifecycle not finished: resume it
    RETRY = "retry"  # rejected by Kravia before, changed in the source since: register again
    CHANGED = "changed"  # already in Kravia and changed in the source: recorded, not re-sent
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Assessment:
    change: Change
    case: CaseState
    write: bool  # the case row differs from what is stored
    # For a case already sent to Kravia whose outstanding amount dropped: the amount before.
    dropped_from: Decimal | None = None


def record_hash(record: SourceRecord | RecordStamp) -> str:
    """What the state keeps of a raw record, to skip revalidating it while it stays the same:
    the connector's digest where it gives one, else a hash of the fields; both with whether
    the record comes with a document. A stamp hashes as its full record will."""
    if isinstance(record, RecordStamp):
        return ("d:" if record.has_document else "n:") + record.digest
    if record.digest is not None:
        return ("d:" if record.document is not None else "n:") + record.digest
    fields = record.fields
    # Field names and values as text (exact for str, Decimal, int and date): this runs for every
    # record on every pass, so it is kept cheap. It follows the fields' order, so a source that
    # reorders its columns costs one revalidation per record, never a missed change.
    text = "\x1f".join(fields) + "\x1d" + "\x1f".join(map(str, fields.values()))
    # A lone surrogate (JSON may carry one) is hashed as it is; the model then refuses it.
    digest = hashlib.blake2b(text.encode(errors="surrogatepass"), digest_size=16)
    digest.update(b"\x01" if record.document is not None else b"\x00")
    return digest.hexdigest()


def source_id(fields: Mapping[str, object], id_prefix: str) -> str | None:
    """The accountingInvoiceId a record will carry, before validation (None if it has none)."""
    return record_accounting_id(fields, id_prefix)


def assess(
    invoice: Invoice,
    *,
    source: str,
    record_key: str,
    hashed: str,
    existing: CaseState | None,
    now: datetime,
) -> Assessment:
    """Diff one valid, eligible invoice against its stored case."""
    fingerprint = invoice.fingerprint()
    has_document = invoice.document is not None
    if existing is None:
        case = CaseState(
            accounting_invoice_id=invoice.accounting_invoice_id,
            source=source,
            record_key=record_key,
            invoice_number=invoice.invoice_number,
            phase=Phase.NEW,
            fingerprint=fingerprint,
            record_hash=hashed,
            has_document=has_document,
            first_seen_at=now,
            updated_at=now,
            amount=invoice.amount,
        )
        return Assessment(Change.NEW, case, write=False)  # written with its first intent
    moved = existing.fingerprint != fingerprint
    case = replace(existing, record_hash=hashed, record_key=record_key, amount=invoice.amount)
    if moved and existing.phase is Phase.NEW:
        case = replace(
            case,
            fingerprint=fingerprint,
            has_document=has_document,
            invoice_number=invoice.invoice_number,
            updated_at=now,
        )
        return Assessment(Change.PENDING, case, write=True)
    if moved and existing.phase is Phase.REJECTED:
        case = replace(
            case,
            phase=Phase.NEW,
            fingerprint=fingerprint,
            has_document=has_document,
            invoice_number=invoice.invoice_number,
            attempts=0,
            next_attempt_at=None,
            updated_at=now,
        )
        return Assessment(Change.RETRY, case, write=True)
    # An adopted case starts at Kravia's capital: a gap down to the source's amount is a drop
    # the state store never saw (it was lost, or restored from an older copy).
    below_floor = existing.amount_floor is not None and invoice.amount < existing.amount_floor
    if (moved or below_floor) and existing.phase in IN_KRAVIA_PHASES | {
        Phase.REGISTERING,
        Phase.NEEDS_REVIEW,
    }:
        # Kravia documents no way to edit a registered invoice: never register again. A drop
        # of the amount is money paid (see `kravia_sync.payments`); anything else is shown as a
        # change a person must make in Kravia. Drops are counted from the lowest amount seen
        # since it was sent: what went to Kravia as paid stays paid, so an amount that rises
        # and drops back is not forwarded twice.
        attention, dropped_from = _change_after_registration(invoice, existing)
        floor = existing.amount if existing.amount_floor is None else existing.amount_floor
        lowest = invoice.amount if floor is None else min(floor, invoice.amount)
        case = replace(
            case,
            fingerprint=fingerprint,
            has_document=existing.has_document
            if existing.phase in COPY_SETTLED_PHASES
            else has_document,
            amount_floor=lowest,
            changed_at=now,
            updated_at=now,
            attention=attention or existing.attention,
        )
        return Assessment(Change.CHANGED, case, write=True, dropped_from=dropped_from)
    change = Change.UNCHANGED if existing.phase is Phase.STARTED else Change.PENDING
    if existing.phase in {Phase.REJECTED, Phase.NEEDS_REVIEW}:
        change = Change.UNCHANGED
    write = existing.record_hash != hashed or existing.amount != invoice.amount
    return Assessment(change, case, write=write)


# Phases in which whether the case has a copy is settled (it was sent, or is being sent):
# before them, the source's current record says.
COPY_SETTLED_PHASES = frozenset(
    {Phase.UPLOADING, Phase.DOCUMENTED, Phase.STARTING, Phase.STARTED, Phase.NEEDS_REVIEW}
)


def _change_after_registration(
    invoice: Invoice, existing: CaseState
) -> tuple[str | None, Decimal | None]:
    """What a change to an invoice already sent to Kravia means: a note for a person (None
    when there is nothing to do by hand), and the earlier amount when the amount dropped."""
    before = existing.amount
    if before is None:
        unknown = (
            "the invoice changed in the source after it was sent to Kravia, and the amount it "
            "was sent with is not known (state from an older version): check the case in Kravia"
        )
        return unknown, None
    only_amount = invoice.model_copy(update={"amount": before}).fingerprint()
    notes: list[str] = []
    if only_amount != existing.fingerprint:
        notes.append(
            "the invoice's details (debtor, address, e-mail, dates or description) changed in "
            "the source after it was sent; Kravia documents no update call: change them in Kravia"
        )
    if invoice.amount > before:
        notes.append(
            f"the amount rose from {before} to {invoice.amount} after it was sent; Kravia "
            "documents no way to raise a claim: settle the difference in Kravia"
        )
    floor = before if existing.amount_floor is None else existing.amount_floor
    dropped_from = floor if invoice.amount < floor else None
    return ("; ".join(notes) or None), dropped_from
