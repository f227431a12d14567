"""The engine's two-phase (stamped) read, with a connector over rows in memory.

A connector that offers `stamped_read()` first hands the engine a stamp per record (ids and
digest); the engine then asks for the full records of only the stamps that need a look. The
outcome must be exactly that of a plain read: the same counts, quarantine and plan; only the
work differs.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import Sim, invoice_record, load, run_pass, write_config

import kravia_sync.engine.reading as reading_module
from kravia_sync.connector import (
    Connector,
    ConnectorError,
    ConnectorSettings,
    PaymentRecord,
    RecordError,
    RecordStamp,
    SourceRecord,
    StampedRead,
)
from kravia_sync.documents import CallableDocument
from kravia_sync.engine.summary import RunSummary
from kravia_sync.engine.worklist import WorkList, WorkListError
from kravia_sync.state.store import StateStore
from kravia_sync.testing import minimal_pdf

ROWS = 30


class TableConnector(Connector):
    """Invoice rows in memory (and payments and errors among them), read plainly or in two
    phases, counting what it builds."""

    payments_default = "records"

    def __init__(
        self, rows: list[dict[str, Any] | PaymentRecord | RecordError], *, stamped: bool = True
    ) -> None:
        super().__init__(ConnectorSettings(), base_dir=Path())
        self.rows = rows
        self.stamped = stamped
        self.plain_reads = 0
        self.asked: list[list[str]] = []  # the keys asked for in each second phase
        self.between_phases: list[dict[str, Any]] | None = None  # the rows phase two sees

    def invoices(self, rows: list[Any] | None = None) -> list[dict[str, Any]]:
        return [row for row in (rows or self.rows) if isinstance(row, dict)]

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        self.plain_reads += 1
        for row in self.rows:
            yield record_of(row) if isinstance(row, dict) else row

    def stamped_read(self) -> StampedRead | None:
        return TableRead(self) if self.stamped else None


class TableRead(StampedRead):
    def __init__(self, connector: TableConnector) -> None:
        self.connector = connector

    def stamps(self) -> Iterator[RecordStamp | PaymentRecord | RecordError]:
        for row in self.connector.rows:
            if not isinstance(row, dict):
                yield row
                continue
            yield RecordStamp(
                key=key_of(row),
                fields={"invoice_number": row.get("invoice_number")},
                digest=digest_of(row),
                has_document=has_document(row),
            )

    def records(self, stamps: Sequence[RecordStamp]) -> Iterator[SourceRecord]:
        self.connector.asked.append(sorted(stamp.key for stamp in stamps))
        wanted = {stamp.digest for stamp in stamps}
        rows = self.connector.invoices(self.connector.between_phases)
        # In reverse: the engine must not depend on the order of the second phase.
        for row in reversed(rows):
            if digest_of(row) in wanted:
                yield record_of(row)


def digest_of(row: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(row, sort_keys=True).encode(), digest_size=16).hexdigest()


def key_of(row: dict[str, Any]) -> str:
    return f"invoice {row.get('invoice_number')} ({row['debtor_number']})"


def has_document(row: dict[str, Any]) -> bool:
    return int(row["debtor_number"][-1], 36) % 2 == 1


def record_of(row: dict[str, Any]) -> SourceRecord:
    number = str(row.get("invoice_number"))
    document = (
        CallableDocument(f"{number}.pdf", lambda: minimal_pdf(number))
        if has_document(row)
        else None
    )
    return SourceRecord(key=key_of(row), fields=dict(row), document=document, digest=digest_of(row))


def payment(payment_id: str, invoice: str, amount: str) -> PaymentRecord:
    return PaymentRecord(
        key=f"payment {payment_id}",
        fields={
            "payment_id": payment_id,
            "kind": "payment",
            "date": invoice_record(1)["invoice_date"],
            "amount": amount,
            "invoice_number": invoice,
        },
    )


def table(count: int = ROWS) -> list[dict[str, Any] | PaymentRecord | RecordError]:
    return [invoice_record(30_000 + number) for number in range(count)]


def passes(
    monkeypatch: pytest.MonkeyPatch, connector: TableConnector, config: Path, **kwargs: Any
) -> RunSummary:
    monkeypatch.setattr(reading_module, "build_connector", lambda *_: connector)
    return run_pass(config, **kwargs)


def outcome(summary: RunSummary) -> dict[str, Any]:
    return {
        "counts": dict(summary.counts),
        "problems": summary.problems,  # in the order found
        "planned": sorted(map(repr, summary.planned)),
    }


def stored(config: Path) -> dict[str, tuple[str, str, str]]:
    """Each stored case's phase, record hash and record key."""
    with StateStore(load(config).state_path) as store:
        return {
            aid: (case.phase.value, case.record_hash, case.record_key)
            for aid, case in store.load_cases("files").items()
        }


@pytest.fixture
def config(tmp_path: Path, sim: Sim) -> Path:
    return write_config(tmp_path, sim.base_url)


class TestStampedRead:
    def test_passes_end_as_a_plain_read_ends(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Sim
    ) -> None:
        """New, duplicated, invalid and id-less rows, payments and a record error, copies on
        some: three passes with changes between them give the same counts, problems (in the
        same order), plan and stored cases (hashes and keys) read plainly or in two phases."""

        def scenario() -> list[dict[str, Any] | PaymentRecord | RecordError]:
            rows = table()
            rows[5] = {**rows[5], "invoice_number": rows[3]["invoice_number"]}  # duplicates
            rows[7] = {**rows[7], "amount": "-5"}  # invalid
            rows[9] = {**rows[9], "invoice_number": ""}  # no id at all
            rows.insert(12, payment("P1", str(rows[2]["invoice_number"]), "100.00"))
            rows.insert(15, RecordError("line 15", "amount", "not a number"))
            return rows

        outcomes: dict[bool, list[Any]] = {}
        for stamped in (True, False):
            sim.simulator.reset()  # a Kravia of its own: one that had the cases would adopt
            directory = tmp_path / str(stamped)
            directory.mkdir()
            rows = scenario()
            connector = TableConnector(rows, stamped=stamped)
            config = write_config(directory, sim.base_url)
            seen = [outcome(passes(monkeypatch, connector, config, dry_run=True))]
            seen.append(outcome(passes(monkeypatch, connector, config)))
            seen.append(stored(config))
            rows[4] = {**rows[4], "amount": "99999.50"}  # changed after registration
            rows[7] = {**rows[7], "amount": "700.00"}  # valid now
            del rows[20]  # gone
            seen.append(outcome(passes(monkeypatch, connector, config)))
            seen.append(outcome(passes(monkeypatch, connector, config)))
            seen.append(stored(config))
            outcomes[stamped] = seen
            assert connector.plain_reads == (0 if stamped else 4)

        assert outcomes[True] == outcomes[False]
        first_plan = outcomes[True][0]
        rows = scenario()
        # In read order: the duplicate (then the first of the pair), the invalid, the id-less,
        # the record error.
        expected = [key_of(rows[index]) for index in (5, 3, 7, 9)]  # type: ignore[arg-type]
        assert [problem["record"] for problem in first_plan["problems"]] == [*expected, "line 15"]
        assert first_plan["counts"]["new"] == ROWS - 4
        assert outcomes[True][3]["counts"]["changed"] == 1
        assert outcomes[True][3]["counts"]["gone"] == 1

    def test_an_unchanged_source_builds_no_record_and_a_change_builds_one(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        rows = table()
        connector = TableConnector(rows)
        first = passes(monkeypatch, connector, config)
        assert first.counts["new"] == ROWS
        assert len(sim.cases()) == ROWS
        assert connector.asked == [sorted(key_of(row) for row in rows)]
        calls = sim.calls_total()

        connector.asked = []
        second = passes(monkeypatch, connector, config)

        assert connector.asked == []  # no second phase at all
        assert second.counts["unchanged"] == ROWS
        assert second.counts["read"] == ROWS
        assert sim.calls_total() == calls

        rows[4]["amount"] = "9999.50"
        third = passes(monkeypatch, connector, config)

        assert connector.asked == [[key_of(rows[4])]]
        assert third.counts["changed"] == 1
        assert third.counts["unchanged"] == ROWS - 1
        assert connector.plain_reads == 0

    def test_a_duplicate_is_judged_in_read_order_whatever_order_phase_two_has(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        """A registered invoice whose number a new row takes too: only the new row is
        refused (as a plain read would); two new rows sharing a number: both are."""
        rows = table(6)
        connector = TableConnector(rows)
        passes(monkeypatch, connector, config)
        rows.append({**invoice_record(99), "invoice_number": rows[2]["invoice_number"]})
        rows.append({**invoice_record(98), "debtor_number": "X1", "invoice_number": "777"})
        rows.append({**invoice_record(97), "debtor_number": "X2", "invoice_number": "777"})

        summary = passes(monkeypatch, connector, config)

        refused = {problem["record"] for problem in summary.problems}
        assert refused == {key_of(rows[6]), key_of(rows[7]), key_of(rows[8])}
        assert summary.counts.get("new", 0) == 0
        assert len(sim.cases()) == 6

    def test_full_records_come_in_batches_judged_in_read_order(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        """Chunks and batches of 4: a duplicate pair split across batches is refused whole."""
        monkeypatch.setattr(reading_module, "READ_CHUNK", 4)
        monkeypatch.setattr(reading_module, "STAMPED_BATCH", 4)
        monkeypatch.setattr(reading_module, "STAMPED_MAX_BATCHES", 100)
        rows = table()
        rows[21] = {**rows[21], "invoice_number": rows[1]["invoice_number"]}
        connector = TableConnector(rows)

        summary = passes(monkeypatch, connector, config)

        assert connector.plain_reads == 0
        assert len(connector.asked) == 8  # 30 records, 4 at a time
        refused = {problem["record"] for problem in summary.problems}
        assert refused == {key_of(rows[1]), key_of(rows[21])}
        assert summary.counts["new"] == ROWS - 2
        assert len(sim.cases()) == ROWS - 2

    def test_too_many_batches_read_the_source_whole(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        monkeypatch.setattr(reading_module, "READ_CHUNK", 5)
        monkeypatch.setattr(reading_module, "STAMPED_BATCH", 5)
        monkeypatch.setattr(reading_module, "STAMPED_MAX_BATCHES", 2)
        rows = table()
        connector = TableConnector(rows)

        summary = passes(monkeypatch, connector, config)

        assert connector.plain_reads == 1
        assert len(connector.asked) == 2
        assert summary.counts["new"] == ROWS
        assert len(sim.cases()) == ROWS

    def test_rows_changed_between_the_phases_read_the_source_whole(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        """A second phase that misses a record of the first (a volatile query) costs a whole
        read, never a lost or half-judged record."""
        rows = table(8)
        connector = TableConnector(rows)
        connector.between_phases = [{**row, "description": "changed"} for row in rows]

        summary = passes(monkeypatch, connector, config)

        assert len(connector.asked) == 1
        assert connector.plain_reads == 1
        assert summary.status == "done"
        assert summary.counts["new"] == 8
        assert len(sim.cases()) == 8


class FailingConnector(TableConnector):
    """Reads `fail_after` rows, then the source fails (a dropped connection)."""

    def __init__(self, rows: list[Any], fail_after: int) -> None:
        super().__init__(rows, stamped=False)
        self.fail_after = fail_after

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        for count, record in enumerate(super().read()):
            if count == self.fail_after:
                raise ConnectorError("the connection to the source was lost")
            yield record


class TestTheWorkList:
    """New invoices wait in the pass's work list, out of memory, from the moment they are read
    (`kravia_sync.engine.worklist`)."""

    def test_a_read_that_fails_part_way_drives_none_of_what_it_read(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        """Invoices read before the failure are valid and new, but the read is not whole (a
        duplicate of one could come later): none is sent, in this pass or as a leftover."""
        connector = FailingConnector(table(), fail_after=12)

        summary = passes(monkeypatch, connector, config)

        assert summary.status == "failed"
        assert "connection to the source was lost" in (summary.sources[0].error or "")
        assert sim.cases() == []
        assert stored(config) == {}

        connector.fail_after = ROWS + 1  # the source is back: every invoice once
        summary = passes(monkeypatch, connector, config)
        assert summary.status == "done"
        assert summary.counts["new"] == ROWS
        assert sorted(case["accountingInvoiceId"] for case in sim.cases()) == sorted(
            str(30_000 + number) for number in range(ROWS)
        )

    def test_new_invoices_given_a_few_at_a_time_are_each_sent_once_with_their_copies(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        monkeypatch.setattr(WorkList, "CHUNK", 4)
        rows = table()
        rows[7] = {**rows[7], "invoice_number": rows[20]["invoice_number"]}  # a duplicate pair
        connector = TableConnector(rows, stamped=False)

        summary = passes(monkeypatch, connector, config)

        assert summary.status == "attention"  # the duplicate pair
        assert summary.counts["new"] == ROWS - 2
        cases = sim.cases()
        assert len(cases) == ROWS - 2
        assert len({case["accountingInvoiceId"] for case in cases}) == ROWS - 2
        with_copy = [row for row in rows if isinstance(row, dict) and has_document(row)]
        assert sum(1 for case in cases if case.get("documents")) == len(
            [row for row in with_copy if row["invoice_number"] != rows[20]["invoice_number"]]
        )
        assert {phase for phase, _, _ in stored(config).values()} == {"started"}

    def test_an_id_of_a_second_source_is_refused_and_its_copy_goes_nowhere(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Sim
    ) -> None:
        """`shop` (id_prefix 3000) has invoice 4 under the id of `files`' invoice 30004,
        which is written out (the fifth new one): shop's is refused, and 30004 goes to Kravia
        with its own copy, not the other debtor's."""
        config = write_config(
            tmp_path,
            sim.base_url,
            extra='\n[[sources]]\nname = "shop"\nconnector = "folder"\nid_prefix = "3000"\n'
            '[sources.settings]\npath = "shop"\n',
        )
        files = LabelledCopies([invoice_record(30_000 + n) for n in range(5)], "files", "")
        shop = LabelledCopies([invoice_record(4, debtor_number="S1")], "shop", "3000")
        connectors = {"files": files, "shop": shop}
        monkeypatch.setattr(
            reading_module, "build_connector", lambda _settings, source: connectors[source.name]
        )

        summary = run_pass(config)

        assert [problem["record"] for problem in summary.problems] == [key_of(shop.rows[0])]
        copies = {
            case["accountingInvoiceId"]: [
                sim.simulator.document_bytes(case["id"], 0) == minimal_pdf(f"files-{number}")
                for number in [case["accountingInvoiceId"]]
            ]
            for case in sim.cases()
        }
        assert copies == {str(30_000 + n): [True] for n in range(5)}

    def test_a_full_temporary_disk_fails_the_pass_before_anything_is_sent(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        opened = WorkList._file

        def full_disk(self: WorkList) -> sqlite3.Connection:
            db = opened(self)
            db.execute("PRAGMA max_page_count = 3")  # no room beyond a few items
            return db

        monkeypatch.setattr(WorkList, "_file", full_disk)

        summary = passes(monkeypatch, TableConnector(table(), stamped=False), config)

        assert summary.status == "failed"
        assert "could not be kept in a temporary file" in (summary.error or "")
        assert summary.counts["invalid"] == 0  # not blamed on the records
        assert sim.cases() == []
        assert stored(config) == {}

    def test_a_temporary_file_failing_while_the_work_is_given_out_fails_the_pass_cleanly(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        """The work list's file fails after a few cases are given out (a disk error): the
        cases under way are driven to the end, the pass fails with a message that says what
        was and was not driven, and the next pass sends the rest, each invoice once."""
        iterate = WorkList.__iter__

        def failing_after_three(self: WorkList) -> Iterator[Any]:
            for given, item in enumerate(iterate(self)):
                if given == 3:
                    raise WorkListError("the invoices this pass read could not be kept") from (
                        sqlite3.OperationalError("disk I/O error")
                    )
                yield item

        monkeypatch.setattr(WorkList, "__iter__", failing_after_three)
        summary = passes(monkeypatch, TableConnector(table(), stamped=False), config)

        assert summary.status == "failed"
        assert "could not be read back (disk I/O error)" in (summary.error or "")
        assert "the rest were sent nothing" in (summary.error or "")
        started = [case for case in sim.cases() if case["started"]]
        # The canary's case, driven on its own first, and the three given out.
        assert len(started) == 4, "only the cases given out were driven"
        assert all(phase == "started" for phase, _, _ in stored(config).values())
        monkeypatch.setattr(WorkList, "__iter__", iterate)

        again = passes(monkeypatch, TableConnector(table(), stamped=False), config)

        assert again.status == "done", again.as_dict()
        ids = sorted(case["accountingInvoiceId"] for case in sim.cases())
        assert len(ids) == len(set(ids)) == ROWS
        assert all(case["started"] for case in sim.cases())

    @pytest.mark.parametrize("dry_run", [False, True], ids=["the canary's scan", "plan"])
    def test_a_temporary_file_failing_before_the_drive_fails_the_pass_cleanly(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim, dry_run: bool
    ) -> None:
        """The work list's file fails at its first item: when the canary looks for its case,
        or as `plan` lists the work. The pass fails saying so, nothing is sent, no traceback."""
        iterate = WorkList.__iter__

        def failing_at_once(self: WorkList) -> Iterator[Any]:
            for _ in iterate(self):
                raise WorkListError("the invoices this pass read could not be kept") from (
                    sqlite3.OperationalError("disk I/O error")
                )
            yield from ()

        monkeypatch.setattr(WorkList, "__iter__", failing_at_once)
        summary = passes(
            monkeypatch, TableConnector(table(), stamped=False), config, dry_run=dry_run
        )

        assert summary.status == "failed"
        assert "could not be kept" in (summary.error or "")
        assert sim.cases() == []


class LabelledCopies(TableConnector):
    """Rows whose copy names the source and the id it came from."""

    def __init__(self, rows: list[Any], label: str, prefix: str) -> None:
        super().__init__(rows, stamped=False)
        self.label = label
        self.prefix = prefix

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        for row in self.rows:
            assert isinstance(row, dict)
            content = minimal_pdf(f"{self.label}-{self.prefix}{row['invoice_number']}")
            document = CallableDocument(f"{row['invoice_number']}.pdf", lambda c=content: c)
            yield SourceRecord(key=key_of(row), fields=dict(row), document=document)
