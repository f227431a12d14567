"""Soak: the seeded model of the whole engine (tests/engine_model.py) over many schedules.

Each schedule drives real passes against the simulator in process through source edits,
holds, restored state stores, answer shapes, clock skew, 429/503, lost answers and kills,
checking every invariant after every step and that it settles once faults stop.

    .venv/bin/python bench/soak_engine_model.py                 # 10,000 schedules
    .venv/bin/python bench/soak_engine_model.py --seeds 20000 --first 10000 --workers 4

Prints the schedules run, passes, faults met, cases parked for a person (and why), time, and
every seed that broke an invariant (replay one: `run_schedule(seed, directory)`). Exits 1 if
any did.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from engine_model import run_seeds  # the tests directory is on the path (above)

BLOCK = 500  # schedules between progress lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000, help="how many schedules")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    started = time.monotonic()
    results = []
    for block in range(args.first, args.first + args.seeds, BLOCK):
        seeds = range(block, min(block + BLOCK, args.first + args.seeds))
        block_results = run_seeds(seeds, workers=args.workers)
        for result in block_results:
            if result.violation:
                print(f"  {result.violation.splitlines()[0]}", flush=True)
        results += block_results
        broken_so_far = sum(1 for result in results if result.violation)
        print(
            f"  {len(results)} schedules, {broken_so_far} broke an invariant, "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
    elapsed = time.monotonic() - started

    totals: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for result in results:
        totals.update(result.counts)
        for parked in result.parked:
            reasons[parked.split(": ", 1)[-1].split(" with invoice number")[0][:60]] += 1
    broken = [result for result in results if result.violation]
    passes = sum(result.passes for result in results)
    print(f"schedules: {len(results)} (seeds {args.first}-{args.first + args.seeds - 1})")
    print(f"passes: {passes}; faults met: {dict(sorted(totals.items()))}")
    print(f"parked for a person: {sum(reasons.values())}")
    for reason, count in reasons.most_common():
        print(f"  {count} x {reason}")
    print(
        f"time: {elapsed:.0f} s over {args.workers} workers "
        f"({len(results) / elapsed:.1f} schedules/s, {passes / elapsed:.0f} passes/s)"
    )
    print(f"broke an invariant: {len(broken)}")
    for result in broken[:20]:
        print(f"  {result.violation.splitlines()[0] if result.violation else ''}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
