"""Helpers for the tests: invoice folders, configuration files, passes and CLI runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.engine.summary import RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.settings import Settings, load_settings
from kravia_sync.state.store import StateStore
from kravia_sync.testing import minimal_pdf
from kravia_sync.testing.simulator import RunningSimulator, Simulator

TOKEN = "test-token-Zq8v1Xw3"
CREDITOR_ID = 10759


@dataclass
class Sim:
    simulator: Simulator
    running: RunningSimulator

    @property
    def base_url(self) -> str:
        return self.running.base_url

    def cases(self) -> list[dict[str, Any]]:
        return self.simulator.cases()

    def calls_total(self) -> int:
        return int(self.simulator.calls()["total"])


def invoice_record(number: int, *, days_overdue: int = 30, **overrides: Any) -> dict[str, Any]:
    """A valid flat invoice record, due `days_overdue` days ago."""
    due = datetime.now(ZoneInfo("Europe/Oslo")).date() - timedelta(days=days_overdue)
    record: dict[str, Any] = {
        "invoice_number": str(number),
        "invoice_date": (due - timedelta(days=14)).isoformat(),
        "due_date": due.isoformat(),
        "amount": f"{1000 + number % 997}.50",
        "currency": "NOK",
        "debtor_name": f"Kunde {number} Ødegård",
        "debtor_number": f"C{number}",
        "debtor_email": f"kunde{number}@example.com",
        "address_line1": f"Storgata {number % 200 + 1}",
        "postal_code": "0150",
        "city": "Oslo",
        "description": f"Faktura {number}",
    }
    record.update(overrides)
    return record


def write_invoices(
    folder: Path, numbers: range | list[int], *, pdf_every: int = 2, name: str | None = None
) -> list[dict[str, Any]]:
    """Write invoices as one JSON file (a list), with a PDF beside every `pdf_every`-th one."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [invoice_record(number) for number in numbers]
    target = folder / (name or f"invoices-{numbers[0]}.json")
    target.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    for record in records:
        if pdf_every and int(record["invoice_number"]) % pdf_every == 0:
            (folder / f"{record['invoice_number']}.pdf").write_bytes(
                minimal_pdf(f"Invoice {record['invoice_number']}")
            )
    return records


def write_config(
    directory: Path,
    base_url: str,
    *,
    invoices: str = "invoices",
    extra: str = "",
    retry: str = "backoff_base_seconds = 0.05\nsettle_seconds = 0.2\nmax_inline_wait_seconds = 3",
    kravia: str = "",
    source: str = "",
    policy: str = "",
) -> Path:
    config = directory / "kravia-sync.toml"
    config.write_text(
        f"""
[kravia]
base_url = "{base_url}"
creditor_id = {CREDITOR_ID}
timeout_seconds = 5
max_in_flight = 8
requests_per_second = 1000
{kravia}

[retry]
{retry}

[state]
path = "state/kravia-sync.db"

[log]
format = "json"
level = "info"

{"[policy]" if policy else ""}
{policy}

[[sources]]
name = "files"
connector = "folder"
{source}
[sources.settings]
path = "{invoices}"
{extra}
""",
        encoding="utf-8",
    )
    return config


def load(config: Path) -> Settings:
    return load_settings(config, overrides={"kravia_token": TOKEN})


def run_pass(
    config: Path, *, dry_run: bool = False, confirm_gone: list[str] | None = None
) -> RunSummary:
    """One pass in this process, the way `kravia-sync reconcile` runs it (`confirm_gone`: as
    `--confirm-gone` for these sources)."""
    settings = load(config)
    store = StateStore(settings.state_path)

    async def go() -> RunSummary:
        async with KraviaClient(
            base_url=settings.kravia.base_url,
            token=TOKEN,
            timeout=settings.kravia.timeout_seconds,
            max_in_flight=settings.kravia.max_in_flight,
            requests_per_second=settings.kravia.requests_per_second,
        ) as client:
            reconciler = Reconciler(settings, store, client=client, confirm_gone=confirm_gone or ())
            return await reconciler.run(dry_run=dry_run)

    try:
        return asyncio.run(go())
    finally:
        store.close()


def cli_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KRAVIA")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env["KRAVIA_TOKEN"] = TOKEN
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`kravia-sync ARGS` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "kravia_sync", *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kravia_sync", *args]


def cases_by_accounting_id(cases: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        grouped.setdefault(str(case["accountingInvoiceId"]), []).append(case)
    return grouped
