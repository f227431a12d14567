"""The pace in real passes: a Kravia with a rate limit it does not publish, the pace reported
where the operator looks, and the simulator's token bucket that stands in for such a Kravia."""

from __future__ import annotations

import math
import time
from pathlib import Path

import httpx
import pytest
from support import CREDITOR_ID, TOKEN, Sim, load, run_pass, write_config, write_invoices

import kravia_sync.engine.pool as pool_module
import kravia_sync.kravia.pacing as pacing_module
from kravia_sync.kravia.pacing import Pacing
from kravia_sync.service.metrics import Metrics
from kravia_sync.testing.simulator import Faults, RunningSimulator, Simulator


def test_a_pass_against_an_unpublished_rate_limit_sends_everything_exactly_once(
    sim: Sim, tmp_path: Path
) -> None:
    """Kravia takes 30 calls a second (a second's burst) and says nothing of it: one pass
    registers and starts every invoice, once each; the calls met with 429 are tried again
    within the pass, and the summary says the pace came down."""
    sim.simulator.faults = Faults(rate_limit=30.0)
    write_invoices(tmp_path / "invoices", range(1, 81), pdf_every=0)
    config = write_config(tmp_path, sim.base_url)

    summary = run_pass(config)

    cases = sim.cases()
    assert summary.status == "done", summary.as_dict()
    assert len(cases) == 80
    assert len({case["accountingInvoiceId"] for case in cases}) == 80
    assert all(case["started"] for case in cases)
    pace = summary.as_dict()["pacing"]
    assert pace is not None
    assert pace["throttled"] >= 1
    assert pace["rate"] is not None
    assert pace["rate"] < 1000
    refused = sum(
        counts.get("429", 0)
        for name, counts in sim.simulator.calls().items()
        if isinstance(counts, dict) and name != "processed"
    )
    assert refused == pace["throttled"]


def test_the_summary_reports_the_pace_without_a_limit(sim: Sim, tmp_path: Path) -> None:
    """Nothing refused, and calls slow enough that the limit in flight is what holds them
    back: the summary shows the limit grown to max_in_flight, and no rate."""
    sim.simulator.faults = Faults(latency_ms=20.0)
    write_invoices(tmp_path / "invoices", range(1, 41), pdf_every=0)
    config = write_config(tmp_path, sim.base_url, kravia="")

    pace = run_pass(config).as_dict()["pacing"]

    assert pace == {
        "limit": 8,
        "max_in_flight": 8,
        "rate": 1000.0,  # the configured ceiling of the test configuration
        "ceiling": 1000.0,
        "achieved": pace["achieved"],
        "throttled": 0,
        "overloaded": 0,
    }


def test_metrics_export_the_pace() -> None:
    metrics = Metrics()
    pacing = Pacing(max_in_flight=16)
    seen: list[Pacing | None] = [None]
    metrics.watch_pace(lambda: None if seen[0] is None else seen[0].snapshot(0.0))

    before = metrics.exposition().decode()
    seen[0] = pacing
    after = metrics.exposition().decode()

    assert 'kravia_sync_kravia_pace{measure="limit"} NaN' in before
    assert 'kravia_sync_kravia_pace{measure="limit"} 2.0' in after
    assert 'kravia_sync_kravia_pace{measure="max_in_flight"} 16.0' in after
    assert 'kravia_sync_kravia_pace{measure="rate"} +Inf' in after
    assert 'kravia_sync_kravia_pace{measure="throttled"} 0.0' in after


def test_the_simulator_token_bucket_refuses_beyond_its_burst_and_applies_nothing() -> None:
    """`rate_limit`: a second's worth of calls at once, then 429 with a Retry-After in whole
    seconds; a refused register creates no case."""
    simulator = Simulator(
        token=TOKEN, creditor_id=CREDITOR_ID, faults=Faults(rate_limit=5.0, latency_ms=0)
    )
    body = {
        "creditorId": CREDITOR_ID,
        "invoiceNo": "1",
        "accountingInvoiceId": "1",
    }
    with RunningSimulator(simulator) as running, httpx.Client(base_url=running.base_url) as http:
        answers = [http.get("invoice/search", headers={"Authorization": TOKEN}) for _ in range(8)]
        refused_register = http.post(
            "invoice/register", json=body, headers={"Authorization": TOKEN}
        )

    statuses = [answer.status_code for answer in answers]
    assert statuses[:5] == [200] * 5
    assert set(statuses[5:]) == {429}
    assert all(answers[i].headers["Retry-After"] == "1" for i in range(5, 8))
    assert refused_register.status_code == 429
    assert simulator.cases() == []
    assert simulator.calls()["search"] == {"200": 5, "429": 3}


@pytest.mark.parametrize(
    "bad", [{"rate_limit": 0}, {"rate_limit": -1}, {"rate_limit": 5, "rate_limit_burst": 0.5}]
)
def test_the_simulator_rejects_a_rate_limit_it_cannot_keep(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        Faults.from_dict(bad)


def test_the_simulator_keeps_a_rate_limit_it_can() -> None:
    assert Faults.from_dict({"rate_limit": 2.5}).to_dict()["rate_limit"] == 2.5
    assert math.isclose(Faults(rate_limit=7).rate_limit or 0, 7)


def test_a_daemon_keeps_the_pace_from_pass_to_pass(tmp_path: Path) -> None:
    """The daemon's clients share one pace: a rate learnt in one pass holds in the next; a
    changed max_in_flight starts anew."""
    from kravia_sync.cli.common import daemon_clients  # noqa: PLC0415 - the daemon's own factory
    from kravia_sync.kravia.pacing import Signal  # noqa: PLC0415

    settings = load(write_config(tmp_path, "http://127.0.0.1:9/api/v2/"))
    client_for = daemon_clients()
    first = client_for(settings)
    for i in range(30):
        first._gate.pacing.sent(i * 0.05, 8)
        first._gate.pacing.answered(Signal.ANSWERED, sent_at=i * 0.05, now=i * 0.05 + 0.01)
    first._gate.pacing.answered(Signal.THROTTLED, sent_at=1.5, now=1.51)
    learnt = first.pacing().rate

    second = client_for(settings)
    changed = client_for(
        settings.model_copy(
            update={"kravia": settings.kravia.model_copy(update={"max_in_flight": 4})}
        )
    )

    assert learnt is not None
    assert learnt < 1000
    assert second.pacing().rate == learnt
    assert changed.pacing().rate == 1000.0  # only the configured ceiling
    assert changed.pacing().max_in_flight == 4


def test_a_kravia_that_refuses_every_call_ends_the_pass_early_saying_so(
    monkeypatch: pytest.MonkeyPatch, sim: Sim, tmp_path: Path
) -> None:
    """Every register answered 429: once Kravia has refused every call for the give-up time
    (here 2 s, 300 s in use; after at least REFUSALS_TO_TELL refusals in a row), the pass
    takes no new case, ends failed saying so, and has sent nothing twice; the next pass,
    Kravia healthy again, registers every invoice once."""
    monkeypatch.setattr(pool_module, "GIVE_UP_AFTER_SECONDS", 2.0)
    monkeypatch.setattr(pacing_module, "REFUSALS_TO_TELL", 5)
    write_invoices(tmp_path / "invoices", range(1, 41))
    config = write_config(tmp_path, sim.base_url)
    sim.simulator.faults = Faults(rate_limit_429=1.0, operations=("register",), seed=3)

    started = time.monotonic()
    refused = run_pass(config)
    took = time.monotonic() - started

    assert refused.status == "failed", refused.as_dict()
    assert "Kravia refused every call for" in (refused.error or "")
    assert "wait for the next pass" in (refused.error or "")
    assert took < 60
    assert sim.cases() == []

    sim.simulator.faults = Faults()
    healthy = run_pass(config)

    assert healthy.status == "done", healthy.as_dict()
    numbers = sorted(int(case["invoiceNo"]) for case in sim.cases())
    assert numbers == list(range(1, 41))
