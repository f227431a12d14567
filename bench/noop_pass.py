"""No-op pass over 100,000 unchanged invoices in one large CSV: wall time and peak memory.

    python bench/noop_pass.py [--count 100000]

Builds the CSV, runs a first sync against the simulator (in its own process), then times a
second `kravia-sync reconcile` that has nothing to do, `repeat` times. Targets on a 2-core
machine: the pass (its own `duration_seconds`) <= 1.0 s, peak memory <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import SimulatorProcess, run_reconcile, write_config, write_csv


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SimulatorProcess() as simulator:
        directory = Path(tmp)
        (directory / "invoices").mkdir()
        write_csv(directory / "invoices" / "invoices.csv", args.count)
        write_config(directory, simulator.base_url, max_in_flight=16)
        first = run_reconcile(directory)
        assert first["code"] == 0, first["stderr"]
        calls_after_first = simulator.calls()["total"]
        noop = [run_reconcile(directory) for _ in range(args.repeat)]
        assert simulator.calls()["total"] == calls_after_first, "the no-op pass called Kravia"
        best = min(noop, key=lambda run: run["wall"])
        report = {
            "invoices": args.count,
            "first_sync_seconds": round(first["wall"], 2),
            "first_sync_remote_calls": calls_after_first,
            "noop_process_wall_seconds": [round(run["wall"], 2) for run in noop],
            "noop_pass_seconds": [run["summary"]["duration_seconds"] for run in noop],
            "noop_peak_rss_mb": round(best["rss_kb"] / 1024, 1),
            "noop_remote_calls": simulator.calls()["total"] - calls_after_first,
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
