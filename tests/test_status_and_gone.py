"""Status pulled back from Kravia, invoices that leave the source, and the circuit breaker."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

from support import Sim, invoice_record, run_cli, run_pass, write_config

from kravia_sync.state.store import StateStore

EVERY_PASS = "status_every_seconds = 0"


def write_invoices(folder: Path, numbers: list[int]) -> list[dict[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    records = [invoice_record(n) for n in numbers]
    (folder / "invoices.json").write_text(json.dumps(records), encoding="utf-8")
    return records


def cases(tmp_path: Path) -> dict[str, object]:
    with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
        return {c.invoice_number: c for c in store.load_cases("files").values()}


def kravia_ids(sim: Sim) -> dict[str, int]:
    return {case["invoiceNo"]: case["id"] for case in sim.cases()}


class TestStatusPullBack:
    def test_refresh_stores_what_kravia_reports(self, sim: Sim, tmp_path: Path) -> None:
        records = write_invoices(tmp_path / "invoices", [1, 2])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        sim.simulator.payout([(kravia_ids(sim)["1"], Decimal("100.00"))])

        first = run_cli("refresh", cwd=tmp_path)
        again = run_cli("refresh", cwd=tmp_path)
        shown = run_cli("cases", "1", cwd=tmp_path)

        assert first.returncode == 0, first.stdout + first.stderr
        assert "2 changed" in first.stdout
        assert "0 changed" in again.stdout
        one = cases(tmp_path)["1"]
        assert one.kravia_remaining == Decimal(records[0]["amount"]) - 100  # type: ignore[attr-defined]
        assert one.kravia_status == "CollectionStarted"  # type: ignore[attr-defined]
        assert "kravia_remaining" in shown.stdout

    def test_a_pass_pulls_back_only_when_due(self, sim: Sim, tmp_path: Path) -> None:
        """By default a no-op pass right after another calls nothing; with
        status_every_seconds = 0 every pass reads the search feed from its cursor."""
        write_invoices(tmp_path / "invoices", [1])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)

        quiet = run_pass(config)

        assert sum(quiet.remote_calls.values()) == 0
        config = write_config(tmp_path, sim.base_url, kravia=EVERY_PASS)
        eager = run_pass(config)
        assert eager.remote_calls.get("search:ok", 0) >= 1
        assert eager.counts["status_read"] == 1


class TestGone:
    def test_the_breaker_stops_a_pass_that_loses_most_cases(self, sim: Sim, tmp_path: Path) -> None:
        numbers = list(range(1, 11))
        write_invoices(tmp_path / "invoices", numbers)
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == 0
        write_invoices(tmp_path / "invoices", numbers[:4])  # 6 of 10 gone: 60 %

        stopped = run_cli("reconcile", cwd=tmp_path)

        assert stopped.returncode == 1
        text = " ".join((stopped.stdout + stopped.stderr).split())
        assert "6 of the 10 cases" in text
        assert "--confirm-gone files" in text
        assert all(case.attention is None for case in cases(tmp_path).values())  # type: ignore[attr-defined]

        confirmed = run_cli("reconcile", "--confirm-gone", "files", cwd=tmp_path)

        assert confirmed.returncode == 3, confirmed.stdout + confirmed.stderr
        noted = [n for n, c in cases(tmp_path).items() if c.attention]  # type: ignore[attr-defined]
        assert sorted(noted, key=int) == [str(n) for n in numbers[4:]]
        assert len(sim.cases()) == 10  # nothing closed, nothing sent again

    def test_an_empty_read_trips_the_breaker(self, sim: Sim, tmp_path: Path) -> None:
        write_invoices(tmp_path / "invoices", list(range(1, 11)))
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        write_invoices(tmp_path / "invoices", [])

        summary = run_pass(config)

        assert summary.status == "failed"
        assert "10 of the 10 cases" in (summary.error or "")

    def test_a_gone_invoice_that_kravia_has_settled_is_explained(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Credited in full through a credit note, then gone from the source: Kravia reports
        nothing left, so nothing needs a person."""
        folder = tmp_path / "invoices"
        records = write_invoices(folder, [1, 2])
        config = write_config(tmp_path, sim.base_url, kravia=EVERY_PASS)
        run_pass(config)
        with (folder / "payments.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["payment_id", "kind", "date", "amount", "invoice_number"])
            writer.writerow(["CN-1", "credit_note", "2026-11-20", records[0]["amount"], "1"])
        run_pass(config)
        (folder / "payments.csv").unlink()
        write_invoices(folder, [2])

        summary = run_pass(config)

        assert summary.counts["gone_settled"] == 1
        assert summary.counts.get("gone_unexplained", 0) == 0
        assert cases(tmp_path)["1"].attention is None  # type: ignore[attr-defined]
