"""What the engine hands the state store and gets back: case writes and their results, journal
entries, records kept out, items of Kravia's search."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from kravia_sync.identity import KnownCase
from kravia_sync.lifecycle import CaseState

__all__ = [
    "CaseWrite",
    "InvoiceAlias",
    "JournalEntry",
    "JournalKind",
    "MirrorItem",
    "QuarantineEntry",
    "WriteResult",
    "WriteStatus",
]


class WriteStatus(StrEnum):
    OK = "ok"
    CONFLICT = "conflict"  # the row is not at the revision the write read: nothing written
    HELD = "held"  # an intent for an invoice an operator holds: not written, not to be sent
    FENCED = "fenced"  # an intent after the lease was lost: not written, the pass must stop


@dataclass(frozen=True, slots=True)
class CaseWrite:
    """One write of the engine: a case row (compare-and-set on the revision it carries: the
    one it was read at; 0 inserts a case never stored), a journal entry, or both.

    Nothing of it is written once this store, having taken the writer lease, no longer holds
    it at the epoch it took it at — except the journal entry of an outcome (a fact). An
    `intent` (a call about to leave) is also refused while any of `holds` (its
    accountingInvoiceId and invoice number; the case's aliases count too) is held, or, with
    `held_only`, unless one of them is. An outcome's journal entry is appended even when its
    row moved on."""

    case: CaseState | None = None
    entry: JournalEntry | None = None
    intent: bool = False
    holds: tuple[str, ...] = ()
    held_only: bool = False
    # Note columns of one case (accountingInvoiceId, values) written with it, e.g. that a
    # hold action was sent, so a crash right after can never send it twice.
    notes: tuple[str, Mapping[str, Any]] | None = None
    # A case Kravia's answer showed exists (a register's new id): into the mirror of Kravia's
    # cases at once, whatever else is refused (it is a fact about Kravia).
    kravia_case: KnownCase | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    status: WriteStatus
    case: CaseState | None = None  # as stored, at its new revision
    reason: str | None = None  # why held

    @property
    def ok(self) -> bool:
        return self.status is WriteStatus.OK


@dataclass(frozen=True, slots=True)
class MirrorItem:
    """One case as Kravia's search reported it."""

    kravia_id: int
    accounting_invoice_id: str | None
    invoice_number: str | None
    status: str | None
    remaining: Decimal | None
    last_updated: str | None


class JournalKind(StrEnum):
    """What a journal row records."""

    INTENT = "intent"  # a call about to leave (committed before it is sent)
    OUTCOME = "outcome"  # what came back (or that nothing did)
    DECISION = "decision"  # what the engine decided without a call (e.g. a case adopted)
    OPERATOR = "operator"  # a person's decision on a parked case or payment


@dataclass(frozen=True, slots=True)
class JournalEntry:
    attempt_id: str
    kind: JournalKind
    operation: str
    accounting_invoice_id: str
    at: datetime
    run_id: int | None = None
    kravia_id: int | None = None
    outcome: str | None = None
    http_status: int | None = None
    duration_ms: int | None = None
    message: str | None = None
    payment_id: str | None = None


class QuarantineKind(StrEnum):
    """Why a record of a source is kept out of Kravia."""

    INVALID = "invalid"  # a field, a duplicate or foreign id, a copy that cannot be sent
    WAITING = "waiting"  # the policy keeps it out today (not overdue enough, too small, paid)
    HELD = "held"  # an operator holds the invoice


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    record_key: str
    kind: QuarantineKind
    field: str
    reason: str
    accounting_invoice_id: str | None = None
    invoice_number: str | None = None


@dataclass(frozen=True, slots=True)
class InvoiceAlias:
    """`alias_id`, a later id of the invoice registered as `accounting_invoice_id`."""

    source: str
    alias_id: str
    accounting_invoice_id: str
    invoice_number: str
    at: datetime
