"""One pass's work list, in flat memory.

A first sync may find a million new invoices. Holding each as objects until it is driven
costs several kilobytes apiece, so the work list keeps new invoices in a private temporary
SQLite database (the page cache holds a few megabytes; the rest is a temporary file that
SQLite deletes when the list is closed) and gives them out a chunk at a time, in the order
they were read. Work on cases the state store already holds (changed, pending, a lost answer
to settle) stays in memory: it grows with what changed, and the diff updates those items in
place after it writes them.

New invoices are also where two sources of one pass can meet: the list refuses a second
source's invoice under an accountingInvoiceId an earlier source added, and says whose it is.

A new invoice's copy is written out with it: a file's path, or what loads it (a query's
parameters, a download's address) with its connector kept by reference. A loader that cannot
be written out (a lambda, a closure) stays in memory.

When the temporary file cannot be written (a full disk), the list is broken for the rest of
the pass: `WorkListError`, and nothing more is given out.
"""

from __future__ import annotations

import io
import pickle
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Self

from kravia_sync.connector import Connector
from kravia_sync.documents import Document, FileDocument
from kravia_sync.engine.gate import Refusal
from kravia_sync.engine.plan import Change
from kravia_sync.errors import KraviaSyncError
from kravia_sync.lifecycle import CaseState
from kravia_sync.model import Invoice

__all__ = ["WorkItem", "WorkList", "WorkListError"]


class WorkListError(KraviaSyncError, OSError):
    """The temporary file of the work list could not be written or read."""


@dataclass(slots=True)
class WorkItem:
    """A case with (possibly) a next step, and its invoice when the source still has it."""

    case: CaseState
    invoice: Invoice | None
    change: Change
    # Whether the invoice's copy was read and checked in this pass, and why it cannot be sent
    # (None: it can, or there is none).
    copy_checked: bool = False
    copy_problem: str | None = None
    # The copy as read and checked, handed to the upload so that it is read once a pass (None:
    # not kept, and read again at the upload; see `WorkList.COPIES_IN_MEMORY_BYTES`).
    copy: bytes | None = None
    # Why the gate keeps it out, when it is driven only because Kravia may hold its case
    # already (to be adopted, never registered; see `SourceDiff.kravia_has`).
    kept_out: Refusal | None = None


class WorkList:
    """The cases a pass drives: those already stored, then the new ones, in read order."""

    IN_MEMORY = 5_000  # new items held as objects (about 25 MB); the rest are written out
    CHUNK = 500  # written-out items read back together
    # Checked copies kept for their upload, in all; beyond that (and for every item written
    # out) a copy is read a second time at its upload instead.
    COPIES_IN_MEMORY_BYTES = 64 * 1024 * 1024

    def __init__(self) -> None:
        self._stored: list[WorkItem] = []
        self._held: dict[str, tuple[str, WorkItem]] = {}  # new: id -> (source, item)
        self._db: sqlite3.Connection | None = None  # the written-out ones, once there are any
        self._written = 0
        self._documents: dict[str, Document] = {}  # copies kept by reference, by id
        self._connectors: dict[int, Connector] = {}  # those the written-out copies load with
        self._copy_bytes = 0  # of the copies kept for their upload
        self.broken: str | None = None  # why the file cannot be used any more

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._held.clear()
        self._documents.clear()
        self._connectors.clear()

    def __len__(self) -> int:
        return len(self._stored) + len(self._held) + self._written

    def __iter__(self) -> Iterator[WorkItem]:
        """Every item: the stored cases', then the new ones in read order, those written out
        a chunk at a time (an item taken out meanwhile is not given)."""
        yield from list(self._stored)
        for aid in list(self._held):
            held = self._held.get(aid)
            if held is not None:
                yield held[1]
        after = 0
        while self._db is not None:
            rows = self._execute(
                "SELECT seq, aid, item, document FROM new_work WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, self.CHUNK),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            for _, aid, blob, document in rows:
                yield self._loads(aid, blob, document)

    def add(self, item: WorkItem) -> None:
        """Work on a case the state store holds."""
        self._stored.append(item)

    def add_new(self, source: str, item: WorkItem) -> str | None:
        """A new invoice's item; None when added, or the source that already added an item
        under its accountingInvoiceId in this pass (nothing added)."""
        aid = item.case.accounting_invoice_id
        held = self._held.get(aid)
        if held is not None:
            return held[0]
        if self._db is None and len(self._held) < self.IN_MEMORY:
            self._held[aid] = (source, item)
            return None
        if item.copy is not None:  # written out: its copy is read again at its upload
            self._copy_bytes -= len(item.copy)
            item.copy = None
        # Once one is written out, every later one is too: the read order is kept.
        owner = self._execute("SELECT source FROM new_work WHERE aid = ?", (aid,)).fetchone()
        if owner is not None:
            return str(owner[0])
        blob, document, kept = self._written_out(item)
        self._execute(
            "INSERT INTO new_work (aid, source, kept_out, item, document) VALUES (?, ?, ?, ?, ?)",
            (aid, source, item.kept_out is not None, blob, document),
        )
        if kept is not None:
            self._documents[aid] = kept
        self._written += 1
        return None

    def kept_copy(self, content: bytes | None) -> bytes | None:
        """A checked copy to keep on its item for the upload, while the copies kept stay
        within `COPIES_IN_MEMORY_BYTES`; None past that (it is read again at the upload)."""
        if content is None or self._copy_bytes + len(content) > self.COPIES_IN_MEMORY_BYTES:
            return None
        self._copy_bytes += len(content)
        return content

    def drop_new(self, source: str, aid: str) -> bool:
        """Take out the new item `source` added under `aid`; whether there was one."""
        held = self._held.get(aid)
        if held is not None:
            if held[0] != source:
                return False
            del self._held[aid]
            return True
        if self._db is None:
            return False
        dropped = self._execute(
            "DELETE FROM new_work WHERE aid = ? AND source = ?", (aid, source)
        ).rowcount
        if not dropped:
            return False
        self._written -= 1
        self._documents.pop(aid, None)
        return True

    def drop_source(self, source: str) -> None:
        """Take out everything of `source` (its read failed, or begins again)."""
        self._stored = [item for item in self._stored if item.case.source != source]
        self._held = {aid: held for aid, held in self._held.items() if held[0] != source}
        if self._db is not None and self.broken is None:
            for (aid,) in self._execute("SELECT aid FROM new_work WHERE source = ?", (source,)):
                self._documents.pop(aid, None)
            dropped = self._execute("DELETE FROM new_work WHERE source = ?", (source,))
            self._written -= dropped.rowcount

    def remove(self, item: WorkItem) -> None:
        """Take `item` out (given by this list, or added to it)."""
        if any(stored is item for stored in self._stored):
            self._stored = [stored for stored in self._stored if stored is not item]
        elif item.case.revision == 0:
            self.drop_new(item.case.source, item.case.accounting_invoice_id)

    def new_count(self, source: str) -> int:
        held = sum(1 for owner, _ in self._held.values() if owner == source)
        if self._db is None:
            return held
        (written,) = self._execute(
            "SELECT count(*) FROM new_work WHERE source = ?", (source,)
        ).fetchone()
        return held + int(written)

    def new_kept_out(self, source: str) -> list[WorkItem]:
        """The new items of `source` the gate keeps out (driven only to adopt a case Kravia
        may hold already): few."""
        kept = [
            item
            for owner, item in self._held.values()
            if owner == source and item.kept_out is not None
        ]
        if self._db is not None:
            kept.extend(
                self._loads(aid, blob, document)
                for aid, blob, document in self._execute(
                    "SELECT aid, item, document FROM new_work "
                    "WHERE source = ? AND kept_out ORDER BY seq",
                    (source,),
                )
            )
        return kept

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if self.broken is not None:
            raise WorkListError(self.broken)
        try:
            return self._file().execute(sql, parameters)
        except sqlite3.Error as exc:
            self.broken = (
                f"the new invoices of this pass could not be kept in a temporary file ({exc}); "
                "is the disk of SQLITE_TMPDIR, TMPDIR or /tmp full? Nothing was sent for them"
            )
            raise WorkListError(self.broken) from exc

    def _file(self) -> sqlite3.Connection:
        if self._db is None:
            # "": a private temporary database, removed when the connection closes. One
            # transaction, never committed: nothing is flushed but what the cache cannot hold.
            db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            self._db = db
            db.execute("PRAGMA journal_mode = OFF")
            db.execute(
                "CREATE TABLE new_work (seq INTEGER PRIMARY KEY, aid TEXT NOT NULL UNIQUE, "
                "source TEXT NOT NULL, kept_out INTEGER NOT NULL, item BLOB NOT NULL, "
                "document BLOB)"
            )
            db.execute("BEGIN")
        return self._db

    # -- writing items out ---------------------------------------------------------------

    def _written_out(self, item: WorkItem) -> tuple[bytes, bytes | None, Document | None]:
        """The item as written out, its copy's loader as written out (None: none, or with the
        item), and the copy kept by reference instead (None: written out, or none)."""
        invoice = item.invoice
        document = None if invoice is None else invoice.document
        if invoice is None or document is None or type(document) is FileDocument:
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL), None, None
        detached = replace(item, invoice=invoice.model_copy(update={"document": None}))
        blob = pickle.dumps(detached, protocol=pickle.HIGHEST_PROTOCOL)
        buffer = io.BytesIO()
        try:
            _DocumentPickler(buffer, self._connectors).dump(document)
        except (pickle.PicklingError, TypeError, AttributeError):
            return blob, None, document  # a lambda, a closure: kept here, by reference
        return blob, buffer.getvalue(), None

    def _loads(self, aid: str, blob: bytes, written: bytes | None) -> WorkItem:
        # Written by `_written_out`, to a file only this process holds.
        item = pickle.loads(blob)  # noqa: S301
        assert isinstance(item, WorkItem)  # noqa: S101 - as written
        document = (
            self._documents.get(aid)
            if written is None
            else _DocumentUnpickler(io.BytesIO(written), self._connectors).load()
        )
        if document is not None and item.invoice is not None:
            item.invoice = item.invoice.model_copy(update={"document": document})
        return item


class _DocumentPickler(pickle.Pickler):
    """Writes out what loads a copy; the connector it loads with is kept by reference."""

    def __init__(self, file: io.BytesIO, connectors: dict[int, Connector]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._connectors = connectors

    def persistent_id(self, obj: Any) -> int | None:  # noqa: ANN401 - any part of a loader
        if isinstance(obj, Connector):
            self._connectors[id(obj)] = obj
            return id(obj)
        return None


class _DocumentUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, connectors: dict[int, Connector]) -> None:
        super().__init__(file)
        self._connectors = connectors

    def persistent_load(self, pid: Any) -> Connector:  # noqa: ANN401 - what persistent_id gave
        return self._connectors[pid]
