"""`check --probe` and the first-contact canary, against the simulator in each answer shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from support import (
    CREDITOR_ID,
    TOKEN,
    Sim,
    cli_env,
    load,
    run_cli,
    run_pass,
    write_config,
    write_invoices,
)

from kravia_sync.engine.canary import contract_key, probe
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.contract import Contract
from kravia_sync.kravia.probe import Finding, Verdict
from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import (
    RegisterShape,
    RunningSimulator,
    Shape,
    Simulator,
    TimeZone,
)

WRITES = ("register", "document", "action", "payment", "creditnote", "bookkeep")
# Shapes the engine reads (each a simulator Shape's settings).
READABLE = {
    "default": {},
    "details object": {"details_shape": "object"},
    "details named": {"details_shape": "named"},
    "search list": {"search_shape": "list"},
    "search data": {"search_shape": "data"},
    "search value": {"search_shape": "value"},
    "search without aid": {"search_without_aid": True},
    "register bare": {"register_shape": "bare"},
    "register invoiceId": {"register_shape": "invoice_id"},
    "clock ahead": {"clock_offset_seconds": 3000},
    "time with offset": {"time_zone": "offset"},
}
# Shapes it cannot read, and the assumption the report must name.
UNREADABLE = {
    "register without id": ({"register_shape": "no_id"}, "register: the answer carries"),
    "local time": ({"time_zone": "local"}, "lastUpdatedTime is UTC"),
}


@pytest.fixture
def shaped_sim(request: pytest.FixtureRequest) -> Iterator[Sim]:
    """A simulator answering in the shape the test is parametrised with."""
    simulator = Simulator(token=TOKEN, creditor_id=CREDITOR_ID)
    simulator.shape = Shape.from_dict(request.param)
    with RunningSimulator(simulator) as running:
        yield Sim(simulator, running)


def writes(sim: Sim) -> dict[str, int]:
    calls = sim.simulator.calls()
    return {name: sum(calls[name].values()) for name in WRITES}


def contract_of_store(config: Path) -> Contract | None:
    settings = load(config)
    with StateStore(settings.state_path) as store:
        text = store.meta(contract_key(settings.kravia.base_url))
    return None if text is None else Contract.loads(text)


def probe_findings(config: Path) -> list[Finding]:
    settings = load(config)
    with StateStore(settings.state_path) as store:
        known = store.latest_kravia_id()

    async def go() -> list[Finding]:
        async with KraviaClient(base_url=settings.kravia.base_url, token=TOKEN) as client:
            return await probe(client, kravia_id=known)

    return asyncio.run(go())


def verdicts(findings: list[Finding]) -> dict[str, Verdict]:
    return {finding.assumption: finding.verdict for finding in findings}


def first_sync(tmp_path: Path, sim: Sim, *, count: int = 4, policy: str = "") -> Path:
    write_invoices(tmp_path / "invoices", range(1, count + 1), pdf_every=2)
    return write_config(tmp_path, sim.base_url, policy=policy)


def with_payout(sim: Sim) -> None:
    """Kravia collected on one case and paid out: a settlement and a Collected payment."""
    case = sim.cases()[0]
    sim.simulator.payout([(int(case["id"]), Decimal("100.00"))])


class TestCanaryOnShapesTheEngineReads:
    @pytest.mark.parametrize("shaped_sim", READABLE.values(), ids=READABLE.keys(), indirect=True)
    def test_the_canary_confirms_and_the_pass_goes_on(
        self, shaped_sim: Sim, tmp_path: Path
    ) -> None:
        """One case goes first and is read back; nothing differs, so the contract is
        recorded and every other invoice is sent in the same pass."""
        config = first_sync(tmp_path, shaped_sim)

        summary = run_pass(config)

        assert summary.status == "done", summary.error
        assert summary.counts["canary_confirmed"] == 1
        assert len(shaped_sim.cases()) == 4
        assert all(case["started"] for case in shaped_sim.cases())
        contract = contract_of_store(config)
        assert contract is not None
        assert contract.confirmed
        assert contract.accounting_invoice_id == "2"  # the first one with a copy
        assert not [f for f in contract.findings if f.verdict is Verdict.DIFFERS]

    @pytest.mark.parametrize("shaped_sim", [{}], ids=["default"], indirect=True)
    def test_a_confirmed_contract_costs_no_more_reads(
        self, shaped_sim: Sim, tmp_path: Path
    ) -> None:
        """Once confirmed, later passes read nothing for the canary."""
        config = first_sync(tmp_path, shaped_sim, count=2)
        run_pass(config)
        write_invoices(tmp_path / "invoices", range(3, 5), pdf_every=0, name="more.json")
        before = shaped_sim.simulator.calls()

        summary = run_pass(config)

        after = shaped_sim.simulator.calls()
        assert summary.status == "done"
        assert "canary_confirmed" not in summary.counts
        assert sum(after["details"].values()) == sum(before["details"].values())
        assert len(shaped_sim.cases()) == 4


class TestCanaryAfterALostStateStore:
    @pytest.mark.parametrize("shaped_sim", [{}], ids=["default"], indirect=True)
    def test_an_adopted_case_that_needs_nothing_is_no_canary(
        self, shaped_sim: Sim, tmp_path: Path
    ) -> None:
        """The state store is lost: its first candidate is a case Kravia already has, adopted
        and sent nothing, so its old lastUpdatedTime says nothing about zones. The pass goes
        on (nothing registered twice) and the next new invoice is the canary."""
        config = first_sync(tmp_path, shaped_sim, count=3)
        run_pass(config)
        (tmp_path / "state" / "kravia-sync.db").unlink()

        summary = run_pass(config)

        assert summary.status != "failed", summary.error
        assert summary.counts["canary_inconclusive"] == 1
        assert len(shaped_sim.cases()) == 3
        write_invoices(tmp_path / "invoices", [4], pdf_every=0, name="more.json")
        summary = run_pass(config)
        assert summary.counts["canary_confirmed"] == 1
        assert len(shaped_sim.cases()) == 4


class TestCanaryOnShapesItCannotRead:
    @pytest.mark.parametrize(
        ("shaped_sim", "named"),
        list(UNREADABLE.values()),
        ids=list(UNREADABLE.keys()),
        indirect=["shaped_sim"],
    )
    def test_the_pass_stops_after_one_case_naming_the_field(
        self, shaped_sim: Sim, named: str, tmp_path: Path
    ) -> None:
        """One case is sent, the read-back shows an answer the engine cannot read: the pass
        fails with a report naming it, and nothing more is sent."""
        config = first_sync(tmp_path, shaped_sim)

        summary = run_pass(config)

        assert summary.status == "failed"
        assert summary.error is not None
        assert named in summary.error
        assert len(shaped_sim.cases()) == 1
        assert any(named in problem["field"] for problem in summary.problems)
        contract = contract_of_store(config)
        assert contract is not None
        assert not contract.confirmed

    @pytest.mark.parametrize(
        ("shaped_sim", "named"),
        list(UNREADABLE.values()),
        ids=list(UNREADABLE.keys()),
        indirect=["shaped_sim"],
    )
    def test_a_second_pass_sends_nothing(self, shaped_sim: Sim, named: str, tmp_path: Path) -> None:
        """The next pass judges the stored answers again, reads the case back (GETs only)
        and stops again: no new case, no copy, no Start."""
        config = first_sync(tmp_path, shaped_sim)
        run_pass(config)
        sent = writes(shaped_sim)

        summary = run_pass(config)

        assert summary.status == "failed"
        assert summary.error is not None
        assert named in summary.error
        assert writes(shaped_sim) == sent
        assert len(shaped_sim.cases()) == 1

    @pytest.mark.parametrize(
        "shaped_sim", [UNREADABLE["register without id"][0]], ids=["no id"], indirect=True
    )
    def test_switching_the_canary_off_lets_the_rest_go(
        self, shaped_sim: Sim, tmp_path: Path
    ) -> None:
        """policy.canary = "off": the pass goes on with the engine's own tolerance (a register
        answer without an id is looked up and adopted, never registered twice)."""
        config = first_sync(tmp_path, shaped_sim)
        run_pass(config)
        config = write_config(tmp_path, shaped_sim.base_url, policy='canary = "off"')

        for _ in range(3):
            summary = run_pass(config)

        assert summary.status in {"done", "attention"}
        ids = [case["accountingInvoiceId"] for case in shaped_sim.cases()]
        assert sorted(ids) == ["1", "2", "3", "4"]

    @pytest.mark.parametrize("shaped_sim", [{}], ids=["default"], indirect=True)
    def test_the_reconcile_command_exits_1_with_the_report(
        self, shaped_sim: Sim, tmp_path: Path
    ) -> None:
        """`kravia-sync reconcile` on first contact with an unreadable shape: exit code 1
        (a failed pass) and the report, naming the field, on its output."""
        shaped_sim.simulator.shape = Shape(register_shape=RegisterShape.NO_ID)
        first_sync(tmp_path, shaped_sim)

        result = run_cli("reconcile", cwd=tmp_path)

        assert result.returncode == 1, result.stdout + result.stderr
        assert "register: the answer carries" in result.stdout + result.stderr
        assert len(shaped_sim.cases()) == 1


class TestCanaryOff:
    @pytest.mark.parametrize("shaped_sim", [{}], ids=["default"], indirect=True)
    def test_off_makes_no_canary_reads_and_records_nothing(
        self, shaped_sim: Sim, tmp_path: Path
    ) -> None:
        """With the canary off a first pass costs what it always did, and no contract is
        recorded."""
        config = first_sync(tmp_path, shaped_sim, policy='canary = "off"')

        summary = run_pass(config)

        calls = shaped_sim.simulator.calls()
        assert summary.status == "done"
        assert sum(calls["details"].values()) == 0
        assert sum(calls["search"].values()) == 1
        assert contract_of_store(config) is None


class TestProbe:
    @pytest.mark.parametrize("shaped_sim", READABLE.values(), ids=READABLE.keys(), indirect=True)
    def test_the_shapes_the_engine_reads_hold(self, shaped_sim: Sim, tmp_path: Path) -> None:
        """Search, settlements and a known case's details: nothing differs; what the shape
        leaves out (documents, accountingInvoiceId in search) is "not seen"."""
        config = first_sync(tmp_path, shaped_sim, count=2)
        run_pass(config)
        with_payout(shaped_sim)

        found = verdicts(probe_findings(config))

        assert Verdict.DIFFERS not in found.values(), found
        assert found["search: a list, or one under items, data or value"] is Verdict.HOLDS
        assert found["search: lastUpdatedTime is readable and UTC"] is Verdict.HOLDS
        assert (
            found[
                "details: availableActions (names, objects naming them, or an object of booleans)"
            ]
            is Verdict.HOLDS
        )
        assert (
            found["settlements: id, settlementDate, amount, isBooked, invoices of each"]
            is Verdict.HOLDS
        )
        shape = shaped_sim.simulator.shape
        documents = found["details: documents, each with type or documentType"]
        assert documents is (Verdict.NOT_SEEN if shape.details_shape == "object" else Verdict.HOLDS)
        with_aid = found["search: items carry accountingInvoiceId"]
        assert with_aid is (Verdict.NOT_SEEN if shape.search_without_aid else Verdict.HOLDS)

    @pytest.mark.parametrize(
        "shaped_sim",
        [{"time_zone": "local"}],
        ids=["local"],
        indirect=True,
    )
    def test_a_time_not_in_utc_differs(self, shaped_sim: Sim, tmp_path: Path) -> None:
        """A newest case whose lastUpdatedTime is Oslo's time without its offset (with it, the
        time is read in the zone it names)."""
        config = first_sync(tmp_path, shaped_sim, count=1, policy='canary = "off"')
        run_pass(config)

        found = verdicts(probe_findings(config))

        assert found["search: lastUpdatedTime is readable and UTC"] is Verdict.DIFFERS

    @pytest.mark.parametrize("shaped_sim", [{}], ids=["default"], indirect=True)
    def test_a_store_without_cases_leaves_details_not_seen(
        self, shaped_sim: Sim, tmp_path: Path
    ) -> None:
        """An empty Kravia and an empty state store: nothing differs, little is seen."""
        config = first_sync(tmp_path, shaped_sim, count=1)

        found = verdicts(probe_findings(config))

        assert found["details: a known case"] is Verdict.NOT_SEEN
        assert found["search: each item has an integer id (id or invoiceId)"] is Verdict.NOT_SEEN
        assert Verdict.DIFFERS not in found.values()


class TestCheckProbeCommand:
    @pytest.mark.parametrize("shaped_sim", [{}], ids=["default"], indirect=True)
    def test_all_hold_exit_0_with_gets_only_and_the_contract(
        self, shaped_sim: Sim, tmp_path: Path
    ) -> None:
        """`check --probe` after a first pass: a table, the confirmed contract, exit 0, and
        nothing but GETs reached Kravia (no personal data in the output)."""
        config = first_sync(tmp_path, shaped_sim, count=2)
        run_pass(config)
        sent = writes(shaped_sim)

        result = run_cli("check", "--probe", "--config", str(config), cwd=tmp_path)

        assert result.returncode == 0, result.stdout + result.stderr
        assert writes(shaped_sim) == sent
        assert "holds" in result.stdout
        assert "confirmed" in result.stdout
        assert "Ødegård" not in result.stdout  # values never shown, only shapes
        assert "Kunde" not in result.stdout

    @pytest.mark.parametrize("shaped_sim", [{}], ids=["default"], indirect=True)
    def test_a_difference_exits_2(self, shaped_sim: Sim, tmp_path: Path) -> None:
        """A lastUpdatedTime in local time: exit 2, and the differing contract is shown."""
        config = first_sync(tmp_path, shaped_sim, count=2)
        shaped_sim.simulator.shape = Shape(time_zone=TimeZone.LOCAL)
        run_pass(config)
        sent = writes(shaped_sim)

        result = run_cli("check", "--probe", "--config", str(config), cwd=tmp_path)

        assert result.returncode == 2, result.stdout + result.stderr
        assert "differs" in result.stdout
        assert writes(shaped_sim) == sent

    @pytest.mark.parametrize("shaped_sim", [{}], ids=["default"], indirect=True)
    def test_a_refused_token_exits_1(self, shaped_sim: Sim, tmp_path: Path) -> None:
        """Kravia refuses the token: exit 1, no table."""
        config = first_sync(tmp_path, shaped_sim, count=1)

        result = run_cli(
            "check",
            "--probe",
            "--config",
            str(config),
            cwd=tmp_path,
            env=cli_env(KRAVIA_TOKEN="wrong"),  # noqa: S106 - a token meant to be refused
        )

        assert result.returncode == 1
        assert "refused the token" in result.stderr


def test_contract_round_trips_through_the_meta_table() -> None:
    """A contract is stored as JSON and read back the same."""
    finding = Finding("register: x", "{id: int}", Verdict.HOLDS)
    data: dict[str, Any] = {
        "state": "confirmed",
        "checked_at": "2026-01-02T03:04:05+00:00",
        "accounting_invoice_id": "A-1",
        "kravia_id": 7,
        "findings": [finding.to_dict()],
        "register_shape": {"id": "int"},
        "evidence": {"updated": "2026-01-02T03:04:05.0000000"},
    }
    contract = Contract.loads(json.dumps(data))
    assert Contract.loads(contract.dumps()) == contract
    assert contract.findings == (finding,)


@pytest.mark.parametrize("shaped_sim", [{}], ids=["default"], indirect=True)
def test_a_canary_read_back_met_with_429_is_tried_again(shaped_sim: Sim, tmp_path: Path) -> None:
    """Kravia answering 429 to every read of a case's details: the canary asks three times
    (a 429 is a request for time, not an answer about the case), then confirms nothing and
    sends nothing more in that pass."""
    from kravia_sync.engine.canary import READ_BACK_TRIES  # noqa: PLC0415
    from kravia_sync.testing.simulator import Faults  # noqa: PLC0415

    config = first_sync(tmp_path, shaped_sim)
    shaped_sim.simulator.faults = Faults(rate_limit_429=1.0, operations=("details",))

    summary = run_pass(config)

    details = shaped_sim.simulator.calls()["details"]
    assert READ_BACK_TRIES > 1
    assert details == {"429": READ_BACK_TRIES}
    assert not summary.counts["canary_confirmed"]
    contract = contract_of_store(config)
    assert contract is None or not contract.confirmed
