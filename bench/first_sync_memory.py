"""Peak memory of a first sync: flat, however many invoices are new.

    python bench/first_sync_memory.py [--counts 100000 1000000] [--real-counts 5000 20000]

Two measurements, each a `kravia-sync reconcile --json` process of its own:

1. PostgreSQL, `--counts` new overdue invoices (100,000 and 1,000,000 by default): the whole
   pass as the engine runs it (the sql connector's read, the diff, the work list, the workers,
   the group committer writing every case) with Kravia's part stood in for: each case is
   written as started through the committer instead of being sent, which 3 million calls to
   the simulator would take hours to do. Targets: peak RSS <= 300 MB at 1,000,000, and within
   1.2 x the figure at 100,000.
2. A folder of `--real-counts` new invoices sent to the simulator for real (no latency): the
   driver's own memory per case, which the first measurement leaves out. Target: the larger
   run's peak within 1.2 x the smaller's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import SimulatorProcess, run_reconcile, write_config, write_csv
from sql_noop import fill_table, sql_source

from kravia_sync.state.store import StateStore

# In the child: `CaseDriver.drive` writes each case as started through the committer.
RECORDING_RUN = """
import itertools, sys
from dataclasses import replace
from kravia_sync.cli import app as cli
from kravia_sync.engine.driver import CaseDriver
from kravia_sync.lifecycle import Phase
from kravia_sync.state.records import CaseWrite

ids = itertools.count(3_000_000)

async def recorded(self, item):
    case = replace(
        item.case, phase=Phase.STARTED, kravia_id=next(ids),
        registered_fingerprint=item.case.fingerprint, updated_at=self.clock(),
    )
    written = await self.committer.commit(CaseWrite(case=case))
    return written.case

CaseDriver.drive = recorded
sys.argv = ["kravia-sync", "reconcile", "--json"]
cli.main()
"""


def recorded_first_sync(count: int, base_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        fill_table(count)
        write_config(directory, base_url, source=sql_source() + POLICY)
        run = run_reconcile(directory, ("-c", RECORDING_RUN))
        assert run["code"] == 0, run["stderr"]
        summary = run["summary"]
        assert summary["counts"]["new"] == count, summary["counts"]
        with StateStore(directory / "state" / "kravia-sync.db") as store:
            phases = store.phase_counts()
        assert phases == {"started": count}, phases
        return {
            "new_invoices": count,
            "pass_seconds": summary["duration_seconds"],
            "process_seconds": round(run["wall"], 1),
            "peak_rss_mb": round(run["rss_kb"] / 1024, 1),
        }


def real_first_sync(count: int, simulator: SimulatorProcess) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        folder = directory / "invoices"
        folder.mkdir()
        write_csv(folder / "invoices.csv", count)
        write_config(directory, simulator.base_url)
        before = simulator.calls()["total"]
        run = run_reconcile(directory)
        assert run["code"] == 0, run["stderr"]
        counts = run["summary"]["counts"]
        assert counts["started"] == count, counts
        return {
            "new_invoices": count,
            "pass_seconds": run["summary"]["duration_seconds"],
            "peak_rss_mb": round(run["rss_kb"] / 1024, 1),
            "remote_calls": simulator.calls()["total"] - before,
        }


POLICY = """
[policy]
canary = "off"
"""


def ratio(runs: list[dict[str, Any]]) -> float:
    return round(runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--real-counts", type=int, nargs="*", default=[5_000, 20_000])
    args = parser.parse_args()
    report: dict[str, Any] = {}
    if args.counts:
        with SimulatorProcess() as simulator:
            recorded = []
            for count in args.counts:
                recorded.append(recorded_first_sync(count, simulator.base_url))
                print(json.dumps(recorded[-1]), file=sys.stderr)
        report["postgresql_recorded"] = {"runs": recorded, "memory_ratio": ratio(recorded)}
    if args.real_counts:
        real = []
        for count in args.real_counts:
            with SimulatorProcess() as simulator:  # a fresh Kravia: every invoice new to it
                real.append(real_first_sync(count, simulator))
            print(json.dumps(real[-1]), file=sys.stderr)
        report["folder_sent_to_the_simulator"] = {"runs": real, "memory_ratio": ratio(real)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
