"""First sync of 5,000 new invoices with PDFs at 25 ms simulated latency and 16 in flight.

    python bench/first_sync.py [--count 5000] [--latency-ms 25] [--in-flight 16]

The ideal is count x 3 calls x latency / in-flight (5,000 x 3 x 25 ms / 16 = 23.4 s); the target
is <= 1.3 x the ideal. Also reports remote calls per invoice as the simulator counted them:
3 with a PDF, 2 without, 0 on the unchanged second pass.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import SimulatorProcess, run_reconcile, write_config, write_csv

from kravia_sync.testing import minimal_pdf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=25.0)
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        SimulatorProcess(latency_ms=args.latency_ms) as simulator,
    ):
        directory = Path(tmp)
        folder = directory / "invoices"
        folder.mkdir()
        write_csv(folder / "invoices.csv", args.count)
        for number in range(1, args.count + 1):
            (folder / f"{100000 + number}.pdf").write_bytes(minimal_pdf(f"Invoice {number}"))
        write_config(directory, simulator.base_url, max_in_flight=args.in_flight)
        first = run_reconcile(directory)
        assert first["code"] == 0, first["stderr"]
        after_first = simulator.calls()
        run_reconcile(directory)
        after_second = simulator.calls()
        ideal = args.count * 3 * args.latency_ms / 1000 / args.in_flight
        cases = simulator.cases()
        report = {
            "invoices": args.count,
            "latency_ms": args.latency_ms,
            "in_flight": args.in_flight,
            "ideal_seconds": round(ideal, 1),
            "first_sync_process_seconds": round(first["wall"], 2),
            "first_sync_pass_seconds": first["summary"]["duration_seconds"],
            "ratio_to_ideal": round(first["summary"]["duration_seconds"] / ideal, 2),
            "peak_rss_mb": round(first["rss_kb"] / 1024, 1),
            "calls_per_invoice_first_pass": round(after_first["total"] / args.count, 3),
            "calls_per_invoice_second_pass": (after_second["total"] - after_first["total"])
            / args.count,
            "cases": len(cases),
            "started": sum(1 for case in cases if case["started"]),
            "with_document": sum(1 for case in cases if case["documents"]),
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
