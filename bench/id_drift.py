"""Every invoice's id changed at once (an ERP migration renumbering its keys): what the pass
that recognises them all costs, and the passes after it.

    python bench/id_drift.py [--count 100000]

Builds a CSV whose rows carry ids of series A, runs a first sync against the simulator (in its
own process) and a no-op pass, then gives every row an id of series B (same invoices, same
numbers) and times the pass that adopts each new id as an alias of its case (run with
`--confirm-gone`, since every case missing under its old id trips the breaker), then a no-op pass
over the B ids (each one reached through its alias); then adds a column to the CSV (every
record is validated and assessed again, with nothing to send) and times that pass. Reports
wall time, the pass's own time, peak RSS and Kravia calls for each; none of these passes may
call Kravia.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path
from typing import Any

from common import RECONCILE, SimulatorProcess, run_reconcile, write_config, write_csv


def _timed(
    directory: Path, simulator: SimulatorProcess, python_args: tuple[str, ...] = RECONCILE
) -> dict[str, Any]:
    calls_before = simulator.calls()["total"]
    run = run_reconcile(directory, python_args)
    assert run["code"] in (0, 3), run["stderr"][-2000:] + str(run["summary"])[:3000]
    summary = run["summary"]
    return {
        "process_wall_seconds": round(run["wall"], 2),
        "pass_seconds": summary["duration_seconds"],
        "peak_rss_mb": round(run["rss_kb"] / 1024, 1),
        "remote_calls": simulator.calls()["total"] - calls_before,
        "exit_code": run["code"],
        "counts": summary["counts"],
        "attention": summary["attention"],
        "error": summary["error"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SimulatorProcess() as simulator:
        directory = Path(tmp)
        csv_path = directory / "invoices" / "invoices.csv"
        csv_path.parent.mkdir()
        write_csv(csv_path, args.count, id_series="A")
        write_config(directory, simulator.base_url, max_in_flight=16)
        first = run_reconcile(directory)
        assert first["code"] == 0, first["stderr"][-2000:]
        before = _timed(directory, simulator)
        write_csv(csv_path, args.count, id_series="B")
        # Every case of the source missing from the read trips the breaker, even with the
        # invoices back under new ids: the operator confirms, as the message says.
        adopting = _timed(directory, simulator, (*RECONCILE, "--confirm-gone", "bench"))
        after = _timed(directory, simulator)
        _add_an_empty_column(csv_path)
        columns_changed = _timed(directory, simulator)
        print(
            json.dumps(
                {
                    "invoices": args.count,
                    "first_sync_seconds": round(first["wall"], 2),
                    "noop_before": before,
                    "adopting_every_new_id": adopting,
                    "noop_after": after,
                    "a_column_added": columns_changed,
                },
                indent=2,
            )
        )
        calls = [run["remote_calls"] for run in (adopting, after, columns_changed)]
        assert calls == [0, 0, 0], "Kravia was called"


def _add_an_empty_column(path: Path) -> None:
    """`address_line2`, empty on every row: each record's digest changes, nothing else."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow([*rows[0], "address_line2"])
        writer.writerows([*row, ""] for row in rows[1:])


if __name__ == "__main__":
    main()
