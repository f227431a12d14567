"""The pass's work list: new invoices kept out of memory and given back whole, in read order;
ownership of an id between sources; taking items out."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kravia_sync.connector import Connector, ConnectorSettings, SourceRecord
from kravia_sync.documents import CallableDocument, FileDocument
from kravia_sync.engine.gate import Refusal, RefusalKind
from kravia_sync.engine.plan import Change, assess
from kravia_sync.engine.worklist import KeptRecord, Shelf, WorkItem, WorkList, WorkListError
from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.model import Invoice

NOW = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)


def new_item(number: int, *, source: str = "erp", document: object = None) -> WorkItem:
    invoice = Invoice.from_record(
        {
            "invoice_number": str(number),
            "invoice_date": "2026-09-01",
            "due_date": "2026-10-01",
            "amount": f"{number % 900 + 100}.50",
            "debtor_name": f"Kunde {number} Ødegård",
            "address_line1": "Storgata 1",
            "postal_code": "0150",
            "city": "Oslo",
        },
        id_prefix="E-",
        document=document,
    )
    assessment = assess(
        invoice, source=source, record_key=f"{source}:{number}", hashed="h", existing=None, now=NOW
    )
    return WorkItem(assessment.case, invoice, assessment.change)


def stored_item(number: int, source: str = "erp") -> WorkItem:
    item = new_item(number, source=source)
    case = CaseState(**{**_fields(item.case), "revision": 3, "phase": Phase.REGISTERED})
    return WorkItem(case, item.invoice, Change.PENDING)


def _fields(case: CaseState) -> dict[str, object]:
    return {name: getattr(case, name) for name in case.__slots__}


def ids(work: WorkList) -> list[str]:
    return [item.case.accounting_invoice_id for item in work]


@pytest.fixture(params=["held", "written out"])
def held(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Each test twice: new items held as objects, and all written out at once."""
    limit = 10_000 if request.param == "held" else 0
    monkeypatch.setattr(WorkList, "IN_MEMORY", limit)
    return limit


@pytest.mark.usefixtures("held")
class TestNewItems:
    def test_an_item_comes_back_equal(self, held: int):
        item = new_item(20003)
        with WorkList() as work:
            assert work.add_new("erp", item) is None
            (back,) = list(work)
        assert (back is item) == bool(held)  # written out: a copy comes back
        assert back.case == item.case
        assert back.invoice == item.invoice
        assert (back.change, back.copy_checked, back.kept_out) == (Change.NEW, False, None)

    def test_stored_cases_first_then_new_ones_in_read_order_across_chunks(self, monkeypatch):
        monkeypatch.setattr(WorkList, "CHUNK", 7)
        with WorkList() as work:
            for number in range(100, 130):
                work.add_new("erp", new_item(number))
            work.add(stored_item(5))
            assert len(work) == 31
            assert ids(work) == ["E-5", *(f"E-{n}" for n in range(100, 130))]
            assert ids(work) == ids(work)  # as often as asked

    def test_an_id_an_earlier_source_added_is_refused_with_its_owner(self):
        with WorkList() as work:
            assert work.add_new("erp", new_item(20003)) is None
            assert work.add_new("shop", new_item(20003, source="shop")) == "erp"
            assert len(work) == 1
            assert [item.case.source for item in work] == ["erp"]

    def test_drop_new_takes_out_only_the_sources_own(self):
        with WorkList() as work:
            work.add_new("erp", new_item(1))
            work.add_new("erp", new_item(2))
            assert not work.drop_new("shop", "E-1")
            assert work.drop_new("erp", "E-1")
            assert not work.drop_new("erp", "E-1")
            assert ids(work) == ["E-2"]
            assert len(work) == 1
            assert work.new_count("erp") == 1
            assert work.add_new("shop", new_item(1, source="shop")) is None  # free again

    def test_an_item_taken_out_while_iterating_is_not_given(self, monkeypatch):
        monkeypatch.setattr(WorkList, "CHUNK", 2)
        with WorkList() as work:
            for number in range(1, 7):
                work.add_new("erp", new_item(number))
            given = []
            for item in work:
                given.append(item.case.accounting_invoice_id)
                if item.case.accounting_invoice_id == "E-2":
                    work.drop_new("erp", "E-5")
            assert given == ["E-1", "E-2", "E-3", "E-4", "E-6"]

    def test_drop_source_takes_out_everything_of_that_source(self):
        with WorkList() as work:
            work.add_new("erp", new_item(1))
            work.add_new("shop", new_item(2, source="shop"))
            work.add(stored_item(3))
            work.add(stored_item(4, source="shop"))
            work.drop_source("erp")
            assert ids(work) == ["E-4", "E-2"]
            assert len(work) == 2
            assert work.add_new("shop", new_item(1, source="shop")) is None

    def test_remove_an_item_given_or_added(self):
        with WorkList() as work:
            kept = stored_item(3)
            work.add(kept)
            work.add_new("erp", new_item(1))
            work.add_new("erp", new_item(2))
            work.remove(next(item for item in work if item.case.accounting_invoice_id == "E-1"))
            work.remove(kept)
            assert ids(work) == ["E-2"]
            assert len(work) == 1

    def test_kept_out_new_items_are_listed(self):
        refusal = Refusal(RefusalKind.WAITING, "amount", "below min_amount")
        with WorkList() as work:
            work.add_new("erp", new_item(1))
            kept = new_item(2)
            kept.kept_out = refusal
            work.add_new("erp", kept)
            work.add_new("shop", new_item(3, source="shop"))
            (listed,) = work.new_kept_out("erp")
            assert listed.case.accounting_invoice_id == "E-2"
            assert listed.kept_out == refusal
            assert work.new_kept_out("shop") == []

    def test_items_held_then_written_out_keep_the_read_order(self, monkeypatch):
        monkeypatch.setattr(WorkList, "IN_MEMORY", 4)
        monkeypatch.setattr(WorkList, "CHUNK", 3)
        with WorkList() as work:
            for number in range(1, 11):
                assert work.add_new("erp", new_item(number)) is None
            assert work.add_new("shop", new_item(2, source="shop")) == "erp"  # a held one's
            assert work.add_new("shop", new_item(9, source="shop")) == "erp"  # a written one's
            assert work.drop_new("erp", "E-3")
            assert work.drop_new("erp", "E-8")
            assert work.add_new("erp", new_item(3)) is None  # goes to the end now
            assert ids(work) == [f"E-{n}" for n in (1, 2, 4, 5, 6, 7, 9, 10, 3)]
            assert len(work) == 9
            assert work.new_count("erp") == 9


@pytest.mark.usefixtures("held")
class TestCopies:
    def test_a_copy_loaded_by_a_callable_is_kept_by_reference(self):
        loads: list[str] = []

        def load() -> bytes:
            loads.append("loaded")
            return b"%PDF-1.4 copy"

        document = CallableDocument("20003.pdf", load)
        with WorkList() as work:
            work.add_new("erp", new_item(20003, document=document))
            (back,) = list(work)
            assert back.invoice is not None
            assert back.invoice.document is document
            assert loads == []  # nothing read by keeping it
            assert back.invoice.document.load() == b"%PDF-1.4 copy"

    def test_a_file_copy_is_written_out_by_its_path(self, tmp_path: Path):
        path = tmp_path / "20003.pdf"
        path.write_bytes(b"%PDF-1.4 file")
        with WorkList() as work:
            work.add_new("erp", new_item(20003, document=FileDocument(path)))
            (back,) = list(work)
        assert back.invoice is not None
        assert isinstance(back.invoice.document, FileDocument)
        assert back.invoice.document.load() == b"%PDF-1.4 file"

    def test_a_refused_second_source_leaves_the_owners_copy_alone(self):
        """The same id from another source is refused: its copy never takes the place of
        the owner's (another debtor's invoice would go to Kravia with this one)."""
        mine = CallableDocument("erp-1.pdf", lambda: b"%PDF erp")
        theirs = CallableDocument("shop-1.pdf", lambda: b"%PDF shop")
        with WorkList() as work:
            assert work.add_new("erp", new_item(1, document=mine)) is None
            assert work.add_new("shop", new_item(1, source="shop", document=theirs)) == "erp"
            (back,) = list(work)
            assert back.invoice is not None
            assert back.invoice.document is not None
            assert back.invoice.document.load() == b"%PDF erp"

    def test_a_copy_loaded_through_its_connector_is_written_out(self, held: int):
        """A query's or a download's loader (a bound method of the connector and its
        parameters) is written out with the item; the connector itself is kept once."""
        connector = _LoadingConnector()
        with WorkList() as work:
            for number in (1, 2):
                loader = functools.partial(connector.load, {"number": number}, str(number))
                document = CallableDocument(f"{number}.pdf", loader)
                work.add_new("erp", new_item(number, document=document))
            back = list(work)
            assert [item.invoice.document.load() for item in back if item.invoice] == [
                b"%PDF 1",
                b"%PDF 2",
            ]
            assert work._documents == {}  # nothing per invoice kept in memory
            assert list(work._connectors.values()) == ([] if held else [connector])

    def test_a_copy_dropped_with_its_item_is_let_go(self):
        document = CallableDocument("1.pdf", lambda: b"%PDF")
        with WorkList() as work:
            work.add_new("erp", new_item(1, document=document))
            work.drop_new("erp", "E-1")
            work.add_new("erp", new_item(1))
            (back,) = list(work)
            assert back.invoice is not None
            assert back.invoice.document is None


def kept_record(number: int, *, document: object = None) -> KeptRecord:
    item = new_item(number, document=document)
    assert item.invoice is not None
    return KeptRecord(item.invoice, f"invoices.csv:{number}", f"hash-{number}")


def kept_names(work: WorkList, source: str = "erp") -> list[str]:
    return [name for chunk in work.shelf(source, "stored").chunks() for name, _ in chunk]


def three_kept(work: WorkList) -> Shelf:
    """The records of invoices 1, 2 and 3 kept under their ids on erp's shelf `stored`."""
    shelf = work.shelf("erp", "stored")
    for number in (1, 2, 3):
        shelf.put(f"E-{number}", kept_record(number))
    return shelf


class TestKeptRecords:
    """The valid records a source's read keeps until it is complete: a few as objects, the rest
    written out, given back in the order they were kept, a chunk at a time."""

    def test_records_come_back_equal_in_the_order_kept_across_the_boundary(self, monkeypatch):
        monkeypatch.setattr(WorkList, "IN_MEMORY", 3)
        monkeypatch.setattr(WorkList, "CHUNK", 2)
        with WorkList() as work:
            kept = {f"E-{n}": kept_record(n) for n in range(1, 9)}
            for name, record in kept.items():
                work.shelf("erp", "stored").put(name, record)
            chunks = list(work.shelf("erp", "stored").chunks())
            assert all(len(chunk) <= 2 for chunk in chunks)
            back = [pair for chunk in chunks for pair in chunk]
            assert [name for name, _ in back] == list(kept)
            for name, record in back:
                assert record == kept[name]
            assert back[0][1] is kept["E-1"]  # held as an object
            assert back[-1][1] is not kept["E-8"]  # written out: a copy comes back

    @pytest.mark.parametrize("limit", [10, 1], ids=["held", "written out"])
    def test_keeping_a_name_again_replaces_its_record_in_its_place(self, monkeypatch, limit):
        monkeypatch.setattr(WorkList, "IN_MEMORY", limit)
        with WorkList() as work:
            shelf = three_kept(work)
            shelf.put("E-2", kept_record(20))
            back = [pair for chunk in work.shelf("erp", "stored").chunks() for pair in chunk]
            assert [name for name, _ in back] == ["E-1", "E-2", "E-3"]
            assert back[1][1].invoice.invoice_number == "20"

    @pytest.mark.parametrize("limit", [10, 1], ids=["held", "written out"])
    def test_a_record_forgotten_is_not_given(self, monkeypatch, limit):
        monkeypatch.setattr(WorkList, "IN_MEMORY", limit)
        with WorkList() as work:
            shelf = three_kept(work)
            shelf.forget("E-2")
            shelf.forget("E-9")  # never kept: nothing to do
            assert kept_names(work) == ["E-1", "E-3"]
            shelf.put("E-2", kept_record(2))  # kept again: after the others
            assert kept_names(work) == ["E-1", "E-3", "E-2"]

    def test_sources_keep_their_own_and_are_let_go_of_one_at_a_time(self, monkeypatch):
        monkeypatch.setattr(WorkList, "IN_MEMORY", 2)
        with WorkList() as work:
            for number in (1, 2, 3):
                work.shelf("erp", "stored").put(f"E-{number}", kept_record(number))
                work.shelf("shop", "stored").put(f"E-{number}", kept_record(number + 10))
            assert kept_names(work, "erp") == ["E-1", "E-2", "E-3"]
            assert [
                r.invoice.invoice_number
                for c in work.shelf("shop", "stored").chunks()
                for _, r in c
            ] == [
                "11",
                "12",
                "13",
            ]
            work.drop_kept("erp")
            assert kept_names(work, "erp") == []
            assert kept_names(work, "shop") == ["E-1", "E-2", "E-3"]
            work.drop_source("shop")  # a failed read lets go of its kept records too
            assert kept_names(work, "shop") == []
            assert work.new_count("shop") == 0

    def test_copies_come_back_with_their_records(self, monkeypatch, tmp_path: Path):
        """A file's copy by its path, a connector's loader written out, a lambda by reference."""
        monkeypatch.setattr(WorkList, "IN_MEMORY", 0)
        path = tmp_path / "1.pdf"
        path.write_bytes(b"%PDF file")
        connector = _LoadingConnector()
        documents = {
            "E-1": FileDocument(path),
            "E-2": CallableDocument("2.pdf", functools.partial(connector.load, {"number": 2}, "2")),
            "E-3": CallableDocument("3.pdf", lambda: b"%PDF lambda"),
        }
        with WorkList() as work:
            for number, document in enumerate(documents.values(), start=1):
                work.shelf("erp", "stored").put(
                    f"E-{number}", kept_record(number, document=document)
                )
            back = {
                name: record
                for chunk in work.shelf("erp", "stored").chunks()
                for name, record in chunk
            }
            loaded = {name: record.invoice.document.load() for name, record in back.items()}
            assert loaded == {"E-1": b"%PDF file", "E-2": b"%PDF 2", "E-3": b"%PDF lambda"}
            assert back["E-3"].invoice.document is documents["E-3"]
            work.drop_kept("erp")
            assert work._kept_documents == {}

    def test_a_full_temporary_disk_fails_the_keeping_with_a_clear_error(self, monkeypatch):
        monkeypatch.setattr(WorkList, "IN_MEMORY", 0)
        with WorkList() as work:
            work.shelf("erp", "stored").put("E-1", kept_record(1))
            assert work._db is not None
            work._db.execute("PRAGMA max_page_count = 1")

            def fill() -> None:
                for number in range(2, 200):
                    work.shelf("erp", "stored").put(f"E-{number}", kept_record(number))

            with pytest.raises(WorkListError, match="temporary file"):
                fill()
            assert work.broken is not None
            work.drop_source("erp")  # what a failed read does: no second error


class _LoadingConnector(Connector):
    def __init__(self) -> None:
        super().__init__(ConnectorSettings(), base_dir=Path())

    def read(self) -> Iterator[SourceRecord]:
        return iter(())

    def load(self, binds: dict[str, int], number: str) -> bytes:
        return f"%PDF {binds['number']}".encode()


def test_a_full_temporary_disk_breaks_the_list_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(WorkList, "IN_MEMORY", 0)
    work = WorkList()
    work.add_new("erp", new_item(1))
    assert work._db is not None
    work._db.execute("PRAGMA max_page_count = 1")  # as good as a full disk from here on

    def fill() -> None:
        for number in range(2, 200):
            work.add_new("erp", new_item(number))

    with pytest.raises(WorkListError, match="full") as raised:
        fill()
    assert "temporary file" in str(raised.value)
    assert work.broken is not None
    with pytest.raises(WorkListError):
        list(work)  # nothing more is given out
    work.drop_source("erp")  # what a failed read does: no second error
    work.close()


def test_a_closed_list_holds_nothing(monkeypatch):
    monkeypatch.setattr(WorkList, "IN_MEMORY", 1)
    work = WorkList()
    work.add_new("erp", new_item(1, document=CallableDocument("1.pdf", lambda: b"%PDF")))
    work.add_new("erp", new_item(2, document=CallableDocument("2.pdf", lambda: b"%PDF")))
    work.close()
    assert work._held == {}
    assert work._documents == {}
    with pytest.raises(Exception, match="closed"):
        list(work)
