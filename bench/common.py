"""Shared pieces of the benchmarks: a simulator in its own process, data, timing."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

TOKEN = "bench-token-6f1c2a"
CREDITOR_ID = 10759
FIELDS = [
    "invoice_number",
    "invoice_date",
    "due_date",
    "amount",
    "currency",
    "debtor_name",
    "debtor_number",
    "debtor_email",
    "address_line1",
    "postal_code",
    "city",
    "description",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimulatorProcess:
    """`kravia-sync simulate` in its own process, so it does not share our GIL."""

    def __init__(self, *, latency_ms: float = 0.0, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.latency_ms = latency_ms
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2/"

    def __enter__(self) -> Self:
        env = dict(os.environ, KRAVIA_SIM_TOKEN=TOKEN)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kravia_sync",
                "simulate",
                "--port",
                str(self.port),
                "--creditor-id",
                str(CREDITOR_ID),
                "--latency-ms",
                str(self.latency_ms),
                *self.extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.calls()
            except OSError:
                time.sleep(0.1)
            else:
                return self
        raise RuntimeError("the simulator did not start")

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=60) as answer:
            return json.loads(answer.read())

    def calls(self) -> dict[str, Any]:
        return dict(self._get("/_sim/calls"))

    def cases(self) -> list[dict[str, Any]]:
        return list(self._get("/_sim/cases"))


def write_csv(path: Path, count: int, *, id_series: str | None = None) -> None:
    """`count` overdue invoices as a Norwegian spreadsheet export (`;`, decimal comma); with
    `id_series`, each row has an accounting_invoice_id of that series (`B-100001`)."""
    due = datetime.now(UTC).date() - timedelta(days=40)
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(FIELDS + (["accounting_invoice_id"] if id_series else []))
        for number in range(1, count + 1):
            ids = [f"{id_series}-{100000 + number}"] if id_series else []
            writer.writerow(
                [
                    str(100000 + number),
                    (due - timedelta(days=14)).strftime("%d.%m.%Y"),
                    due.strftime("%d.%m.%Y"),
                    f"{number % 9000 + 100},50",
                    "NOK",
                    f"Kunde {number} Ødegård",
                    f"K{number}",
                    f"kunde{number}@example.com",
                    f"Storgata {number % 300 + 1}",
                    "0150",
                    "Oslo",
                    f"Faktura {100000 + number}",
                    *ids,
                ]
            )


FOLDER_SOURCE = """
[[sources]]
name = "bench"
connector = "folder"
[sources.settings]
path = "invoices"
"""


def write_config(
    directory: Path,
    base_url: str,
    *,
    max_in_flight: int | None = None,
    requests_per_second: float | None = None,
    source: str = FOLDER_SOURCE,
) -> Path:
    """A configuration for a benchmark run: kravia-sync's defaults for the pace (unless given),
    quiet logs, one source."""
    config = directory / "kravia-sync.toml"
    pace = "".join(
        f"{key} = {value}\n"
        for key, value in (
            ("max_in_flight", max_in_flight),
            ("requests_per_second", requests_per_second),
        )
        if value is not None
    )
    config.write_text(
        f"""
[kravia]
base_url = "{base_url}"
creditor_id = {CREDITOR_ID}
{pace}

[state]
path = "state/kravia-sync.db"

[log]
format = "json"
level = "warning"
{source}""",
        encoding="utf-8",
    )
    return config


RECONCILE = ("-m", "kravia_sync", "reconcile", "--json")


def run_reconcile(directory: Path, python_args: tuple[str, ...] = RECONCILE) -> dict[str, Any]:
    """`kravia-sync reconcile --json` (or Python run with `python_args`) as a process: its
    summary, wall time and peak RSS."""
    env = dict(os.environ, KRAVIA_TOKEN=TOKEN)
    script = (
        "import resource, subprocess, sys, time, json;"
        "t = time.perf_counter();"
        f"r = subprocess.run([sys.executable, *{python_args!r}],"
        " capture_output=True, text=True);"
        "wall = time.perf_counter() - t;"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(json.dumps({'code': r.returncode, 'wall': wall, 'rss_kb': rss,"
        " 'summary': r.stdout, 'stderr': r.stderr[-2000:]}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(result.stdout)
    measured["summary"] = json.loads(measured["summary"]) if measured["summary"] else None
    return dict(measured)
