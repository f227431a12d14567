"""An invoice whose id changes in its source after its case was registered is never
registered again: the case keeps its accountingInvoiceId and the new id becomes its alias,
or, where the record cannot be told apart from another, it is quarantined naming both ids."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sql_fixture import INVOICES, QUERY, Backend
from support import Sim, invoice_record, load, run_cli, run_pass, write_config
from test_payments_e2e import money_calls
from test_sql_connector import fixture_settings, sql_config

from kravia_sync.engine.drift import Adopted, Conflict, Drifting, judge_drifts
from kravia_sync.engine.gate import hold_reason
from kravia_sync.state.store import StateStore


def write_records(folder: Path, records: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "invoices.json").write_text(json.dumps(records), encoding="utf-8")


def store_of(config: Path) -> StateStore:
    return StateStore(load(config).state_path)


def quarantine_of(config: Path) -> dict[str, dict[str, Any]]:
    with store_of(config) as store:
        return {entry["record_key"]: entry for entry in store.quarantined()}


class TestJudgement:
    """`judge_drifts` alone: adopt only what nothing else can claim."""

    def test_a_registered_number_whose_case_is_not_read_is_adopted(self) -> None:
        verdicts = judge_drifts([Drifting("INV-7", "7", "row 1", ("7",))], seen=set())

        assert verdicts == [Adopted("INV-7", "7")]

    def test_the_case_read_too_is_a_conflict_naming_both_ids(self) -> None:
        (verdict,) = judge_drifts([Drifting("INV-7", "7", "row 1", ("7",))], seen={"7"})

        assert isinstance(verdict, Conflict)
        assert "'7'" in verdict.reason
        assert "'INV-7'" in verdict.reason

    def test_two_new_ids_for_one_case_are_both_conflicts(self) -> None:
        verdicts = judge_drifts(
            [
                Drifting("INV-7", "7", "row 1", ("7",)),
                Drifting("NEW-7", "7", "row 2", ("7",)),
            ],
            seen=set(),
        )

        assert [type(v) for v in verdicts] == [Conflict, Conflict]

    def test_a_number_of_several_cases_is_a_conflict(self) -> None:
        (verdict,) = judge_drifts([Drifting("INV-7", "7", "row 1", ("7", "OLD-7"))], seen=set())

        assert isinstance(verdict, Conflict)


class TestFolderSource:
    def test_an_id_filled_in_later_keeps_the_one_case(self, sim: Sim, tmp_path: Path) -> None:
        """A record without an id is registered under its number; when its id appears, the
        case is the same one: nothing is registered again, the id is kept as an alias, and
        the next pass is silent."""
        folder = tmp_path / "invoices"
        record = invoice_record(600, amount="600.00")
        write_records(folder, [record])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        assert [c["accountingInvoiceId"] for c in sim.cases()] == ["600"]

        write_records(folder, [{**record, "accounting_invoice_id": "INV-600"}])
        adopted = run_pass(config)
        calls = sim.calls_total()
        silent = run_pass(config)

        assert [c["accountingInvoiceId"] for c in sim.cases()] == ["600"]
        assert adopted.counts["ids_adopted"] == 1
        assert adopted.counts["gone"] == 0
        assert adopted.problems == []
        assert adopted.status.value == "done"
        assert silent.counts["ids_adopted"] == 0
        assert sim.calls_total() == calls
        with store_of(config) as store:
            assert store.aliases("files") == {"INV-600": "600"}
            assert set(store.load_cases("files")) == {"600"}
            # The id the source shows now finds the case.
            assert [case.accounting_invoice_id for case in store.find_cases("INV-600")] == ["600"]

    def test_a_hold_by_the_new_id_holds_the_case(self, sim: Sim, tmp_path: Path) -> None:
        """An operator holds the invoice by the id the source shows now: the hold is kept under
        the case's id, so the case is held (and released the same way)."""
        folder = tmp_path / "invoices"
        record = invoice_record(608)
        write_records(folder, [record])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        write_records(folder, [{**record, "accounting_invoice_id": "INV-608"}])
        run_pass(config)

        held = run_cli("hold", "INV-608", "--reason", "disputed", cwd=tmp_path)

        assert held.returncode == 0, held.stderr
        assert "registered as 608" in held.stdout
        with store_of(config) as store:
            (case,) = store.find_cases("INV-608")
            reasons = {invoice: hold["reason"] for invoice, hold in store.holds().items()}
            assert hold_reason(reasons, case) == "disputed"
        released = run_cli("release", "INV-608", cwd=tmp_path)
        assert released.returncode == 0, released.stderr
        with store_of(config) as store:
            assert store.holds() == {}

    def test_a_changed_id_with_a_lower_amount_pays_the_one_case(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The id changes and the amount drops in the same pass: the drop is a payment on
        the case registered under the old id."""
        folder = tmp_path / "invoices"
        record = invoice_record(601, amount="900.00", accounting_invoice_id="OLD-601")
        write_records(folder, [record])
        config = write_config(tmp_path, sim.base_url, source='payments = "amount_drops"')
        run_pass(config)

        write_records(folder, [{**record, "accounting_invoice_id": "NEW-601", "amount": "700.00"}])
        run_pass(config)
        run_pass(config)

        (case,) = sim.cases()
        assert case["accountingInvoiceId"] == "OLD-601"
        (payment,) = money_calls(sim)
        assert Decimal(str(payment["amount"])) == Decimal("200.00")

    def test_a_payment_record_naming_the_new_id_reaches_the_case(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """After the alias is kept, a payment the source reports for the invoice's new id is
        forwarded to the case of its old id."""
        folder = tmp_path / "invoices"
        record = invoice_record(602, amount="800.00")
        write_records(folder, [record])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        write_records(folder, [{**record, "accounting_invoice_id": "INV-602"}])
        run_pass(config)

        with (folder / "payments.csv").open("w", encoding="utf-8") as handle:
            handle.write(
                "payment_id;date;amount;accounting_invoice_id\nP-1;2026-11-02;100;INV-602\n"
            )
        summary = run_pass(config)

        (payment,) = money_calls(sim)
        assert Decimal(str(payment["amount"])) == Decimal(100)
        assert summary.counts["payments_sent"] == 1
        assert len(sim.cases()) == 1

    def test_both_ids_in_one_read_quarantine_the_newcomer(self, sim: Sim, tmp_path: Path) -> None:
        """The registered record is still there and another has its number under a new id:
        nothing is registered for the newcomer, which is quarantined naming both ids."""
        folder = tmp_path / "invoices"
        record = invoice_record(603)
        write_records(folder, [record])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)

        write_records(folder, [record, {**record, "accounting_invoice_id": "INV-603"}])
        summary = run_pass(config)

        assert len(sim.cases()) == 1
        (problem,) = summary.problems
        assert problem["field"] == "accounting_invoice_id"
        assert "'603'" in problem["reason"]
        assert "'INV-603'" in problem["reason"]
        with store_of(config) as store:
            assert store.aliases("files") == {}

    def test_two_new_ids_for_a_gone_record_are_both_quarantined(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The registered record left and two new records have its number: neither can be
        told to be it, so neither is registered nor adopted."""
        folder = tmp_path / "invoices"
        record = invoice_record(604)
        write_records(folder, [record])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)

        write_records(
            folder,
            [
                {**record, "accounting_invoice_id": "A-604"},
                {**record, "accounting_invoice_id": "B-604"},
            ],
        )
        summary = run_pass(config)

        assert len(sim.cases()) == 1
        assert len(summary.problems) == 2
        assert summary.counts["ids_adopted"] == 0

    def test_repeating_numbers_refuse_the_fallback_to_the_number(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A source that says its numbers repeat gets no identity from a number: a record
        without an id of its own is quarantined naming the field; the others are sent."""
        folder = tmp_path / "invoices"
        write_records(
            folder,
            [invoice_record(605), invoice_record(606, accounting_invoice_id="K-606")],
        )
        config = write_config(tmp_path, sim.base_url, source="unique_invoice_numbers = false")

        summary = run_pass(config)

        assert [c["accountingInvoiceId"] for c in sim.cases()] == ["K-606"]
        (problem,) = summary.problems
        assert problem["field"] == "accounting_invoice_id"
        assert "unique_invoice_numbers" in problem["reason"]

    def test_a_dry_run_adopts_without_keeping_the_alias(self, sim: Sim, tmp_path: Path) -> None:
        """`plan` shows the adoption (nothing to register) and keeps nothing."""
        folder = tmp_path / "invoices"
        record = invoice_record(607)
        write_records(folder, [record])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        write_records(folder, [{**record, "accounting_invoice_id": "INV-607"}])

        planned = run_pass(config, dry_run=True)

        assert planned.counts["ids_adopted"] == 1
        assert planned.counts["new"] == 0
        with store_of(config) as store:
            assert store.aliases("files") == {}


class TestSchedules:
    """Seeded schedules of id changes, between passes, over several invoices: whatever the
    order, each invoice number has exactly one case at Kravia, and the money Kravia was told
    of is exactly what the amounts dropped by."""

    @pytest.mark.parametrize("seed", range(6))
    def test_ids_that_come_go_and_change_never_register_twice(
        self, sim: Sim, tmp_path: Path, seed: int
    ) -> None:
        rng = random.Random(seed)
        numbers = [700 + i for i in range(5)]
        amounts = {n: Decimal(1000 + 10 * n) for n in numbers}
        base = {n: invoice_record(n) for n in numbers}
        ids: dict[int, str | None] = dict.fromkeys(numbers)
        folder = tmp_path / "invoices"
        config = write_config(tmp_path, sim.base_url, source='payments = "amount_drops"')
        first_amount: dict[int, Decimal] = {}
        for step in range(6):
            for n in numbers:
                roll = rng.random()
                if roll < 0.3:
                    ids[n] = f"ID{step}-{n}"  # a new id (or the first one)
                elif roll < 0.4:
                    ids[n] = None  # the id is lost: the number again
                if rng.random() < 0.3:
                    amounts[n] -= Decimal(rng.randint(1, 50))
            records = []
            for n in numbers:
                record = {**base[n], "amount": str(amounts[n])}
                if ids[n] is not None:
                    record["accounting_invoice_id"] = ids[n]
                records.append(record)
            write_records(folder, records)
            first_amount = first_amount or dict(amounts)  # as registered
            summary = run_pass(config)
            assert summary.problems == [], (seed, step, summary.problems)

        cases = sim.cases()
        assert len(cases) == len(numbers), (seed, [c["accountingInvoiceId"] for c in cases])
        paid = sum((Decimal(str(p["amount"])) for p in money_calls(sim)), Decimal(0))
        assert paid == sum(first_amount[n] - amounts[n] for n in numbers)


class TestSqlSource:
    """On the real servers: the rows' id column is empty at first, then filled in."""

    def test_ids_filled_in_later_register_nothing_again(
        self, server_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        db = server_db
        db.execute(db.sql("ALTER TABLE {invoices} ADD ext_id VARCHAR(40) NULL"))
        extra = ", i.ext_id AS accounting_invoice_id"
        settings = fixture_settings(db, query=db.sql(QUERY, extra=extra))
        config = sql_config(tmp_path, sim, settings)
        first = run_pass(config)
        registered = sorted(case["accountingInvoiceId"] for case in sim.cases())
        assert registered
        assert first.sources[0].status == "ok"

        for invoice in INVOICES:
            db.execute(
                db.sql("UPDATE {invoices} SET ext_id = :e WHERE invoice_no = :n"),
                {"e": f"ERP-{invoice.id}", "n": invoice.invoice_no},
            )
        second = run_pass(config)
        calls = sim.calls_total()
        third = run_pass(config)

        assert sorted(case["accountingInvoiceId"] for case in sim.cases()) == registered
        assert second.counts["ids_adopted"] == len(registered)
        assert second.counts["gone"] == 0
        assert third.counts["ids_adopted"] == 0
        assert sim.calls_total() == calls
