"""The engine's two-phase (stamped) read, with a connector over rows in memory.

A connector that offers `stamped_read()` first hands the engine a stamp per record (ids and
digest); the engine then asks for the full records of only the stamps that need a look. The
outcome must be exactly that of a plain read: the same counts, quarantine and plan; only the
work differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import Sim, invoice_record, run_pass, write_config

import kravia_sync.reconcile as reconcile_module
from kravia_sync.connector import (
    Connector,
    ConnectorSettings,
    PaymentRecord,
    RecordError,
    RecordStamp,
    SourceRecord,
    StampedRead,
)
from kravia_sync.reconcile import RunSummary

ROWS = 30


class TableConnector(Connector):
    """Invoice rows in memory, read plainly or in two phases, counting what it builds."""

    def __init__(self, rows: list[dict[str, Any]], *, stamped: bool = True) -> None:
        super().__init__(ConnectorSettings(), base_dir=Path())
        self.rows = rows
        self.stamped = stamped
        self.plain_reads = 0
        self.asked: list[list[str]] = []  # the keys asked for in each second phase
        self.between_phases: list[dict[str, Any]] | None = None  # the rows phase two sees

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        self.plain_reads += 1
        for row in self.rows:
            yield record_of(row)

    def stamped_read(self) -> StampedRead | None:
        return TableRead(self) if self.stamped else None


class TableRead(StampedRead):
    def __init__(self, connector: TableConnector) -> None:
        self.connector = connector

    def stamps(self) -> Iterator[RecordStamp | PaymentRecord | RecordError]:
        for row in self.connector.rows:
            yield RecordStamp(
                key=key_of(row),
                fields={"invoice_number": row.get("invoice_number")},
                digest=digest_of(row),
                has_document=False,
            )

    def records(self, stamps: Sequence[RecordStamp]) -> Iterator[SourceRecord]:
        self.connector.asked.append(sorted(stamp.key for stamp in stamps))
        wanted = {stamp.digest for stamp in stamps}
        rows = self.connector.between_phases or self.connector.rows
        # In reverse: the engine must not depend on the order of the second phase.
        for row in reversed(rows):
            if digest_of(row) in wanted:
                yield record_of(row)


def digest_of(row: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(row, sort_keys=True).encode(), digest_size=16).hexdigest()


def key_of(row: dict[str, Any]) -> str:
    return f"invoice {row.get('invoice_number')} ({row['debtor_number']})"


def record_of(row: dict[str, Any]) -> SourceRecord:
    return SourceRecord(key=key_of(row), fields=dict(row), digest=digest_of(row))


def table(count: int = ROWS) -> list[dict[str, Any]]:
    return [invoice_record(30_000 + number) for number in range(count)]


def passes(
    monkeypatch: pytest.MonkeyPatch, connector: TableConnector, config: Path, **kwargs: Any
) -> RunSummary:
    monkeypatch.setattr(reconcile_module, "build_connector", lambda *_: connector)
    return run_pass(config, **kwargs)


def outcome(summary: RunSummary) -> dict[str, Any]:
    return {
        "counts": dict(summary.counts),
        "problems": summary.problems,
        "planned": sorted(map(repr, summary.planned)),
    }


@pytest.fixture
def config(tmp_path: Path, sim: Sim) -> Path:
    return write_config(tmp_path, sim.base_url)


class TestStampedRead:
    def test_the_plan_is_that_of_a_plain_read(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Sim
    ) -> None:
        """New, duplicated, invalid and id-less rows: the same counts, problems and plan."""
        rows = table()
        rows[5]["invoice_number"] = rows[3]["invoice_number"]  # a duplicate pair
        rows[7]["amount"] = "-5"  # invalid
        rows[9]["invoice_number"] = ""  # no id at all
        plans = []
        for stamped in (True, False):
            directory = tmp_path / str(stamped)
            directory.mkdir()
            connector = TableConnector(rows, stamped=stamped)
            config = write_config(directory, sim.base_url)
            plans.append(outcome(passes(monkeypatch, connector, config, dry_run=True)))
            assert connector.plain_reads == (0 if stamped else 1)

        assert plans[0] == plans[1]
        problems = {problem["record"]: problem["field"] for problem in plans[0]["problems"]}
        assert problems[key_of(rows[3])] == "accounting_invoice_id"
        assert problems[key_of(rows[5])] == "accounting_invoice_id"
        assert problems[key_of(rows[7])] == "amount"
        assert key_of(rows[9]) in problems
        assert plans[0]["counts"]["new"] == ROWS - 4

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

    def test_many_changes_read_the_source_whole(
        self, monkeypatch: pytest.MonkeyPatch, config: Path, sim: Sim
    ) -> None:
        monkeypatch.setattr(reconcile_module, "STAMPED_MAX_WANTED", 5)
        rows = table()
        connector = TableConnector(rows)

        summary = passes(monkeypatch, connector, config)

        assert connector.plain_reads == 1
        assert connector.asked == []
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
