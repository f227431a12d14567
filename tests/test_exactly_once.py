"""The exactly-once promise tried the way a bad day goes: one class per way it was broken.

Each test drives real passes against the Kravia simulator (over HTTP) with a clock of its own,
so a lost answer can be settled "later" without waiting.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import (
    TOKEN,
    Sim,
    cases_by_accounting_id,
    invoice_record,
    load,
    run_cli,
    write_config,
    write_invoices,
)

from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.engine.summary import RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.state.store import StateStore
from kravia_sync.testing import minimal_pdf
from kravia_sync.testing.simulator import Faults, Shape

SETTLE = "backoff_base_seconds = 0.05\nbackoff_cap_seconds = 1\nsettle_seconds = 0.1\n"
NO_WAITS = SETTLE + "max_inline_wait_seconds = 0\nretries_per_pass = 0"
LATER = timedelta(minutes=5)  # past the settle time and any back-off


@dataclass
class Passes:
    """Passes of one configuration against the simulator, on a clock of the test's own."""

    config: Path
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    on_request: Callable[[httpx.Request], None] | None = None

    def run(self, *, later: timedelta = LATER, dry_run: bool = False) -> RunSummary:
        if later and not dry_run and self._settling():
            # A lost answer is settled on Kravia's clock (the real one, read from Date headers
            # cut to the second): let it move past the settle time too.
            time.sleep(2.2)
        self.now += later
        settings = load(self.config)
        store = StateStore(settings.state_path)

        async def go() -> RunSummary:
            transport = _Watched(self.on_request) if self.on_request else None
            async with KraviaClient(
                base_url=settings.kravia.base_url,
                token=TOKEN,
                timeout=settings.kravia.timeout_seconds,
                max_in_flight=settings.kravia.max_in_flight,
                transport=transport,
            ) as client:
                reconciler = Reconciler(settings, store, client=client, clock=lambda: self.now)
                return await reconciler.run(dry_run=dry_run)

        try:
            return asyncio.run(go())
        finally:
            store.close()

    def store(self) -> StateStore:
        return StateStore(load(self.config).state_path)

    def _settling(self) -> bool:
        if not load(self.config).state_path.exists():
            return False
        with self.store() as store:
            counts = store.phase_counts()
        return any(counts.get(phase) for phase in ("registering", "uploading", "starting"))

    def case(self, aid: str) -> Any:
        with self.store() as store:
            return store.find_cases(aid)[0]


class _Watched(httpx.AsyncHTTPTransport):
    """A real transport that shows each request to the test before it leaves."""

    def __init__(self, watch: Callable[[httpx.Request], None]) -> None:
        super().__init__()
        self._watch = watch

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._watch(request)
        return await super().handle_async_request(request)


def kravia_cases(sim: Sim) -> dict[str, list[dict[str, Any]]]:
    return cases_by_accounting_id(sim.cases())


def no_duplicates(sim: Sim) -> None:
    duplicates = {aid: len(c) for aid, c in kravia_cases(sim).items() if len(c) > 1}
    assert duplicates == {}, f"duplicated cases in Kravia: {duplicates}"


def folder(tmp_path: Path) -> Path:
    return tmp_path / "invoices"


def write_records(tmp_path: Path, records: list[dict[str, Any]], name: str = "a.json") -> None:
    folder(tmp_path).mkdir(parents=True, exist_ok=True)
    (folder(tmp_path) / name).write_text(json.dumps(records), encoding="utf-8")


class TestIntentBeforeAPlaceInFlight:
    """A call's intent is journaled before it takes a place in flight, so the commit does not
    hold a place idle; a call that then finds no place in time is never sent, and a lost
    answer is settled only once the latest moment the call could have left is past."""

    def test_a_call_that_finds_no_place_in_time_is_not_sent_and_goes_later_once(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """One place in flight, answers 300 ms slow, and 50 ms to find a place: the other
        worker's intents keep missing it. Each miss is journaled as not sent and no such call
        reaches Kravia; passes then register and start every invoice exactly once."""
        sim.simulator.faults = Faults(latency_ms=300.0)
        write_invoices(folder(tmp_path), range(1, 7), pdf_every=0)
        retry = "backoff_base_seconds = 0.05\nsettle_seconds = 0.05\nmax_inline_wait_seconds = 0"
        config = write_config(tmp_path, sim.base_url, retry=retry)
        config.write_text(config.read_text().replace("max_in_flight = 8", "max_in_flight = 1"))
        passes = Passes(config)

        for _ in range(12):
            summary = passes.run()
            if summary.status == "done" and summary.counts["started"] == 0:
                break

        no_duplicates(sim)
        assert {aid: len(cases) for aid, cases in kravia_cases(sim).items()} == {
            str(n): 1 for n in range(1, 7)
        }
        with passes.store() as store:
            journal = [row for n in range(1, 7) for row in store.journal_for(str(n))]
        missed = [row for row in journal if row["outcome"] == "not_sent"]
        assert missed, "no call ever missed its place: the test tested nothing"
        answered = [
            row
            for row in journal
            if row["kind"] == "outcome" and row["operation"] in {"register", "start"}
        ]
        # Every register and start Kravia received has its answer journaled, and only those:
        # the intents that found no place were never sent.
        received = sim.simulator.calls()
        sent = sum(received["register"].values()) + sum(received["action"].values())
        assert len(answered) - len(missed) == sent
        intents = {row["attempt_id"] for row in journal if row["kind"] == "intent"}
        assert {row["attempt_id"] for row in missed} <= intents

    def test_a_stop_turns_away_a_call_waiting_for_its_place(self, sim: Sim, tmp_path: Path) -> None:
        """One place in flight and answers 400 ms slow: while a register is out, the next
        case's intent is journaled and it waits for the place. A stop requested then lets
        the call in flight finish and turns the waiting one away: journaled as not sent, never
        at Kravia. The passes after it send each invoice once."""
        sim.simulator.faults = Faults(latency_ms=400.0)
        write_invoices(folder(tmp_path), range(1, 5), pdf_every=0)
        retry = "settle_seconds = 2\nmax_inline_wait_seconds = 0"
        config = write_config(tmp_path, sim.base_url, retry=retry)
        config.write_text(config.read_text().replace("max_in_flight = 8", "max_in_flight = 1"))
        settings = load(config)
        registers: list[str] = []

        async def stopped_pass() -> RunSummary:
            with StateStore(settings.state_path) as store:
                reconciler: Reconciler | None = None

                def watch(request: httpx.Request) -> None:
                    if request.url.path.endswith("/register"):
                        registers.append(request.url.path)
                        if len(registers) == 2:  # the first is the canary's, sent alone
                            assert reconciler is not None
                            # in 0.2 s: the next case's intent is journaled by then
                            asyncio.get_running_loop().call_later(0.2, reconciler.request_stop)

                async with KraviaClient(
                    base_url=settings.kravia.base_url,
                    token=TOKEN,
                    max_in_flight=1,
                    transport=_Watched(watch),
                ) as client:
                    reconciler = Reconciler(settings, store, client=client)
                    return await reconciler.run()

        stopped = asyncio.run(stopped_pass())

        assert stopped.status == "stopped", stopped.as_dict()
        assert len(registers) == 2
        assert sum(sim.simulator.calls()["register"].values()) == 2
        passes = Passes(config)
        with passes.store() as store:
            journal = [row for n in range(1, 5) for row in store.journal_for(str(n))]
        turned_away = [row for row in journal if row["outcome"] == "not_sent"]
        assert len(turned_away) == 1, journal
        assert turned_away[0]["operation"] == "register"
        for _ in range(6):
            summary = passes.run()
            if summary.status == "done" and summary.counts["started"] == 0:
                break
        no_duplicates(sim)
        assert {aid: len(cases) for aid, cases in kravia_cases(sim).items()} == {
            str(n): 1 for n in range(1, 5)
        }

    def test_an_intents_settle_time_counts_from_the_latest_moment_the_call_could_leave(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Should the process die with a register's intent journaled, the register is looked
        up only once the settle time has passed since the latest moment the call could have
        left: the intent's settle_after, as the store holds it when the call leaves, covers
        the wait for a place in flight (as long as the settle time, here 5 s) as well."""
        write_invoices(folder(tmp_path), [1], pdf_every=0)
        retry = "settle_seconds = 5\nmax_inline_wait_seconds = 0\nretries_per_pass = 0"
        config = write_config(tmp_path, sim.base_url, retry=retry)
        passes = Passes(config)
        journaled: list[datetime | None] = []

        def look(request: httpx.Request) -> None:
            if request.url.path.endswith("/register"):
                journaled.append(passes.case("1").settle_after)

        passes.on_request = look
        before = datetime.now(UTC)
        passes.run(later=timedelta(0))

        (settle_after,) = journaled
        # On Kravia's clock, which runs with ours here (its Date headers are cut to the
        # second): 5 s to find a place and 5 s to settle, from no earlier than `before`.
        assert settle_after is not None
        assert settle_after >= before + timedelta(seconds=10)


class TestLeaseTakenOverMidPass:
    def test_a_writer_whose_lease_is_taken_over_sends_nothing_more(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Another process takes the lease over while this pass has calls out (its lease
        expired): every intent after that is refused by the fence, the pass fails saying
        so, and the new holder's pass completes with one case per invoice."""
        write_invoices(folder(tmp_path), range(1, 21), pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        config.write_text(config.read_text().replace("max_in_flight = 8", "max_in_flight = 2"))
        passes = Passes(config)
        registers: list[str] = []

        def take_over(request: httpx.Request) -> None:
            if request.url.path.endswith("/register"):
                registers.append("x")
                if len(registers) == 3:
                    with passes.store() as rival:
                        with sqlite3.connect(rival.path) as db:  # the lease ran out
                            db.execute("UPDATE lease SET expires_at = '2000-01-01T00:00:00+00:00'")
                        rival.acquire_lease(ttl=timedelta(minutes=2), now=passes.now)
                        rival.release_lease()  # taken over, epoch moved on, then let go

        passes.on_request = take_over
        first = passes.run()

        assert first.status == "failed"
        assert "lease" in (first.error or "")
        # Two registers were answered before the take-over; after it, only calls whose
        # intents were journaled before it may leave: one per worker of the pool at most
        # (2 x max_in_flight), each settled by the new holder, never sent twice.
        assert len(sim.cases()) <= 2 + 2 * 2
        passes.on_request = None
        second = passes.run()
        assert second.status == "done", second.problems
        no_duplicates(sim)
        assert len(kravia_cases(sim)) == 20


class TestUnlockForce:
    def test_unlock_force_refuses_a_live_holder_on_this_machine(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """While a reconcile holds the lease, `unlock --force` refuses (exit 1, naming it)
        and the lease stays."""
        import subprocess  # noqa: PLC0415

        from support import cli_command, cli_env  # noqa: PLC0415

        write_invoices(folder(tmp_path), range(1, 9), pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        config.write_text(config.read_text().replace("max_in_flight = 8", "max_in_flight = 1"))
        sim.simulator.faults = Faults(latency_ms=400)
        running = subprocess.Popen(
            cli_command("reconcile"), cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = load(config).state_path
                if state.exists():
                    with StateStore(state) as store:
                        if store.current_lease() is not None:
                            break
                time.sleep(0.1)
            forced = run_cli("unlock", "--force", cwd=tmp_path)
            assert forced.returncode == 1
            assert "still running on this machine" in forced.stderr
            with StateStore(load(config).state_path) as store:
                assert store.current_lease() is not None
        finally:
            running.wait(timeout=60)
        assert running.returncode == 0
        no_duplicates(sim)


class TestSameIdentity:
    def test_two_writers_of_one_process_and_host_do_not_share_the_lease(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Two writers with the same hostname and PID (two containers, each PID 1) are two
        holders: while one holds the lease the other's pass is refused."""
        write_invoices(folder(tmp_path), range(1, 5), pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        settings = load(config)
        with StateStore(settings.state_path) as holder:
            holder.acquire_lease(ttl=timedelta(minutes=2), now=datetime.now(UTC))
            from kravia_sync.state.errors import LeaseHeldError  # noqa: PLC0415

            with pytest.raises(LeaseHeldError):
                Passes(config).run(later=timedelta(0))
            holder.release_lease()
        assert sim.cases() == []


class TestHoldAfterALostAnswer:
    def test_a_hold_placed_while_a_register_answer_is_lost_stops_everything_after_it(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The register's answer is lost; the operator holds the invoice; the next pass only
        settles the register (adopts the case) and sends nothing else until it is
        released."""
        write_invoices(folder(tmp_path), [7], pdf_every=7)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("register",))
        passes.run()
        sim.simulator.faults = Faults()
        with passes.store() as store:
            store.hold("7", reason="disputed", by="ops", now=passes.now)

        passes.run()

        (case,) = sim.cases()
        assert passes.case("7").kravia_id == case["id"]  # adopted, not registered again
        assert not case["started"]
        assert case["documents"] == []
        with passes.store() as store:
            store.release("7")
        passes.run()
        (case,) = sim.cases()
        assert case["started"]
        assert len(case["documents"]) == 1


class TestPolicyOnEveryStep:
    def test_a_case_whose_due_date_moves_into_the_future_is_not_started(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Registered, its Start failed; the due date then moves into the future: no Start
        until it is eligible again."""
        record = invoice_record(3)
        write_records(tmp_path, [record])
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        sim.simulator.faults = Faults(error_5xx=1.0, operations=("action",))
        passes.run()
        sim.simulator.faults = Faults()
        future = (passes.now + timedelta(days=30)).date().isoformat()
        write_records(tmp_path, [{**record, "due_date": future}])

        gated = passes.run()  # the lost Start is settled: not started; sent again? no
        later = passes.run()

        (case,) = sim.cases()
        assert not case["started"]
        # Refused by the read's gate (registered) or the driver's (a lost Start settled).
        assert gated.counts["waiting"] + gated.counts["gated_waiting"] == 1
        assert passes.case("3").phase.value == "registered"
        with passes.store() as store:
            waiting = store.quarantined("waiting")
        assert [row["field"] for row in waiting] == ["due_date"]
        assert later.status != "failed"

    def test_a_new_case_whose_amount_falls_below_the_minimum_is_not_registered(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Its register failed; the amount then falls below min_amount: never registered."""
        record = invoice_record(4, amount="900.00")
        write_records(tmp_path, [record])
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS, policy="min_amount = 500")
        passes = Passes(config)
        sim.simulator.faults = Faults(rate_limit_429=1.0, operations=("register",))
        passes.run()
        sim.simulator.faults = Faults()
        write_records(tmp_path, [{**record, "amount": "100.00"}])

        passes.run()

        assert sim.cases() == []


class TestClockSkew:
    @pytest.mark.parametrize("offset", [-900.0, -330.0, 330.0])
    def test_a_lost_register_is_found_whatever_the_clocks_say(
        self, sim: Sim, tmp_path: Path, offset: float
    ) -> None:
        """With Kravia's clock minutes off ours, the case of a lost register answer is still
        found (windows are on Kravia's clock) and adopted: one case."""
        sim.simulator.shape = Shape(clock_offset_seconds=offset)
        write_invoices(folder(tmp_path), [1, 2], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        passes.run()  # the mirror's cursor, on Kravia's clock
        write_invoices(folder(tmp_path), [3], pdf_every=0, name="later.json")
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("register",))
        passes.run()
        sim.simulator.faults = Faults()

        passes.run()

        no_duplicates(sim)
        assert sorted(kravia_cases(sim)) == ["1", "2", "3"]
        assert all(case["started"] for case in sim.cases())


class TestSearchWithoutIds:
    def test_a_case_kravia_lists_without_its_id_is_identified_by_its_details(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Kravia's search omits accountingInvoiceId: after a lost register answer the case
        with that invoice number is read in full, and its details' id adopts it."""
        sim.simulator.shape = Shape(search_without_aid=True)
        write_invoices(folder(tmp_path), [5, 6], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("register",))
        passes.run()
        sim.simulator.faults = Faults()

        summary = passes.run()

        no_duplicates(sim)
        assert len(sim.cases()) == 2
        assert all(case["started"] for case in sim.cases())
        assert {passes.case(aid).phase.value for aid in ("5", "6")} == {"started"}
        assert summary.status == "done"

    def test_a_case_kravia_lists_without_its_id_parks_instead_of_registering_again(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Kravia's search omits accountingInvoiceId and its details cannot be read: after a
        lost register answer the case with that invoice number is unknown, never absent;
        parked with the way out, and `resolve --as kravia:<id>` finishes it."""
        sim.simulator.shape = Shape(search_without_aid=True)
        write_invoices(folder(tmp_path), [5], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("register",))
        passes.run()
        sim.simulator.faults = Faults(error_5xx=1.0, operations=("details",))

        summary = passes.run()
        sim.simulator.faults = Faults()

        (case,) = sim.cases()
        parked = passes.case("5")
        assert parked.phase.value == "needs_review"
        assert "no accountingInvoiceId" in parked.last_error
        assert summary.status == "attention"
        resolved = run_cli(
            "resolve", "5", "--as", f"kravia:{case['id']}", "--reason", "checked", cwd=tmp_path
        )
        assert resolved.returncode == 0, resolved.stderr
        passes.run()
        (case,) = sim.cases()
        assert case["started"]
        with passes.store() as store:
            journal = store.journal_for("5")
        assert any(row["operation"] == "resolve" and "checked" in row["message"] for row in journal)


class TestIdentitySurvivesLostState:
    def test_a_lost_state_store_adopts_instead_of_registering_again(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The state store is deleted: the next pass adopts every case Kravia has."""
        write_invoices(folder(tmp_path), range(1, 7), pdf_every=2)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        passes.run()
        shutil.rmtree(load(config).state_path.parent)

        summary = passes.run()
        passes.run()

        no_duplicates(sim)
        assert len(sim.cases()) == 6
        assert summary.counts["adopted"] == 6
        assert summary.counts.get("registered", 0) == 0
        assert all(
            len(c["documents"]) == (1 if int(c["invoiceNo"]) % 2 == 0 else 0) for c in sim.cases()
        )

    def test_a_state_store_restored_from_an_older_copy_registers_nothing_twice(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A backup from before the last registrations is restored: those invoices are
        adopted, not registered again."""
        write_invoices(folder(tmp_path), range(1, 4), pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        passes.run()
        state = load(config).state_path
        backup = tmp_path / "backup.db"
        with sqlite3.connect(state) as live, sqlite3.connect(backup) as copy:
            live.backup(copy)
        write_invoices(folder(tmp_path), range(4, 8), pdf_every=0, name="later.json")
        passes.run()
        with sqlite3.connect(backup) as old, sqlite3.connect(state) as live:
            old.backup(live)  # the restore: the older copy written over the live store

        passes.run()

        no_duplicates(sim)
        assert len(sim.cases()) == 7
        assert all(case["started"] for case in sim.cases())

    def test_changing_a_sources_id_prefix_is_refused_with_the_way_out(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Adding an id_prefix to a source with cases would make every open invoice look new:
        the source fails naming id_prefix, nothing is registered."""
        write_invoices(folder(tmp_path), range(1, 4), pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        passes.run()
        write_config(tmp_path, sim.base_url, retry=NO_WAITS, source='id_prefix = "ledger-"')

        summary = passes.run()

        assert summary.status == "failed"
        (source,) = summary.sources
        assert "id_prefix" in (source.error or "")
        assert "back to ''" in (source.error or "")
        assert len(sim.cases()) == 3


class TestPaidInFull:
    def test_an_amount_that_drops_to_zero_is_a_payment_of_what_remained(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The invoice is paid in full in the source (outstanding 0): the remaining capital is
        forwarded once as a payment and Kravia closes the case."""
        record = invoice_record(8, amount="1500.00")
        write_records(tmp_path, [record])
        config = write_config(
            tmp_path, sim.base_url, retry=NO_WAITS, source='payments = "amount_drops"'
        )
        passes = Passes(config)
        passes.run()
        write_records(tmp_path, [{**record, "amount": "0"}])

        first = passes.run()
        passes.run()

        (case,) = sim.cases()
        assert Decimal(str(case["remainingAmount"])) == 0
        assert case["status"] == "Closed"
        assert len(sim.simulator.payments()) == 1
        assert first.problems == []


class TestBadRecordsAreData:
    def test_records_out_of_any_range_are_quarantined_and_the_rest_goes_on(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A due date of 9999-12-31 and an amount of 1e26 are quarantined naming the field;
        the valid invoice beside them is registered and started."""
        write_records(
            tmp_path,
            [
                invoice_record(1, due_date="9999-12-31", invoice_date="9999-12-01"),
                invoice_record(2, amount="100000000000000000000000000"),
                invoice_record(3),
            ],
        )
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)

        summary = Passes(config).run()

        fields = {problem["record"]: problem["field"] for problem in summary.problems}
        assert fields == {"a.json:1": "invoice_date", "a.json:2": "amount"}
        assert [case["invoiceNo"] for case in sim.cases()] == ["3"]
        assert summary.status == "attention"


class TestWrongBaseUrl:
    def test_a_404_on_register_stops_the_pass_and_rejects_nothing(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A mistyped base URL answers 404: the pass fails naming kravia.base_url, the
        invoices stay new (not rejected), and once the URL is fixed they are registered."""
        write_invoices(folder(tmp_path), range(1, 4), pdf_every=0)
        wrong = sim.base_url.replace("/api/v2/", "/api/v3/")
        config = write_config(tmp_path, wrong, retry=NO_WAITS)
        passes = Passes(config)
        sim.simulator.shape = Shape()

        summary = passes.run()

        assert summary.status == "failed"
        assert "base_url" in (summary.error or "")
        with passes.store() as store:
            assert set(store.phase_counts()) <= {"new"}
        write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes.run()
        assert len(sim.cases()) == 3
        assert all(case["started"] for case in sim.cases())


class TestPlanIsReconcileWithoutSending:
    def test_plan_shows_what_the_pass_then_does(self, sim: Sim, tmp_path: Path) -> None:
        """New, held, not yet due, a copy that is not a PDF, and one Kravia already has:
        plan's step for each is what reconcile then does."""
        records = [invoice_record(n) for n in (1, 2, 3, 4)]
        records.append(invoice_record(5, days_overdue=2))
        write_records(tmp_path, records)
        (folder(tmp_path) / "2.pdf").write_bytes(minimal_pdf("Invoice 2"))
        (folder(tmp_path) / "3.pdf").write_bytes(b"<html>not a pdf</html>")
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        with passes.store() as store:
            store.hold("4", reason="disputed", by="ops", now=passes.now)
        plan = passes.run(dry_run=True, later=timedelta(0))
        planned = {a.invoice_number: a.step for a in plan.planned}
        quarantined = {p["record"]: p["field"] for p in plan.problems}

        summary = passes.run(later=timedelta(0))

        assert planned == {"1": "register", "2": "register", "4": "held", "5": "waiting"}
        assert quarantined == {"a.json:3": "document"}
        assert sorted(case["invoiceNo"] for case in sim.cases()) == ["1", "2"]
        assert summary.counts["registered"] == 2
        again = run_cli("plan", cwd=tmp_path)
        assert again.returncode == 0, again.stdout  # held, waiting, invalid: nothing to do

    def test_plan_says_adopt_for_an_invoice_kravia_already_has(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The case rows are lost but the mirror of Kravia's cases knows the invoice: plan says
        it will be adopted, and the pass adopts it."""
        write_invoices(folder(tmp_path), [1], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        passes.run()
        assert run_cli("refresh", cwd=tmp_path).returncode == 0  # the mirror learns the case
        with passes.store() as store, sqlite3.connect(store.path) as connection:
            connection.execute("DELETE FROM cases")

        plan = passes.run(dry_run=True)
        summary = passes.run()

        assert [a.step for a in plan.planned] == ["adopt"]
        assert summary.counts["adopted"] == 1
        assert len(sim.cases()) == 1


class TestOneSearchForManyLostAnswers:
    def test_twenty_lost_registers_are_settled_by_one_search(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Twenty register answers are lost: the next pass settles all of them on one search
        of Kravia (one page), not one search each."""
        write_invoices(folder(tmp_path), range(1, 21), pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("register",))
        passes.run()
        sim.simulator.faults = Faults()
        searches_before = sum(sim.simulator.calls()["search"].values())

        summary = passes.run()

        searches = sum(sim.simulator.calls()["search"].values()) - searches_before
        assert searches == 1  # its answer says how many match: no page to confirm the end
        assert summary.counts["adopted"] == 20
        no_duplicates(sim)
        assert all(case["started"] for case in sim.cases())


class Killed(BaseException):
    """The process dies here (as SIGKILL would, nothing after it runs)."""


def amount_drops(tmp_path: Path, sim: Sim, **options: Any) -> Path:
    return write_config(
        tmp_path, sim.base_url, retry=NO_WAITS, source='payments = "amount_drops"', **options
    )


def ledger(sim: Sim) -> list[str]:
    return [str(p["accountingPaymentId"]) for p in sim.simulator.payments()]


class TestOurClockGoesBack:
    def test_a_lost_register_after_our_clock_stepped_back_is_not_registered_again(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Passes ran with our clock a day fast; it is set right; a register's answer is then
        lost. The next pass settles it on Kravia's clock, never on a time stored by the fast
        clock: one case."""
        write_invoices(folder(tmp_path), [1], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config, now=datetime.now(UTC) + timedelta(days=1))
        passes.run()
        passes.now = datetime.now(UTC)  # NTP steps the clock back
        write_invoices(folder(tmp_path), [3], pdf_every=0, name="later.json")
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("register",))
        passes.run(later=timedelta(seconds=1))
        sim.simulator.faults = Faults()

        passes.run(later=timedelta(seconds=1))
        passes.run(later=timedelta(seconds=1))

        no_duplicates(sim)
        assert sorted(kravia_cases(sim)) == ["1", "3"]


class TestPaymentsSurviveLostState:
    def test_a_store_restored_from_before_a_payment_does_not_send_it_again(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The amount dropped and the payment went to Kravia; then the state store is restored
        from a copy made before: the drop is seen again, Kravia already lists the payment,
        nothing is sent twice."""
        record = invoice_record(2, amount="1500.00")
        write_records(tmp_path, [record])
        config = amount_drops(tmp_path, sim)
        passes = Passes(config)
        passes.run()
        state = load(config).state_path
        backup = tmp_path / "backup.db"
        with sqlite3.connect(state) as live, sqlite3.connect(backup) as copy:
            live.backup(copy)
        write_records(tmp_path, [{**record, "amount": "1000.00"}])
        passes.run()
        with sqlite3.connect(backup) as old, sqlite3.connect(state) as live:
            old.backup(live)

        passes.run()

        assert len(ledger(sim)) == 1
        (case,) = sim.cases()
        assert Decimal(str(case["remainingAmount"])) == Decimal("1000.00")

    def test_a_payment_seen_after_the_store_was_lost_is_forwarded(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The state store is lost; the source then reports a payment on an invoice Kravia
        already has: the case is adopted and the payment forwarded (not "netted" as if the
        invoice were about to be registered for what is owed now)."""
        write_invoices(folder(tmp_path), [4], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        passes.run()
        shutil.rmtree(load(config).state_path.parent)
        (folder(tmp_path) / "payments.csv").write_text(
            "payment_id;date;amount;invoice_number\nP-4;2026-11-20;100.00;4\n"
        )

        passes.run()
        passes.run()

        assert ledger(sim) == ["P-4"]


class TestAmountsThatBounce:
    def test_an_amount_that_rises_and_drops_again_is_forwarded_once(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """1500 → 1000 (500 forwarded) → 1500 (a rise: noted for a person) → 1000: the second
        drop only comes back to what Kravia already knows, so nothing more is sent."""
        record = invoice_record(5, amount="1500.00")
        config = amount_drops(tmp_path, sim)
        passes = Passes(config)
        for amount in ("1500.00", "1000.00", "1500.00", "1000.00"):
            write_records(tmp_path, [{**record, "amount": amount}])
            passes.run()

        assert len(ledger(sim)) == 1
        (case,) = sim.cases()
        assert Decimal(str(case["remainingAmount"])) == Decimal("1000.00")
        assert "rose" in (passes.case("5").attention or "")


class TestCopiesThatComeAndGo:
    def test_a_copy_removed_before_its_upload_is_never_sent_empty(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Registered, its upload failed; the PDF then leaves the source: no empty copy is
        uploaded, and the case is started without one."""
        write_invoices(folder(tmp_path), [6], pdf_every=6)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        sim.simulator.faults = Faults(rate_limit_429=1.0, operations=("document",))
        passes.run()
        sim.simulator.faults = Faults()
        (folder(tmp_path) / "6.pdf").unlink()

        passes.run()

        (case,) = sim.cases()
        assert case["documents"] == []
        assert case["started"]

    def test_a_copy_that_appears_while_a_register_answer_is_lost_is_uploaded(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The register's answer is lost; the PDF appears meanwhile: once the case is found
        it gets the copy, then is started (never stuck refusing Start for want of it)."""
        write_invoices(folder(tmp_path), [7], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("register",))
        passes.run()
        sim.simulator.faults = Faults()
        (folder(tmp_path) / "7.pdf").write_bytes(minimal_pdf("Invoice 7"))

        passes.run()
        passes.run()

        (case,) = sim.cases()
        assert len(case["documents"]) == 1
        assert case["started"]


class TestResolveSticks:
    def test_resolving_as_new_is_not_undone_by_the_next_look(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Kravia lists a case with this invoice number but no readable id, in its search or
        its details (another system's invoice 8); a person checks it and resolves --as new:
        the next pass registers it instead of parking it again."""
        sim.simulator.shape = Shape(search_without_aid=True)
        write_invoices(folder(tmp_path), [8], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        other = tmp_path / "other"
        write_invoices(other / "invoices", [8], pdf_every=0)
        Passes(write_config(other, sim.base_url, retry=NO_WAITS)).run()
        passes = Passes(config)
        sim.simulator.faults = Faults(error_5xx=1.0, operations=("details",))
        passes.run()
        sim.simulator.faults = Faults()
        assert passes.case("8").phase.value == "needs_review"

        resolved = run_cli("resolve", "8", "--as", "new", "--reason", "not ours", cwd=tmp_path)
        passes.run()

        assert resolved.returncode == 0, resolved.stderr
        assert passes.case("8").phase.value == "started"
        assert len(sim.cases()) == 2


class TestAnotherKravia:
    def test_a_state_store_used_against_another_kravia_is_refused(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The configuration is pointed at another Kravia (or creditor) with the same state
        store: the pass is refused, naming both, before anything is sent."""
        write_invoices(folder(tmp_path), [9], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        passes.run()
        config.write_text(config.read_text().replace("creditor_id = 10759", "creditor_id = 777"))
        write_invoices(folder(tmp_path), [10], pdf_every=0, name="later.json")

        summary = passes.run()

        assert summary.status == "failed"
        assert "creditor 10759" in (summary.error or "")
        assert "creditor 777" in (summary.error or "")
        assert len(sim.cases()) == 1


class TestLeaseCheckedBeforeSending:
    def test_a_lease_that_lapsed_while_the_intent_was_written_sends_nothing(
        self, sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The lease's renewals stall just while a register's intent is being committed: the
        call is not sent; the intent is settled later by looking, and the invoice is
        registered once."""
        from kravia_sync.state.errors import LeaseLostError  # noqa: PLC0415
        from kravia_sync.state.lease import LeaseKeeper  # noqa: PLC0415

        write_invoices(folder(tmp_path), [11], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        config.write_text(config.read_text().replace("max_in_flight = 8", "max_in_flight = 1"))
        checks = 0
        real_check = LeaseKeeper.check

        def stalls_once(keeper: LeaseKeeper) -> None:
            nonlocal checks
            checks += 1
            if checks == 3:  # the run's own check, the slot's, then the one after the intent
                raise LeaseLostError("the writer lease was not renewed in time")
            real_check(keeper)

        monkeypatch.setattr(LeaseKeeper, "check", stalls_once)
        passes = Passes(config)
        first = passes.run()
        monkeypatch.undo()
        sent_first = len(sim.cases())
        passes.run()
        passes.run()

        assert first.status == "failed"
        assert sent_first == 0
        assert len(sim.cases()) == 1
        assert sim.cases()[0]["started"]


class TestHoldActionAfterACrash:
    def test_a_crash_with_the_pause_out_never_sends_it_twice(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The process dies with the hold action's intent written: the next pass does not send
        the pause again (it may have arrived) and asks a person to check."""
        write_invoices(folder(tmp_path), [12], pdf_every=0)
        config = write_config(
            tmp_path, sim.base_url, retry=NO_WAITS, policy='hold_action = "Pause"'
        )
        passes = Passes(config)
        passes.run()
        with passes.store() as store:
            store.hold("12", reason="disputed", by="ops", now=passes.now)

        def die_on_action(request: httpx.Request) -> None:
            if "action=Pause" in str(request.url):
                raise Killed

        passes.on_request = die_on_action
        with pytest.raises(Killed):
            passes.run()
        passes.on_request = None
        passes.run()

        actions = sim.simulator.calls()["action"]
        assert sum(actions.values()) == 1  # the Start only: the Pause never went twice
        assert "answer was lost" in (passes.case("12").attention or "")


DROPS = 'payments = "amount_drops"'


def copy_store(config: Path, target: Path) -> None:
    with sqlite3.connect(load(config).state_path) as live, sqlite3.connect(target) as copy:
        live.backup(copy)


def restore_store(config: Path, copy: Path) -> None:
    with sqlite3.connect(copy) as older, sqlite3.connect(load(config).state_path) as live:
        older.backup(live)


def capital(sim: Sim) -> Decimal:
    (case,) = sim.cases()
    return Decimal(str(case["remainingAmount"]))


def sent_then_store_lost(
    sim: Sim, tmp_path: Path, number: int, amount: str, *, now_owed: str
) -> Passes:
    """The invoice `number` of `amount` sent to Kravia (its drops forwarded), then the state
    store lost and the invoice's amount in the source changed to `now_owed`."""
    record = invoice_record(number, amount=amount)
    write_records(tmp_path, [record])
    passes = Passes(write_config(tmp_path, sim.base_url, retry=NO_WAITS, source=DROPS))
    passes.run()
    shutil.rmtree(tmp_path / "state")
    write_records(tmp_path, [{**record, "amount": now_owed}])
    return passes


def restored_to_before(operation: str, sim: Sim, passes: Passes, tmp_path: Path) -> None:
    """A pass whose `operation` calls Kravia refuses (429), a copy of the store, a pass that
    makes them, and the copy restored: the store is older than those calls."""
    sim.simulator.faults = Faults(rate_limit_429=1.0, operations=(operation,))
    passes.run()
    sim.simulator.faults = Faults()
    copy_store(passes.config, tmp_path / "older.db")
    passes.run()
    restore_store(passes.config, tmp_path / "older.db")


class TestRestoredStoreAndMoney:
    """What the seeded model of the engine found: a state store restored from an older copy
    must not pay a drop twice, nor miss one, nor park a Start Kravia had done."""

    def test_a_drop_after_a_restore_pays_only_what_was_not_paid(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """1000 owed, then 900 (100 forwarded); the store is restored to before that; then 500
        owed: the drop the store sees is 1000 → 500, but only 400 is sent, so Kravia's
        capital is the 500 still owed (not 400)."""
        record = invoice_record(1, amount="1000.00")
        write_records(tmp_path, [record])
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS, source=DROPS)
        passes = Passes(config)
        passes.run()
        copy_store(config, tmp_path / "older.db")
        write_records(tmp_path, [{**record, "amount": "900.00"}])
        passes.run()
        assert capital(sim) == Decimal("900.00")
        restore_store(config, tmp_path / "older.db")
        write_records(tmp_path, [{**record, "amount": "500.00"}])

        passes.run()
        passes.run()

        assert capital(sim) == Decimal("500.00")
        assert [p["amount"] for p in sim.simulator.payments()] == [
            Decimal("100.00"),
            Decimal("400.00"),
        ]

    def test_a_drop_the_store_never_saw_is_forwarded_once_the_case_is_adopted(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The state store is lost; meanwhile the invoice's amount fell from 1000 to 800: the
        case is adopted at Kravia's capital, and the 200 is forwarded."""
        passes = sent_then_store_lost(sim, tmp_path, 2, "1000.00", now_owed="800.00")

        passes.run()
        passes.run()

        assert capital(sim) == Decimal("800.00")
        assert len(sim.cases()) == 1
        assert passes.case("2").phase.value == "started"

    def test_a_start_kravia_refuses_because_it_was_done_is_settled_not_parked(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The store is restored to before the Start: Kravia refuses the Start again as not
        available; its details show the case started, so it is marked started."""
        write_invoices(folder(tmp_path), [3], pdf_every=0)
        passes = Passes(write_config(tmp_path, sim.base_url, retry=NO_WAITS))
        restored_to_before("action", sim, passes, tmp_path)
        assert passes.case("3").phase.value == "registered"

        summary = passes.run()

        case = passes.case("3")
        assert case.phase.value == "started"
        assert "started already" in (case.last_error or "")
        assert summary.status == "done"
        assert len(sim.cases()) == 1


class TestKeptOutYetInKravia:
    """What the seeded model of the engine found next: an invoice the gate keeps out (paid in
    full, here) that Kravia holds all the same, because the state store is older than the
    register or gone. Kravia's case is adopted (nothing is sent for that), and the payment
    reaches it; else Kravia would chase the whole capital of a paid invoice."""

    STATUS = timedelta(minutes=20)  # past `status_every_seconds`: the status pull-back is due

    def test_a_store_restored_to_before_the_register_adopts_the_paid_invoices_case(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        record = invoice_record(1, amount="1200.50")
        write_records(tmp_path, [record])
        passes = Passes(write_config(tmp_path, sim.base_url, retry=NO_WAITS, source=DROPS))
        restored_to_before("register", sim, passes, tmp_path)
        assert passes.case("1").phase.value == "new"
        assert capital(sim) == Decimal("1200.50")
        write_records(tmp_path, [{**record, "amount": "0.00"}])

        kept_out = passes.run()  # what Kravia holds is learnt when the status is pulled back
        passes.run(later=self.STATUS)
        plan = passes.run(dry_run=True)
        adopted = passes.run()
        passes.run()

        assert kept_out.counts["registered"] == 0
        assert [(a.accounting_invoice_id, a.step) for a in plan.planned] == [("1", "adopt")]
        assert adopted.counts["adopted"] == 1
        assert len(sim.cases()) == 1
        assert capital(sim) == Decimal("0.00")
        assert [p["amount"] for p in sim.simulator.payments()] == [Decimal("1200.50")]

    def test_a_lost_store_looks_at_kravia_once_and_adopts_the_paid_invoices_case(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A store that never searched Kravia's cases searches once, even in a pass that
        registers nothing, so the next pass knows the paid invoice's case."""
        passes = sent_then_store_lost(sim, tmp_path, 2, "800.50", now_owed="0.00")

        first = passes.run()
        for _ in range(3):
            passes.run()

        assert first.counts["registered"] == 0
        assert first.counts["status_read"] == 1
        assert len(sim.cases()) == 1
        assert capital(sim) == Decimal("0.00")
        assert passes.case("2").kravia_id == sim.cases()[0]["id"]

    def test_a_case_kravia_lists_without_its_id_is_identified_from_its_details(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Kravia's search leaves accountingInvoiceId out: the details of the case with the
        same invoice number are read, and it is adopted."""
        sim.simulator.shape = Shape(search_without_aid=True)
        passes = sent_then_store_lost(sim, tmp_path, 3, "480.50", now_owed="0.00")

        for _ in range(4):
            passes.run()

        assert len(sim.cases()) == 1
        assert capital(sim) == Decimal("0.00")

    def test_a_held_invoice_kravia_holds_is_adopted_and_never_registered(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Restored to before the register, then held: Kravia's case is adopted (its copy and
        start read from its details), no register leaves, and the hold is flagged as one on
        a case in collection."""
        write_invoices(folder(tmp_path), [5], pdf_every=0)
        passes = Passes(write_config(tmp_path, sim.base_url, retry=NO_WAITS))
        restored_to_before("register", sim, passes, tmp_path)
        assert run_cli("hold", "5", "--reason", "disputed", cwd=tmp_path).returncode == 0
        registers: list[str] = []
        passes.on_request = lambda request: (
            registers.append(request.url.path) if request.method == "POST" else None
        )

        passes.run(later=self.STATUS)
        summary = passes.run()
        flagged = passes.run()

        assert summary.counts["adopted"] == 1
        assert [path for path in registers if "register" in path] == []
        assert len(sim.cases()) == 1
        case = passes.case("5")
        assert case.kravia_id == sim.cases()[0]["id"]
        assert case.phase.value == "started"
        assert any(p["field"] == "hold" for p in flagged.problems)

    def test_a_kept_out_invoice_kravia_lists_without_any_id_is_parked_once(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Kravia holds a case with this invoice number and no accountingInvoiceId, in its
        search and in its details (registered by hand, say): the paid invoice is parked for a
        person (resolve), not read again at every pass."""
        passes = sent_then_store_lost(sim, tmp_path, 6, "480.50", now_owed="0.00")
        (kravia_case,) = sim.simulator._cases.values()
        kravia_case.accounting_invoice_id = None

        passes.run()
        parked = passes.run()
        details_before = sum(sim.simulator.calls()["details"].values())
        passes.run()
        passes.run()

        assert parked.counts["needs_review"] == 1
        assert passes.case("6").phase.value == "needs_review"
        assert "no accountingInvoiceId we can read" in (passes.case("6").last_error or "")
        assert sum(sim.simulator.calls()["details"].values()) == details_before
        assert len(sim.cases()) == 1

    def test_a_kept_out_invoice_kravia_holds_twice_is_parked_for_a_person(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Kravia holds two cases with this accountingInvoiceId (one registered by hand, say)
        and the invoice is paid: neither is adopted on a guess; it is parked for a person,
        naming both."""
        passes = sent_then_store_lost(sim, tmp_path, 7, "480.50", now_owed="0.00")
        (first,) = sim.simulator._cases.values()
        with httpx.Client(headers={"Authorization": TOKEN}, timeout=5) as kravia:
            body = json.loads(json.dumps(first.body, default=float))
            kravia.post(f"{sim.base_url}invoice/register", json=body).raise_for_status()

        summaries = [passes.run() for _ in range(3)]

        case = passes.case("7")
        assert case.phase.value == "needs_review"
        assert "2 cases with this accountingInvoiceId" in (case.last_error or "")
        assert summaries[-1].status == "attention"
        assert len(sim.cases()) == 2
        assert sim.simulator.payments() == []

    def test_an_invoice_kept_out_that_kravia_does_not_hold_is_not_sent_anything(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The other side: a paid invoice Kravia has no case for stays where it is."""
        write_records(tmp_path, [invoice_record(4, amount="0.00")])
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS, source=DROPS)
        passes = Passes(config)

        summaries = [passes.run(later=self.STATUS) for _ in range(3)]

        assert sim.cases() == []
        assert [s.counts["waiting"] for s in summaries] == [1, 1, 1]
        assert [s.counts["adopted"] for s in summaries] == [0, 0, 0]


class TestPlanOfACaseKraviaListsWithoutItsId:
    def test_plan_says_identify_and_the_pass_adopts_it(self, sim: Sim, tmp_path: Path) -> None:
        """The case rows are lost and Kravia's search leaves accountingInvoiceId out: plan
        says the case is identified from its details first (pending, exit 2), and the pass
        reads them and adopts it."""
        sim.simulator.shape = Shape(search_without_aid=True)
        write_invoices(folder(tmp_path), [1], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, retry=NO_WAITS)
        passes = Passes(config)
        passes.run()
        with passes.store() as store, sqlite3.connect(store.path) as connection:
            connection.execute("DELETE FROM cases")
            # What the mirror knows of Kravia's case is only what its search said.
            connection.execute("UPDATE kravia_cases SET accounting_invoice_id = NULL")

        plan = passes.run(dry_run=True)
        planned = run_cli("plan", cwd=tmp_path)
        summary = passes.run()

        assert [a.step for a in plan.planned] == ["identify"]
        assert planned.returncode == 2, planned.stdout
        assert summary.counts["adopted"] == 1
        assert len(sim.cases()) == 1
        assert passes.case("1").phase.value == "started"
