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

The same file keeps, for each source being read, the valid records judged only once its read
is complete (`keep`, `kept`): those of stored cases, and those whose id changed since their
case was registered. A pass that looks at every stored case again (a source that renumbered
its ids, or changed its columns) holds a few thousand of them as objects, not all.

When the temporary file cannot be written (a full disk), the list is broken for the rest of
the pass: `WorkListError`, and nothing more is given out.
"""

from __future__ import annotations

import io
import pickle
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Self, cast

from kravia_sync.connector import Connector
from kravia_sync.documents import Document, FileDocument
from kravia_sync.engine.gate import Refusal
from kravia_sync.engine.plan import Change
from kravia_sync.errors import KraviaSyncError
from kravia_sync.lifecycle import CaseState
from kravia_sync.model import Invoice

__all__ = ["KeptRecord", "Shelf", "WorkItem", "WorkList", "WorkListError"]


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
    # not kept; see `WorkList.COPIES_IN_MEMORY_BYTES`).
    copy: bytes | None = None
    # Checked at the read, but its bytes were not kept (written out, or past the budget): the
    # check holds only with them, so the copy is read and checked again right before it is
    # sent (a dry run, which sends nothing, goes by the check made at the read).
    copy_recheck: bool = False
    # Why the gate keeps it out, when it is driven only because Kravia may hold its case
    # already (to be adopted, never registered; see `SourceDiff.kravia_has`).
    kept_out: Refusal | None = None


@dataclass(slots=True)
class KeptRecord:
    """A valid record a source's read keeps until it is complete: its invoice (with the id of
    the case it is judged against), its key in the source and its hash."""

    invoice: Invoice
    key: str
    hashed: str


class WorkList:
    """The cases a pass drives: those already stored, then the new ones, in read order."""

    IN_MEMORY = 5_000  # new items held as objects (about 25 MB); the rest are written out
    CHUNK = 500  # written-out items read back together
    # Checked copies kept for their upload, in all; beyond that (and for every item written
    # out) a copy is read a second time, and checked again, right before it is sent.
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
        # Records kept until their source's read is complete, by (source, shelf, name); once
        # IN_MEMORY are held, a shelf's later records are written out, in the order kept.
        self._kept: dict[tuple[str, str, str], KeptRecord] = {}
        self._kept_written: set[tuple[str, str]] = set()  # (source, shelf) written out
        self._kept_documents: dict[tuple[str, str, str], Document] = {}  # copies by reference

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._held.clear()
        self._documents.clear()
        self._kept.clear()
        self._kept_documents.clear()
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
            self._let_go(item)
            return held[0]
        if self._db is None and len(self._held) < self.IN_MEMORY:
            self._held[aid] = (source, item)
            return None
        if item.copy is not None:
            # Written out without it: the copy is read and checked again right before the
            # register or the upload (the check made at the read holds only with its bytes).
            self._let_go(item)
            item.copy, item.copy_recheck = None, True
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

    def _let_go(self, item: WorkItem) -> None:
        """The room of the copy of an item refused, taken out or written out, given back to
        the budget (an item taken out to be driven at once keeps its copy)."""
        if item.copy is not None:
            self._copy_bytes -= len(item.copy)

    def kept_copy(self, content: bytes | None) -> bytes | None:
        """A checked copy to keep on its item for the upload, while the copies kept stay
        within `COPIES_IN_MEMORY_BYTES`; None past that (it is read and checked again right
        before it is sent)."""
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
            self._let_go(self._held.pop(aid)[1])
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
        self.drop_kept(source)
        for item in [*self._stored, *(item for _, item in self._held.values())]:
            if item.case.source == source:
                self._let_go(item)
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

    # -- records kept until their source's read is complete --------------------------------

    def shelf(self, source: str, shelf: str) -> Shelf:
        """Where `source`'s read keeps records of one kind until it is complete."""
        return Shelf(self, (source, shelf))

    def keep(self, owner: tuple[str, str], name: str, record: KeptRecord) -> None:
        """Keep `record` on the shelf `owner` ((source, shelf)) under `name`; one kept under
        that name before is replaced, in its place."""
        if (*owner, name) in self._kept or (
            owner not in self._kept_written and len(self._kept) < self.IN_MEMORY
        ):
            self._kept[*owner, name] = record
            return
        self._kept_written.add(owner)
        invoice, document, by_reference = self._invoice_out(record.invoice)
        self._execute(
            "INSERT INTO kept (source, shelf, name, record, document) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (source, shelf, name) DO UPDATE SET record = excluded.record, "
            "document = excluded.document",
            (*owner, name, _pickled(replace(record, invoice=invoice)), document),
        )
        if by_reference is None:
            self._kept_documents.pop((*owner, name), None)
        else:
            self._kept_documents[*owner, name] = by_reference

    def forget(self, owner: tuple[str, str], name: str) -> None:
        """Take the record kept on the shelf `owner` under `name` out, if there is one."""
        if self._kept.pop((*owner, name), None) is None and owner in self._kept_written:
            self._execute(
                "DELETE FROM kept WHERE source = ? AND shelf = ? AND name = ?", (*owner, name)
            )
            self._kept_documents.pop((*owner, name), None)

    def kept(self, owner: tuple[str, str]) -> Iterator[list[tuple[str, KeptRecord]]]:
        """The records on the shelf `owner`, with their names, in the order kept, a chunk at
        a time (those held as objects first: every later one was written out)."""
        held = [(key[2], record) for key, record in self._kept.items() if key[:2] == owner]
        for start in range(0, len(held), self.CHUNK):
            yield held[start : start + self.CHUNK]
        if owner not in self._kept_written:
            return
        after = 0
        while rows := self._execute(
            "SELECT seq, name, record, document FROM kept "
            "WHERE source = ? AND shelf = ? AND seq > ? ORDER BY seq LIMIT ?",
            (*owner, after, self.CHUNK),
        ).fetchall():
            after = rows[-1][0]
            yield [(name, self._kept_in((*owner, name), blob, doc)) for _, name, blob, doc in rows]

    def drop_kept(self, source: str) -> None:
        """Let go of every record `source`'s read kept (it is judged, or failed)."""
        self._kept = {key: record for key, record in self._kept.items() if key[0] != source}
        self._kept_documents = {
            key: document for key, document in self._kept_documents.items() if key[0] != source
        }
        written = {owner for owner in self._kept_written if owner[0] == source}
        if written:
            self._kept_written -= written
            if self.broken is None:
                self._execute("DELETE FROM kept WHERE source = ?", (source,))

    def _kept_in(self, key: tuple[str, str, str], blob: bytes, written: bytes | None) -> KeptRecord:
        # Written by `keep`, to a file only this process holds.
        record = pickle.loads(blob)  # noqa: S301
        assert isinstance(record, KeptRecord)  # noqa: S101 - as written
        document = self._document_in(written, self._kept_documents.get(key))
        if document is not None:
            record.invoice = record.invoice.model_copy(update={"document": document})
        return record

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if self.broken is not None:
            raise WorkListError(self.broken)
        try:
            return self._file().execute(sql, parameters)
        except sqlite3.Error as exc:
            self.broken = (
                f"the invoices this pass read could not be kept in a temporary file ({exc}); "
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
            db.execute(
                "CREATE TABLE kept (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, "
                "shelf TEXT NOT NULL, name TEXT NOT NULL, record BLOB NOT NULL, document BLOB, "
                "UNIQUE (source, shelf, name))"
            )
            db.execute("BEGIN")
        return self._db

    # -- writing items out ---------------------------------------------------------------

    def _written_out(self, item: WorkItem) -> tuple[bytes, bytes | None, Document | None]:
        """The item as written out, its copy's loader as written out (None: none, or with the
        item), and the copy kept by reference instead (None: written out, or none)."""
        if item.invoice is None:
            return _pickled(item), None, None
        invoice, document, by_reference = self._invoice_out(item.invoice)
        return _pickled(replace(item, invoice=invoice)), document, by_reference

    def _invoice_out(self, invoice: Invoice) -> tuple[Invoice, bytes | None, Document | None]:
        """`invoice` to write out, with its copy's loader taken off (unless it has none, or a
        file's path), that loader written out, or (where it cannot be) kept by reference."""
        document = invoice.document
        if document is None or type(document) is FileDocument:
            return invoice, None, None
        detached = invoice.model_copy(update={"document": None})
        buffer = io.BytesIO()
        try:
            _DocumentPickler(buffer, self._connectors).dump(document)
        except Exception:  # whatever stops a loader being written out, it is kept here
            return detached, None, document  # (a lambda, a closure), by reference
        return detached, buffer.getvalue(), None

    def _document_in(self, written: bytes | None, by_reference: Document | None) -> Document | None:
        if written is None:
            return by_reference
        return cast("Document", _DocumentUnpickler(io.BytesIO(written), self._connectors).load())

    def _loads(self, aid: str, blob: bytes, written: bytes | None) -> WorkItem:
        # Written by `_written_out`, to a file only this process holds.
        item = pickle.loads(blob)  # noqa: S301
        assert isinstance(item, WorkItem)  # noqa: S101 - as written
        document = self._document_in(written, self._documents.get(aid))
        if document is not None and item.invoice is not None:
            item.invoice = item.invoice.model_copy(update={"document": document})
        return item


class Shelf:
    """The records of one kind a source's read keeps until it is complete (those of stored
    cases, those withheld for an id that changed), by name: held as objects while the work
    list holds few, written out to its file after that, and given back in the order kept."""

    def __init__(self, work: WorkList, owner: tuple[str, str]) -> None:
        self._work = work
        self._owner = owner

    def put(self, name: str, record: KeptRecord) -> None:
        """Keep `record` under `name`; one kept under that name before is replaced, in its
        place."""
        self._work.keep(self._owner, name, record)

    def forget(self, name: str) -> None:
        """Take the record kept under `name` out, if there is one."""
        self._work.forget(self._owner, name)

    def chunks(self) -> Iterator[list[tuple[str, KeptRecord]]]:
        """The records kept, with their names, in the order kept, a chunk at a time."""
        return self._work.kept(self._owner)


def _pickled(value: WorkItem | KeptRecord) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


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
