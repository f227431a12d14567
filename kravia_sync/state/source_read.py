"""One source's read compared with the stored cases inside SQLite, a chunk at a time, in flat
memory."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import Self

from kravia_sync.lifecycle import CaseSummary, Phase
from kravia_sync.state import rows
from kravia_sync.state.errors import state_errors

__all__ = ["SourceRead"]


# The stored cases of a source with an invoice number, but another id. `+source`: through the
# index of invoice numbers, a handful of rows. Left to itself SQLite may take the index of the
# source's cases (it has no statistics to tell the two apart) and read every case of the
# source for each record asked about: a pass adopting 20,000 new ids took 125 s, not 3.
SAME_NUMBER_SQL = (
    "SELECT accounting_invoice_id FROM main.cases "
    "WHERE invoice_number = ? AND +source = ? AND accounting_invoice_id <> ? "
    "ORDER BY accounting_invoice_id"
)


class SourceRead:
    """Look-ups for one source read, a chunk of records at a time, in flat memory.

    For each chunk: the stored summary of every accountingInvoiceId in it (of any source), and
    the key of an earlier record of this read with the same id. The ids seen so far are kept
    in a dict up to IN_MEMORY_IDS, and beyond that in a temporary table of this connection
    (SQLite spills it to a temporary file), so a read of ten million rows needs no more
    memory than one of a hundred thousand. After the read: the stored cases it did not see.
    """

    CHUNK = 2000  # ids per statement (fewer where SQLite allows fewer bound variables)
    IN_MEMORY_IDS = 100_000  # about 10 MB

    def __init__(self, path: Path, source: str) -> None:
        self._source = source
        self._path = path
        with state_errors(path):
            self._db = sqlite3.connect(
                path, timeout=rows.BUSY_TIMEOUT_SECONDS, isolation_level=None
            )
        variables = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._chunk = max(1, min(self.CHUNK, (variables - 32) // 3))
        self._phases = {phase.value: phase for phase in Phase}
        self._in_memory: dict[str, str] | None = {}  # None once moved to the table
        self._triage_statements: dict[tuple[int, int], str] = {}
        self._seen_here = 0  # ids seen in this read whose stored case is of this source
        self._quiet = CaseSummary("", Phase.STARTED, source)
        self._chunks_seen = 0  # chunks recorded in the temporary table
        self._any_stored: bool | None = None  # whether the source has stored cases at all

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self._db.close()

    def triage(
        self, records: list[tuple[str, str, str]], *, quiet: Collection[str]
    ) -> tuple[dict[str, CaseSummary | None], list[str | None]]:
        """See `_triage`; the driver's errors as `StateError`s."""
        with state_errors(self._path):
            return self._triage(records, quiet=quiet)

    def _triage(
        self, records: list[tuple[str, str, str]], *, quiet: Collection[str]
    ) -> tuple[dict[str, CaseSummary | None], list[str | None]]:
        """For (accountingInvoiceId, record key, record hash) triples in read order: which ids
        need a closer look, and per triple the key of an earlier record of this read with its
        id (None for the first).

        An id needs a closer look unless its stored case belongs to this source, is in one of
        the `quiet` phases and has this very record hash; the dict maps each such id to its
        stored summary, or to None when nothing is stored. The comparison runs inside SQLite,
        so an unchanged record costs no Python object at all."""
        looked_at: dict[str, CaseSummary | None] = {}
        earlier: list[str | None] = []
        phases = sorted(quiet)
        for start in range(0, len(records), self._chunk):
            chunk = records[start : start + self._chunk]
            statement = self._triage_statements.get((len(chunk), len(phases)))
            if statement is None:
                statement = self._triage_statement(len(chunk), len(phases))
            rows = self._db.execute(
                statement,
                [
                    *itertools.chain.from_iterable((aid, hashed) for aid, _, hashed in chunk),
                    self._source,
                    *phases,
                ],
            )
            for aid, hashed, phase, source, number in rows:
                looked_at[aid] = (
                    None
                    if phase is None
                    else CaseSummary(hashed, self._phases[phase], source, number)
                )
            seen = self._seen_before([(aid, key) for aid, key, _ in chunk])
            for aid, key, _ in chunk:
                first = seen.get(aid)
                earlier.append(first)
                if first is None:
                    seen[aid] = key
                    # Not singled out means stored, quiet and of this source.
                    stored = looked_at.get(aid, self._quiet)
                    if stored is not None and stored.source == self._source:
                        self._seen_here += 1
        return looked_at, earlier

    def _triage_statement(self, size: int, phases: int) -> str:
        statement = (
            f"WITH given(aid, hash) AS (VALUES {','.join(['(?, ?)'] * size)}) "  # noqa: S608 - placeholders only
            "SELECT given.aid, c.record_hash, c.phase, c.source, c.invoice_number FROM given "
            "LEFT JOIN main.cases AS c ON c.accounting_invoice_id = given.aid "
            "WHERE c.accounting_invoice_id IS NULL OR c.record_hash IS NOT given.hash "
            f"OR c.source IS NOT ? OR c.phase NOT IN ({','.join('?' * phases)})"
        )
        self._triage_statements[size, phases] = statement
        return statement

    def _seen_before(self, chunk: list[tuple[str, str]]) -> dict[str, str]:
        """Record the chunk's ids as seen; the first keys of those seen in earlier chunks.
        The dict returned may be the in-memory record itself (the caller adds to it)."""
        seen = self._in_memory
        if seen is not None and len(seen) + len(chunk) > self.IN_MEMORY_IDS:
            self._move_to_table(seen)
            seen = None
        if seen is not None:
            return seen
        firsts: dict[str, str] = {}
        for aid, key in chunk:
            firsts.setdefault(aid, key)
        # One statement records the chunk's ids (numbered by chunk); only when fewer were new
        # than given does a second one fetch the first keys of the others.
        self._chunks_seen += 1
        number = self._chunks_seen
        values = ", ".join(["(?, ?, ?)"] * len(firsts))
        inserted = self._db.execute(
            f"INSERT INTO temp.seen_ids (aid, record_key, chunk) VALUES {values} "  # noqa: S608
            "ON CONFLICT DO NOTHING",
            [part for aid, key in firsts.items() for part in (aid, key, number)],
        ).rowcount
        if inserted == len(firsts):
            return {}
        return dict(
            self._db.execute(
                "SELECT aid, record_key FROM temp.seen_ids "  # noqa: S608
                f"WHERE chunk < ? AND aid IN ({','.join('?' * len(firsts))})",
                [number, *firsts],
            )
        )

    def _move_to_table(self, seen: dict[str, str]) -> None:
        self._db.execute("PRAGMA temp_store = FILE")
        self._db.execute(
            "CREATE TEMP TABLE seen_ids (aid TEXT PRIMARY KEY, record_key TEXT NOT NULL, "
            "chunk INTEGER NOT NULL) WITHOUT ROWID"
        )
        # In statements of a chunk's size (much faster than one row at a time).
        items = list(seen.items())
        for start in range(0, len(items), self._chunk):
            part = items[start : start + self._chunk]
            self._db.execute(
                "INSERT INTO temp.seen_ids (aid, record_key, chunk) "  # noqa: S608 - placeholders
                f"VALUES {', '.join(['(?, ?, 0)'] * len(part))}",
                [value for pair in part for value in pair],
            )
        self._in_memory = None

    def same_number(self, aid: str, number: str) -> list[str]:
        """The ids of this source's stored cases with this invoice number and another id (for
        a record of `aid`, for which nothing is stored). Asked of few records: those new to
        the store, and only once the source has stored cases."""
        if self._any_stored is None:
            self._any_stored = self.known() > 0
        if not self._any_stored:
            return []
        with state_errors(self._path):
            rows = self._db.execute(SAME_NUMBER_SQL, (number, self._source, aid)).fetchall()
        return [str(stored) for (stored,) in rows]

    def case_number(self, aid: str) -> str | None:
        """The invoice number of the stored case (of any source) with this id: "" when it is
        not known, None when no case has the id."""
        with state_errors(self._path):
            row = self._db.execute(
                "SELECT invoice_number FROM main.cases WHERE accounting_invoice_id = ?", (aid,)
            ).fetchone()
        return None if row is None else str(row[0] or "")

    def seen_among(self, aids: Collection[str]) -> set[str]:
        """Which of these ids this read has seen so far."""
        seen = self._in_memory
        if seen is not None:
            return {aid for aid in aids if aid in seen}
        listed = list(aids)
        found: set[str] = set()
        with state_errors(self._path):
            for start in range(0, len(listed), self._chunk):
                chunk = listed[start : start + self._chunk]
                rows = self._db.execute(
                    "SELECT aid FROM temp.seen_ids "  # noqa: S608 - placeholders only
                    f"WHERE aid IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update(aid for (aid,) in rows)
        return found

    def known(self) -> int:
        """How many cases of the source the state holds."""
        with state_errors(self._path):
            (stored,) = self._db.execute(
                "SELECT count(*) FROM main.cases WHERE source = ?", (self._source,)
            ).fetchone()
        return int(stored)

    def unseen(self) -> tuple[int, list[str]]:
        """How many stored cases of the source this read did not see, and the ids of those
        with a call whose answer was lost (they still need settling)."""
        return self.known() - self._seen_here, self.unseen_in(_SETTLING)

    def unseen_in(self, phases: Collection[str]) -> list[str]:
        """The ids of the source's stored cases in these phases that this read did not see."""
        listed = sorted(phases)
        marks = ", ".join("?" * len(listed))
        # `+source`: look cases up by phase (few are in these), not by source (all are).
        query = (
            "SELECT accounting_invoice_id FROM main.cases "  # noqa: S608 - placeholders only
            f"WHERE +source = ? AND phase IN ({marks})"
        )
        seen = self._in_memory
        if seen is None:
            query += " AND accounting_invoice_id NOT IN (SELECT aid FROM temp.seen_ids)"
        with state_errors(self._path):
            rows = self._db.execute(query, (self._source, *listed)).fetchall()
        return [aid for (aid,) in rows if seen is None or aid not in seen]


_SETTLING = (Phase.REGISTERING.value, Phase.UPLOADING.value, Phase.STARTING.value)
