"""A new invoice's copy is read once a pass: the read that checks it (is it a PDF?) hands the
bytes to the upload, instead of the upload fetching it again (a second HTTP call for a REST
source, a second query for an SQL one). Within a budget: past `COPIES_IN_MEMORY_BYTES` a copy
is read (and checked) again right before it is sent, and what is uploaded is what was checked
then."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import Sim, invoice_record, run_pass, write_config

import kravia_sync.engine.reading as reading_module
from kravia_sync.connector import Connector, ConnectorSettings, SourceRecord
from kravia_sync.documents import CallableDocument
from kravia_sync.engine.plan import Change
from kravia_sync.engine.worklist import WorkItem, WorkList
from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.testing import minimal_pdf

NUMBERS = range(70_001, 70_009)


class CountingConnector(Connector):
    """Invoices with copies fetched by a loader that counts its calls (as a REST source
    fetches a PDF per call)."""

    def __init__(self) -> None:
        super().__init__(ConnectorSettings(), base_dir=Path())
        self.loads: Counter[str] = Counter()

    def copy_of(self, number: str) -> bytes:
        return minimal_pdf(f"Faktura {number}") + number.encode() * 50

    def read(self) -> Iterator[SourceRecord]:
        for number in map(str, NUMBERS):
            yield SourceRecord(
                key=f"invoice {number}",
                fields=invoice_record(int(number)),
                document=CallableDocument(f"{number}.pdf", self._loader(number)),
            )

    def _loader(self, number: str):
        def load() -> bytes:
            self.loads[number] += 1
            return self.copy_of(number)

        return load


def uploaded(sim: Sim) -> dict[str, bytes]:
    """Each case's invoice number and the bytes of its one document."""
    found = {}
    for case in sim.cases():
        assert len(case["documents"]) == 1, case
        found[case["invoiceNo"]] = sim.simulator.document_bytes(case["id"], 0)
    return found


def test_each_new_invoices_copy_is_read_once_and_uploaded_as_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Sim
) -> None:
    connector = CountingConnector()
    monkeypatch.setattr(reading_module, "build_connector", lambda *_: connector)
    monkeypatch.setattr(WorkList, "IN_MEMORY", 5_000)  # the suite's own default writes out

    summary = run_pass(write_config(tmp_path, sim.base_url))

    assert summary.status == "done", summary.as_dict()
    assert {case["status"] for case in sim.cases()} == {"CollectionStarted"}
    assert uploaded(sim) == {str(n): connector.copy_of(str(n)) for n in NUMBERS}
    assert connector.loads == Counter({str(n): 1 for n in NUMBERS})


def test_past_the_budget_a_copy_is_read_again_before_it_is_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Sim
) -> None:
    """Room for three copies: those three are read once, the other five twice, and every
    upload is the copy byte for byte."""
    connector = CountingConnector()
    size = len(connector.copy_of(str(NUMBERS[0])))
    monkeypatch.setattr(WorkList, "COPIES_IN_MEMORY_BYTES", 3 * size)
    monkeypatch.setattr(WorkList, "IN_MEMORY", 5_000)
    monkeypatch.setattr(reading_module, "build_connector", lambda *_: connector)

    summary = run_pass(write_config(tmp_path, sim.base_url))

    assert summary.status == "done", summary.as_dict()
    assert uploaded(sim) == {str(n): connector.copy_of(str(n)) for n in NUMBERS}
    assert sorted(connector.loads.values()) == [1, 1, 1, 2, 2, 2, 2, 2]


def _item(number: int, copy: bytes | None) -> WorkItem:
    case = CaseState(
        accounting_invoice_id=str(number),
        source="files",
        record_key=f"invoice {number}",
        invoice_number=str(number),
        phase=Phase.NEW,
        fingerprint="",
        record_hash="",
        has_document=True,
        first_seen_at=datetime(2026, 12, 6, tzinfo=UTC),
        updated_at=datetime(2026, 12, 6, tzinfo=UTC),
    )
    return WorkItem(case, None, Change.NEW, copy=copy)


def test_a_written_out_item_keeps_no_copy_and_gives_its_room_back() -> None:
    """Items written out to the work list's file carry no copy (it is read and checked again
    before it is sent), and the room their copy took goes to the next ones."""
    with WorkList() as work:
        work.IN_MEMORY = 1  # type: ignore[misc]
        work.COPIES_IN_MEMORY_BYTES = 10  # type: ignore[misc]
        held = _item(1, work.kept_copy(b"x" * 6))
        assert held.copy == b"x" * 6
        assert work.kept_copy(b"y" * 6) is None  # over the budget
        written = _item(2, work.kept_copy(b"z" * 4))
        assert written.copy == b"z" * 4
        assert work.add_new("files", held) is None
        assert work.add_new("files", written) is None  # written out: its copy let go
        assert written.copy is None
        assert work.kept_copy(b"w" * 4) == b"w" * 4  # its room is free again
        assert [item.copy for item in work] == [b"x" * 6, None]


class ChangingConnector(CountingConnector):
    """Copies that can change after the read (a file replaced while the pass runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.replaced: dict[str, bytes] = {}

    def copy_of(self, number: str) -> bytes:
        return self.replaced.get(number, super().copy_of(number))


@pytest.mark.parametrize("kept", ["written out", "past the budget"])
def test_a_copy_that_changes_after_the_read_is_checked_again_before_it_is_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Sim, kept: str
) -> None:
    """Where the bytes checked at the read are not kept with the item (written out, or past
    the budget), the copy is read and checked again right before the register: one that is no
    PDF any more is not registered at all (not registered and then stuck without its copy),
    and one replaced by another PDF goes up as it was checked then."""
    connector = ChangingConnector()
    monkeypatch.setattr(reading_module, "build_connector", lambda *_: connector)
    if kept == "written out":
        monkeypatch.setattr(WorkList, "IN_MEMORY", 1)
    else:
        monkeypatch.setattr(WorkList, "IN_MEMORY", 5_000)
        size = len(connector.copy_of(str(NUMBERS[0])))
        monkeypatch.setattr(WorkList, "COPIES_IN_MEMORY_BYTES", size)
    broken, other = str(NUMBERS[-1]), str(NUMBERS[-2])
    iterate = WorkList.__iter__

    def replaced_once_read(self: WorkList) -> Iterator[WorkItem]:
        connector.replaced[broken] = b"<html>not a PDF any more</html>"
        connector.replaced[other] = minimal_pdf("another copy")
        return iterate(self)

    monkeypatch.setattr(WorkList, "__iter__", replaced_once_read)

    run_pass(write_config(tmp_path, sim.base_url))

    sent = uploaded(sim)
    assert broken not in sent
    assert sent[other] == minimal_pdf("another copy")
    assert {case["status"] for case in sim.cases()} == {"CollectionStarted"}
    assert len(sent) == len(NUMBERS) - 1


def test_a_refused_or_dropped_item_gives_its_copys_room_back() -> None:
    """An item refused (another source has its id) or taken out again (a duplicate, a failed
    read) no longer counts against the budget of copies: the room goes to the next ones."""
    with WorkList() as work:
        work.COPIES_IN_MEMORY_BYTES = 10  # type: ignore[misc]
        assert work.add_new("files", _item(1, work.kept_copy(b"x" * 6))) is None
        refused = _item(1, work.kept_copy(b"y" * 4))
        assert work.add_new("shop", refused) == "files"
        assert work.kept_copy(b"z" * 4) == b"z" * 4  # the refused one's room
        assert work.drop_new("files", "1")
        assert work.kept_copy(b"w" * 6) == b"w" * 6  # the dropped one's room
        assert work.add_new("files", _item(2, b"w" * 6)) is None
        work.drop_source("files")
        assert work.kept_copy(b"v" * 6) == b"v" * 6  # the failed read's room


@pytest.mark.parametrize("kept", ["held", "written out", "past the budget"])
def test_a_dry_run_reads_each_copy_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Sim, kept: str
) -> None:
    """`plan` sends nothing: it goes by the check made at the read, whether the bytes were
    kept or not (a second read would be a second call to a REST source, for nothing)."""
    connector = CountingConnector()
    monkeypatch.setattr(reading_module, "build_connector", lambda *_: connector)
    monkeypatch.setattr(WorkList, "IN_MEMORY", 1 if kept == "written out" else 5_000)
    if kept == "past the budget":
        monkeypatch.setattr(WorkList, "COPIES_IN_MEMORY_BYTES", 1)

    summary = run_pass(write_config(tmp_path, sim.base_url), dry_run=True)

    assert summary.status != "failed", summary.as_dict()
    assert len(summary.planned) == len(NUMBERS)
    assert connector.loads == Counter({str(n): 1 for n in NUMBERS})
    assert sim.cases() == []
