"""End to end over real HTTP: a folder of invoices into the Kravia simulator, exactly once."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest
from support import (
    Sim,
    cases_by_accounting_id,
    invoice_record,
    load,
    run_pass,
    write_config,
    write_invoices,
)

from kravia_sync.lifecycle import Phase
from kravia_sync.state.store import StateStore
from kravia_sync.testing import minimal_pdf
from kravia_sync.testing.simulator import Faults


def _phases(config: Path) -> dict[str, int]:
    store = StateStore(load(config).state_path)
    try:
        return store.phase_counts()
    finally:
        store.close()


class TestFirstSync:
    def test_every_invoice_becomes_one_started_case_with_its_copy(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """N valid invoices end as exactly N started cases, each PDF uploaded byte for byte."""
        records = write_invoices(tmp_path / "invoices", range(1, 41), pdf_every=2)
        config = write_config(tmp_path, sim.base_url)

        summary = run_pass(config)

        assert summary.status == "done", summary.as_dict()
        grouped = cases_by_accounting_id(sim.cases())
        assert sorted(grouped) == sorted(r["invoice_number"] for r in records)
        for number, cases in grouped.items():
            assert len(cases) == 1, f"invoice {number} has {len(cases)} cases"
            case = cases[0]
            assert case["started"], f"invoice {number} was not started"
            expected = minimal_pdf(f"Invoice {number}") if int(number) % 2 == 0 else None
            documents = case["documents"]
            if expected is None:
                assert documents == []
            else:
                assert len(documents) == 1
                assert documents[0]["sha256"] == hashlib.sha256(expected).hexdigest()
        assert _phases(config) == {Phase.STARTED.value: 40}

    def test_calls_per_invoice_are_three_with_a_copy_and_two_without(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Register, upload and start with a PDF; register and start without one; one search
        of Kravia for the whole pass, before anything is registered; and, on first contact,
        the canary's read-back of its one case (its details and one search page)."""
        write_invoices(tmp_path / "invoices", range(1, 11), pdf_every=2)
        config = write_config(tmp_path, sim.base_url)

        run_pass(config)

        calls = sim.simulator.calls()
        canary_reads = 2
        assert calls["total"] == 5 * 3 + 5 * 2 + 1 + canary_reads
        assert sum(calls["search"].values()) == 1 + 1
        assert calls["processed"] == {
            "register": 10,
            "document": 5,
            "action": 10,
            "search": 2,
            "details": 1,
            "payment": 0,
            "creditnote": 0,
            "settlements": 0,
            "bookkeep": 0,
            "webhook": 0,
        }

    def test_the_register_body_carries_the_invoice_exactly(self, sim: Sim, tmp_path: Path) -> None:
        """What Kravia receives is the source's data with exact amounts and the guide's types."""
        record = invoice_record(7, amount="12 345,67", debtor_type="business")
        record["organization_number"] = "923 609 016"
        folder = tmp_path / "invoices"
        folder.mkdir()
        (folder / "one.json").write_text(json.dumps(record), encoding="utf-8")
        config = write_config(tmp_path, sim.base_url)

        run_pass(config)

        (case,) = sim.cases()
        body = case["body"]
        assert str(body["originalAmount"]) == "12345.67"
        assert body["isPrivateIndividual"] == "false"
        assert body["organizationNumber"] == "923609016"
        assert body["accountingInvoiceId"] == "7"
        assert body["debtorName"] == "Kunde 7 Ødegård"
        assert body["postalAddress"]["addressPostalCode"] == "0150"


def write_csv_invoices(path: Path, records: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]), delimiter=";")
        writer.writeheader()
        writer.writerows(records)


class TestSecondPass:
    def test_a_second_pass_makes_no_remote_call(self, sim: Sim, tmp_path: Path) -> None:
        """Once every case is started, a pass over the unchanged source calls Kravia zero times."""
        write_invoices(tmp_path / "invoices", range(1, 31))
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        before = sim.calls_total()

        summary = run_pass(config)

        assert sim.calls_total() == before
        assert sum(summary.remote_calls.values()) == 0
        assert summary.counts["unchanged"] == 30
        assert summary.status == "done"

    @pytest.mark.parametrize("layout", ["json", "csv"])
    def test_a_changed_invoice_is_recorded_not_registered_again(
        self, sim: Sim, tmp_path: Path, layout: str
    ) -> None:
        """An amount changed after registration is shown as a change and never re-sent; in
        a CSV (whose rows are recognised by their digest), likewise, and an unchanged pass
        after it is quiet."""
        folder = tmp_path / "invoices"
        records = write_invoices(folder, range(1, 4), pdf_every=0, name="batch.json")
        if layout == "csv":
            (folder / "batch.json").unlink()
            write_csv_invoices(folder / "batch.csv", records)
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        assert run_pass(config).counts["unchanged"] == 3
        records[1]["amount"] = "10.00"
        if layout == "csv":
            write_csv_invoices(folder / "batch.csv", records)
        else:
            (folder / "batch.json").write_text(json.dumps(records), encoding="utf-8")
        before = sim.calls_total()

        summary = run_pass(config)

        assert summary.counts["changed"] == 1
        assert summary.counts["unchanged"] == 2
        assert run_pass(config).counts["unchanged"] == 3
        assert sim.calls_total() == before
        assert len(sim.cases()) == 3
        store = StateStore(load(config).state_path)
        try:
            (case,) = store.find_cases("2")
        finally:
            store.close()
        assert case.changed_at is not None
        assert case.fingerprint != case.registered_fingerprint

    def test_a_store_from_before_csv_digests_revalidates_once_and_sends_nothing(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A state store whose CSV cases carry the older hash of their fields: the first pass
        looks at every row again, sends nothing, and stores the row digests; the next pass
        is quiet."""
        folder = tmp_path / "invoices"
        records = write_invoices(folder, range(1, 4), pdf_every=0, name="batch.json")
        (folder / "batch.json").unlink()
        write_csv_invoices(folder / "batch.csv", records)
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        state = load(config).state_path
        with sqlite3.connect(state) as db:  # as an older kravia-sync stored them
            db.execute("UPDATE cases SET record_hash = 'a hash of the fields'")
        before = sim.calls_total()

        upgraded = run_pass(config)

        assert upgraded.status == "done"
        assert upgraded.counts["unchanged"] == 3
        assert sim.calls_total() == before
        with sqlite3.connect(state) as db:
            stored = {hashed for (hashed,) in db.execute("SELECT record_hash FROM cases")}
        assert len(stored) == 3
        assert all(hashed.startswith("n:") for hashed in stored)  # the row digests now
        quiet = run_pass(config)
        assert quiet.counts["unchanged"] == 3
        assert sim.calls_total() == before

    def test_a_new_invoice_in_the_folder_is_registered_next_pass(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Only what is new is sent on the next pass."""
        folder = tmp_path / "invoices"
        write_invoices(folder, range(1, 6))
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        write_invoices(folder, range(6, 8))
        before = sim.simulator.calls()["processed"]["register"]

        summary = run_pass(config)

        assert sim.simulator.calls()["processed"]["register"] == before + 2
        assert summary.counts["new"] == 2
        assert summary.counts["unchanged"] == 5


class TestPlan:
    def test_plan_changes_nothing_and_lists_the_steps(self, sim: Sim, tmp_path: Path) -> None:
        """A dry run calls nothing, writes no case, and says what a pass would do."""
        write_invoices(tmp_path / "invoices", range(1, 4))
        config = write_config(tmp_path, sim.base_url)

        summary = run_pass(config, dry_run=True)

        assert sim.calls_total() == 0
        assert [action.step for action in summary.planned] == ["register"] * 3
        assert _phases(config) == {}


class TestManualStart:
    def test_manual_start_registers_and_documents_then_waits(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """With start = "manual" nothing is started; a second pass does nothing more."""
        write_invoices(tmp_path / "invoices", range(1, 5), pdf_every=2)
        config = write_config(tmp_path, sim.base_url, extra="")
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace("[retry]", '[policy]\nstart = "manual"\n\n[retry]'))

        summary = run_pass(config)
        second = run_pass(config)

        assert summary.counts["awaiting_approval"] == 4
        assert not any(case["started"] for case in sim.cases())
        assert sum(second.remote_calls.values()) == 0
        assert _phases(config) == {"registered": 2, "documented": 2}


class TestRejections:
    def test_a_claim_kravia_refuses_is_quarantined_until_it_changes(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A 400 from Kravia parks the case with Kravia's message; a corrected record is sent."""
        folder = tmp_path / "invoices"
        folder.mkdir()
        record = invoice_record(1, description="x" * 10)
        (folder / "a.json").write_text(json.dumps(record), encoding="utf-8")
        config = write_config(tmp_path, sim.base_url, kravia="")
        # Kravia refuses the creditor id: a terminal 4xx for this claim.
        config.write_text(config.read_text().replace("creditor_id = 10759", "creditor_id = 99"))

        first = run_pass(config)
        again = run_pass(config)

        assert first.status == "attention"
        assert first.counts["rejected"] == 1
        assert "CreditorId" in first.problems[0]["reason"]
        assert sim.simulator.calls()["register"] == {"400": 1}, "a refused claim is not retried"
        assert again.counts["rejected"] == 1
        config.write_text(config.read_text().replace("creditor_id = 99", "creditor_id = 10759"))
        record["amount"] = "999.00"
        (folder / "a.json").write_text(json.dumps(record), encoding="utf-8")

        fixed = run_pass(config)

        assert fixed.status == "done", fixed.as_dict()
        assert len(sim.cases()) == 1


@pytest.mark.slow
class TestFaults:
    def test_300_invoices_under_faults_end_as_300_started_cases(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """20% 5xx, 10% 429 and 5% dropped-after-commit: no duplicate, all started, few passes."""
        write_invoices(tmp_path / "invoices", range(1, 301), pdf_every=3)
        config = write_config(
            tmp_path,
            sim.base_url,
            retry=(
                "backoff_base_seconds = 0.05\nbackoff_cap_seconds = 0.5\nsettle_seconds = 0.1\n"
                "max_inline_wait_seconds = 2\nretries_per_pass = 6"
            ),
        )
        sim.simulator.faults = Faults(
            error_5xx=0.2, rate_limit_429=0.1, drop_after_commit=0.05, seed=7
        )

        passes = 0
        history = []  # each pass's status and counts, shown when an assertion fails
        while passes < 8:
            passes += 1
            summary = run_pass(config)
            history.append((summary.status.value, dict(summary.counts), summary.problems[:3]))
            if summary.status == "done":
                break

        grouped = cases_by_accounting_id(sim.cases())
        duplicates = {aid: len(cases) for aid, cases in grouped.items() if len(cases) > 1}
        assert duplicates == {}
        assert len(grouped) == 300, history
        assert all(cases[0]["started"] for cases in grouped.values())
        for aid, cases in grouped.items():
            expected = 1 if int(aid) % 3 == 0 else 0
            assert len(cases[0]["documents"]) == expected, f"invoice {aid}"
        assert summary.status == "done", f"not settled after {passes} passes: {history}"
        statuses = sim.simulator.calls()
        assert any(status.startswith("5") for status in statuses["register"]), "no 5xx injected"
        assert "0" in statuses["register"] or "0" in statuses["action"], "no drop injected"
        assert _phases(config) == {"started": 300}

    def test_a_failed_search_counts_once_against_a_lost_register_per_pass(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A pass whose search of Kravia fails does not search again, so each register it
        could not settle is charged one failed look-up, however many retries the pass allows:
        a case is parked for a person only after `max_lookups` bad passes."""
        write_invoices(tmp_path / "invoices", range(1, 4), pdf_every=0)
        retry = (
            "backoff_base_seconds = 0.01\nbackoff_cap_seconds = 0.02\nsettle_seconds = 0.1\n"
            "retries_per_pass = 6\nmax_lookups = 3\n"
        )
        # Pass 1: every register lands and its answer is lost; no wait for the settle time.
        config = write_config(tmp_path, sim.base_url, retry=retry + "max_inline_wait_seconds = 0")
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("register",))
        first = run_pass(config)
        assert first.counts["register_ambiguous"] == 3, first.as_dict()

        # Then every search fails, in passes that may wait and retry inline.
        config = write_config(tmp_path, sim.base_url, retry=retry + "max_inline_wait_seconds = 2")
        sim.simulator.faults = Faults(error_5xx=1.0, operations=("search",))

        def phases_and_lookups() -> set[tuple[str, int]]:
            store = StateStore(load(config).state_path)
            try:
                cases = store.load_cases("files")
            finally:
                store.close()
            return {(case.phase.value, case.lookups) for case in cases.values()}

        seen = []
        for _ in range(3):
            run_pass(config)
            seen.append(phases_and_lookups())
        registering, review = Phase.REGISTERING.value, Phase.NEEDS_REVIEW.value
        assert seen == [{(registering, 1)}, {(registering, 2)}, {(review, 3)}]
        assert len(sim.cases()) == 3  # each register landed once: none was sent again

    def test_a_register_that_times_out_is_looked_up_not_resent(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A call that outlives the client's timeout and lands later is adopted once it settles."""
        write_invoices(tmp_path / "invoices", range(1, 7), pdf_every=0)
        config = write_config(
            tmp_path,
            sim.base_url,
            retry=(
                "backoff_base_seconds = 0.05\nsettle_seconds = 2.0\n"
                "max_inline_wait_seconds = 3\nretries_per_pass = 6"
            ),
        )
        config.write_text(
            config.read_text().replace("timeout_seconds = 5", "timeout_seconds = 0.3")
        )
        # Every register stalls for 0.8 s and is then applied: the client gave up at 0.3 s.
        sim.simulator.faults = Faults(timeout=1.0, timeout_delay_s=0.8, operations=("register",))

        summary = run_pass(config)
        time.sleep(1.0)  # let any register still stalled in the simulator land

        grouped = cases_by_accounting_id(sim.cases())
        assert sorted(grouped) == [str(n) for n in range(1, 7)]
        duplicates = {aid: len(cases) for aid, cases in grouped.items() if len(cases) > 1}
        assert duplicates == {}
        assert summary.counts["register_ambiguous"] == 6
        assert summary.counts["adopted"] == 6
        assert all(cases[0]["started"] for cases in grouped.values())


class TestLease:
    def test_a_pass_whose_lease_is_taken_stops_and_says_so(self, sim: Sim, tmp_path: Path) -> None:
        """If another process takes the writer lease mid-pass, this pass stops sending."""
        import threading  # noqa: PLC0415
        from datetime import UTC, datetime, timedelta  # noqa: PLC0415

        from sqlalchemy import delete, insert  # noqa: PLC0415
        from state_sql import LEASE, state_engine  # noqa: PLC0415

        write_invoices(tmp_path / "invoices", range(1, 41), pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        text = config.read_text().replace(
            'path = "state/kravia-sync.db"', 'path = "state/kravia-sync.db"\nlease_seconds = 0.6'
        )
        config.write_text(text.replace("max_in_flight = 8", "max_in_flight = 1"))
        sim.simulator.faults = Faults(latency_ms=50)
        state = load(config).state_path

        def take_the_lease() -> None:
            time.sleep(0.8)
            store = StateStore(state)
            try:
                with state_engine(store).begin() as connection:
                    connection.execute(delete(LEASE))
                    connection.execute(
                        insert(LEASE).values(
                            name="writer",
                            holder="pid 1 on elsewhere",
                            host="elsewhere",
                            pid=1,
                            acquired_at=datetime.now(UTC),
                            expires_at=datetime.now(UTC) + timedelta(minutes=5),
                        )
                    )
            finally:
                store.close()

        thief = threading.Thread(target=take_the_lease)
        thief.start()
        summary = run_pass(config)
        thief.join()

        assert summary.status == "failed"
        assert "lease" in (summary.error or "")
        started = sum(1 for case in sim.cases() if case["started"])
        assert 0 < started < 40, "the pass neither ran nor stopped"
