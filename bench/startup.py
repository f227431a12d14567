"""Process start to the end of a no-op pass over an empty folder, and where the time goes.

    python bench/startup.py [--repeat 10]

Runs `kravia-sync reconcile --json` against the simulator (in its own process) with an empty
folder source, `repeat` times after one warm-up, and reports the median and best wall times
of the whole process; then once more under `python -X importtime`, reporting the import time
in total and the ten top-level packages whose modules took longest to import themselves; and
the floor: the best time of a process that only imports the libraries kravia-sync requires
(pydantic-settings, structlog, httpx, typer, asyncio), loaded as the command line loads them
(`kravia_sync.cli._startup` first), and does nothing else.
Target: <= 0.35 s.

Python's bytecode cache is on for these processes (an installed kravia-sync has its modules
compiled; `PYTHONDONTWRITEBYTECODE`, if set here, would make every start compile them anew).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import TOKEN, SimulatorProcess, write_config

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


# What every start of kravia-sync imports, however little the pass has to do: the libraries,
# loaded the way the command line loads them (`kravia_sync.cli._startup` first).
REQUIRED = "import kravia_sync.cli._startup, asyncio, httpx, pydantic_settings, structlog, typer"


def _environment() -> dict[str, str]:
    env = dict(os.environ, KRAVIA_TOKEN=TOKEN)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def required_imports() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", REQUIRED], env=_environment(), check=True)
    return time.perf_counter() - started


def reconcile(directory: Path, *extra: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *extra, "-m", "kravia_sync", "reconcile", "--json"],
        cwd=directory,
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return wall, result.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SimulatorProcess() as simulator:
        directory = Path(tmp)
        (directory / "invoices").mkdir()
        write_config(directory, simulator.base_url)
        reconcile(directory)  # the first pass creates the state store
        walls = [reconcile(directory)[0] for _ in range(args.repeat)]
        _, trace = reconcile(directory, "-X", "importtime")
    floor = min(required_imports() for _ in range(args.repeat))
    packages: Counter[str] = Counter()  # each module's own time, by its top-level package
    for match in IMPORT_LINE.finditer(trace):
        packages[match[4].split(".")[0]] += int(match[1])
    total = sum(packages.values())
    print(
        json.dumps(
            {
                "median_seconds": round(statistics.median(walls), 3),
                "best_seconds": round(min(walls), 3),
                "required_libraries_only_best_seconds": round(floor, 3),
                "imports_seconds": round(total / 1e6, 3),
                "costliest_imports_ms": {
                    name: round(us / 1000, 1) for name, us in packages.most_common(10)
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
