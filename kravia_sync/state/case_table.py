"""Cases: what the engine knows of each invoice, written with compare-and-set together with
the journal entries of the calls made for them."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kravia_sync.identity import KnownCase
from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.state.database import Database
from kravia_sync.state.records import CaseWrite, JournalEntry, WriteResult, WriteStatus
from kravia_sync.state.rows import (
    CASE_COLUMNS,
    CASE_FIELDS,
    DRIVER_FIELDS,
    DRIVER_UPDATE_SQL,
    INSERT_JOURNAL_SQL,
    cas_write,
    case_row,
    decoder,
    id_chunks,
    journal_row,
    write_note_row,
)
from kravia_sync.state.source_read import SourceRead
from kravia_sync.state.stored import utc_text

__all__ = ["CaseTable"]


_CASE_UPDATES = ", ".join(f"{name} = excluded.{name}" for name in CASE_FIELDS[1:])


_UPSERT_CASE_SQL = (
    f"INSERT INTO cases ({CASE_COLUMNS}) VALUES ({', '.join('?' for _ in CASE_FIELDS)}) "  # noqa: S608
    f"ON CONFLICT (accounting_invoice_id) DO UPDATE SET {_CASE_UPDATES}"
)


# A case is named by its accountingInvoiceId, its invoice number, and its aliases.
_NAMED_BY = (
    "invoice_number = ? OR accounting_invoice_id = ? OR accounting_invoice_id IN "
    "(SELECT a.accounting_invoice_id FROM invoice_aliases AS a WHERE a.alias_id = ?)"
)
# The hold on a case (by its accountingInvoiceId, its invoice number or one of its aliases).
_HELD_SQL = (
    "SELECT invoice, reason FROM holds WHERE invoice IN (?, ?) OR invoice IN "
    "(SELECT a.alias_id FROM invoice_aliases AS a WHERE a.accounting_invoice_id = ?) "
    "ORDER BY held_at LIMIT 1"
)


def _mirror_known(cursor: Any, known: KnownCase) -> None:  # noqa: ANN401 - a DB-API cursor
    """A case Kravia's answer showed exists, into the mirror (a search's fuller view of it,
    when there is one already, stays)."""
    cursor.execute(
        "INSERT INTO kravia_cases (kravia_id, accounting_invoice_id, invoice_number, seen_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (kravia_id) DO NOTHING",
        (
            known.kravia_id,
            known.accounting_invoice_id,
            known.invoice_number,
            utc_text(datetime.now(UTC)),
        ),
    )


_CASE_DECODERS: tuple[Callable[[Any], Any], ...] = tuple(
    Phase if name == "phase" else decoder(name) for name in CASE_FIELDS
)


def _case_from_row(row: Sequence[Any]) -> CaseState:
    """A case from a row of `SELECT {CASE_COLUMNS} FROM cases` (in that column order)."""
    values: list[Any] = [decode(value) for decode, value in zip(_CASE_DECODERS, row, strict=True)]
    return CaseState(*values)


# The noted cases of a source: through the index of noted cases (schema 6), whose two columns
# both match; a store that lacks it still answers, through the index of every case.
NOTED_OF_SOURCE = (
    "SELECT accounting_invoice_id FROM cases "
    "WHERE source = ? AND attention IS NOT NULL AND substr(attention, 1, ?) = ?"
)


class CaseTable(Database):
    """The cases and their journal."""

    # --- cases ------------------------------------------------------------------------------------
    def _cases_where(self, condition: str, parameters: Sequence[object] = ()) -> list[CaseState]:
        with self._read() as connection:
            rows = connection.execute(
                f"SELECT {CASE_COLUMNS} FROM cases WHERE {condition}",  # noqa: S608 - our own SQL
                parameters,
            )
            return [_case_from_row(row) for row in rows]

    def load_cases(self, source: str) -> dict[str, CaseState]:
        return {
            case.accounting_invoice_id: case for case in self._cases_where("source = ?", (source,))
        }

    def source_read(self, source: str) -> SourceRead:
        """The state side of reading `source` in chunks (see `SourceRead`)."""
        return SourceRead(self.path, source)

    def load_cases_by_id(self, ids: Iterable[str]) -> dict[str, CaseState]:
        """The full stored state of the cases `ids` (in chunks, for SQLite's variable limit)."""
        found: dict[str, CaseState] = {}
        with self._read() as connection:
            for chunk in id_chunks(ids):
                rows = connection.execute(
                    f"SELECT {CASE_COLUMNS} FROM cases "  # noqa: S608 - placeholders only
                    f"WHERE accounting_invoice_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update((row[0], _case_from_row(row)) for row in rows)
        return found

    def find_cases(self, term: str) -> list[CaseState]:
        """Cases whose invoice number, accountingInvoiceId, other id (an alias: the id the
        source gives the invoice now) or Kravia id is `term`."""
        if term.isdigit():
            return self._cases_where(f"{_NAMED_BY} OR kravia_id = ?", (term, term, term, int(term)))
        return self.cases_named(term)

    def cases_named(self, term: str) -> list[CaseState]:
        """Cases a person may mean by `term`: their invoice number, their accountingInvoiceId,
        or an id the source gave the invoice after its case was registered (an alias)."""
        return self._cases_where(_NAMED_BY, (term, term, term))

    def cases_in(self, phases: Iterable[Phase], limit: int = 50) -> list[CaseState]:
        values = [phase.value for phase in phases]
        return self._cases_where(
            f"phase IN ({','.join('?' * len(values))}) ORDER BY updated_at DESC LIMIT ?",
            (*values, limit),
        )

    def cases_with_attention(self, limit: int = 50) -> list[CaseState]:
        """Cases with a change a person must make in Kravia, the most recent first."""
        return self._cases_where("attention IS NOT NULL ORDER BY updated_at DESC LIMIT ?", (limit,))

    def cases_noted(self, start: str) -> list[CaseState]:
        """Cases whose note (`attention`) starts with `start` (through the index of noted
        cases, which `attention IS NOT NULL` lets SQLite read instead of every case)."""
        return self._cases_where(
            "attention IS NOT NULL AND substr(attention, 1, ?) = ?", (len(start), start)
        )

    def ids_noted(self, source: str, start: str) -> list[str]:
        """The ids of `source`'s cases whose note starts with `start` (through the index of
        noted cases: a pass asks this of every source, however many cases it has)."""
        with self._read() as connection:
            rows = connection.execute(NOTED_OF_SOURCE, (source, len(start), start))
            return [str(aid) for (aid,) in rows]

    def kravia_status_counts(self) -> dict[str, int]:
        """Cases by the status Kravia last reported (pulled back; unknown ones left out)."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT kravia_status, count(*) FROM cases WHERE kravia_status IS NOT NULL "
                "GROUP BY kravia_status"
            )
            return {str(status): int(count) for status, count in rows}

    def phase_counts(self) -> dict[str, int]:
        with self._read() as connection:
            rows = connection.execute("SELECT phase, count(*) FROM cases GROUP BY phase")
            return {str(phase): int(count) for phase, count in rows}

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined records by kind (invalid, waiting)."""
        with self._read() as connection:
            rows = connection.execute("SELECT kind, count(*) FROM quarantine GROUP BY kind")
            return {str(kind): int(count) for kind, count in rows}

    def write_batch(self, cases: Iterable[CaseState], journal: Iterable[JournalEntry]) -> None:
        """Set state up as given: upsert the cases whole (last one wins, each at the next
        revision) and append the journal, in one transaction, with no fence and no
        compare-and-set. For tests, benchmarks and imports; the engine writes through
        `commit_case_writes`."""
        latest: dict[str, CaseState] = {}
        for case in cases:
            latest[case.accounting_invoice_id] = replace(case, revision=case.revision + 1)
        case_rows = [case_row(case, CASE_FIELDS) for case in latest.values()]
        journal_rows = [journal_row(entry) for entry in journal]
        with self._batch() as cursor:
            if case_rows:
                cursor.executemany(_UPSERT_CASE_SQL, case_rows)
            if journal_rows:
                cursor.executemany(INSERT_JOURNAL_SQL, journal_rows)

    def commit_case_writes(self, writes: Sequence[CaseWrite]) -> list[WriteResult]:
        """The engine's case writes, in order, in one transaction (see `CaseWrite`); the
        result of each. The lease is read once, inside the transaction."""
        with self._batch() as cursor:
            fence_holds = self._fence_holds(cursor)
            return [self._commit_one(cursor, write, fence_holds=fence_holds) for write in writes]

    def _commit_one(
        self, cursor: sqlite3.Cursor, write: CaseWrite, *, fence_holds: bool
    ) -> WriteResult:
        if write.kravia_case is not None:
            _mirror_known(cursor, write.kravia_case)
        if not fence_holds:
            # A writer that lost the lease writes no case row; what a call of its answered
            # is still a fact, kept in the journal (an intent is not: it is not sent).
            if write.entry is not None and not write.intent:
                cursor.execute(INSERT_JOURNAL_SQL, journal_row(write.entry))
            return WriteResult(WriteStatus.FENCED)
        if write.holds:
            aid, number = write.holds[0], write.holds[-1]
            held = cursor.execute(_HELD_SQL, (aid, number, aid)).fetchone()
            if (held is not None) != write.held_only:
                reason = None if held is None else f"on hold ({held[1]})"
                return WriteResult(WriteStatus.HELD, reason=reason or "no longer on hold")
        status = WriteStatus.OK
        stored: CaseState | None = None
        if write.case is not None:
            stored = cas_write(cursor, write.case, DRIVER_FIELDS, DRIVER_UPDATE_SQL)
            if stored is None:
                status = WriteStatus.CONFLICT
        if write.notes is not None and status is WriteStatus.OK:
            write_note_row(cursor, *write.notes)
        if write.entry is not None and (status is WriteStatus.OK or not write.intent):
            cursor.execute(INSERT_JOURNAL_SQL, journal_row(write.entry))
        return WriteResult(status, stored)
