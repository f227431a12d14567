"""A first sync against a Kravia that enforces a rate limit kravia-sync is not told of.

    python bench/rate_limit.py [--rates 20 5] [--seconds 60] [--latency-ms 10]

For each limit R the simulator runs with `--rate-limit R` (a token bucket of one second's
worth); kravia-sync runs with its defaults (no requests_per_second), on R x seconds / 3
invoices with PDFs (3 calls each), so the pass lasts about `seconds` at the limit. Targets:
achieved rate (calls Kravia took / pass seconds) >= 0.9 R, and at most 2 % of calls answered
429. A second pass makes no call.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import SimulatorProcess, run_reconcile, write_config, write_csv

from kravia_sync.testing import minimal_pdf


def one(rate: float, seconds: float, latency_ms: float) -> dict[str, object]:
    count = max(10, round(rate * seconds / 3))
    extra = ("--rate-limit", str(rate))
    with (
        tempfile.TemporaryDirectory() as tmp,
        SimulatorProcess(latency_ms=latency_ms, extra=extra) as simulator,
    ):
        directory = Path(tmp)
        folder = directory / "invoices"
        folder.mkdir()
        write_csv(folder / "invoices.csv", count)
        for number in range(1, count + 1):
            (folder / f"{100000 + number}.pdf").write_bytes(minimal_pdf(f"Invoice {number}"))
        write_config(directory, simulator.base_url)
        first = run_reconcile(directory)
        assert first["summary"] is not None, first["stderr"]
        calls = simulator.calls()
        second = run_reconcile(directory)
        after_second = simulator.calls()
        statuses: dict[str, int] = {}
        for name, counts in calls.items():
            if isinstance(counts, dict) and name != "processed":
                for status, number in counts.items():
                    statuses[status] = statuses.get(status, 0) + number
        took = sum(number for status, number in statuses.items() if status.startswith("2"))
        refused = statuses.get("429", 0)
        seconds_taken = first["summary"]["duration_seconds"]
        cases = simulator.cases()
        return {
            "rate_limit": rate,
            "invoices": count,
            "pass_seconds": seconds_taken,
            "calls": calls["total"],
            "calls_taken": took,
            "answered_429": refused,
            "share_429": round(refused / calls["total"], 4),
            "achieved_rate": round(took / seconds_taken, 2),
            "achieved_share_of_limit": round(took / seconds_taken / rate, 3),
            "pace_at_end": first["summary"]["pacing"],
            "status": first["summary"]["status"],
            "counts": first["summary"]["counts"],
            "started_cases": sum(1 for case in cases if case["started"]),
            "second_pass_calls": after_second["total"] - calls["total"],
            "second_pass_status": second["summary"]["status"],
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 5.0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    args = parser.parse_args()
    for rate in args.rates:
        print(json.dumps(one(rate, args.seconds, args.latency_ms)), flush=True)


if __name__ == "__main__":
    main()
