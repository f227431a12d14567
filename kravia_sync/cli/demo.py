"""`kravia-sync demo`: the bundled sample invoices, the bundled simulator, one real pass."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from rich.console import Console

from kravia_sync.engine.reconcile import KRAVIA_TARGET, Reconciler, kravia_target
from kravia_sync.engine.summary import RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.logging import configure_logging, register_secrets
from kravia_sync.settings import load_settings
from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import RunningSimulator, Simulator

DEMO_CREDITOR_ID = 10759

DEMO_CONFIG = """\
# Written by `kravia-sync demo`: the bundled simulator stands in for Kravia.
[kravia]
base_url = "{base_url}"
creditor_id = {creditor_id}

[policy]
min_days_overdue = 14
start = "auto"

[state]
path = "kravia-sync.db"

[retry]
settle_seconds = 1
backoff_base_seconds = 0.2

[log]
level = "warning"

[[sources]]
name = "sample"
connector = "folder"
[sources.settings]
path = "invoices"
"""


def _copy_sample(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in files("kravia_sync").joinpath("sample").iterdir():
        if item.is_file() and not (target / item.name).exists():
            with item.open("rb") as source, (target / item.name).open("wb") as copy:
                shutil.copyfileobj(source, copy)


def run_demo(
    directory: Path, *, console: Console, show_summary: Callable[[RunSummary], None]
) -> RunSummary:
    """One pass over the sample folder into a simulator whose cases persist in `directory`;
    `show_summary` shows the pass's summary (the CLI's table)."""
    directory.mkdir(parents=True, exist_ok=True)
    _copy_sample(directory / "invoices")
    token = "demo-" + secrets.token_urlsafe(12)
    register_secrets([token])
    configure_logging(level="warning")
    simulator = Simulator(
        token=token, creditor_id=DEMO_CREDITOR_ID, data_file=directory / "simulator.json"
    )
    with RunningSimulator(simulator) as running:
        config = directory / "kravia-sync.toml"
        config.write_text(
            DEMO_CONFIG.format(base_url=running.base_url, creditor_id=DEMO_CREDITOR_ID),
            encoding="utf-8",
        )
        settings = load_settings(config, overrides={"kravia_token": token})
        console.print(
            f"Demo: sample invoices in {directory / 'invoices'}, state in {settings.state_path}, "
            f"Kravia simulator at {running.base_url}",
            highlight=False,
        )
        store = StateStore(settings.state_path)
        # The demo's simulator keeps its cases in its data file but listens on another port
        # each time: it is the same Kravia.
        store.set_meta(KRAVIA_TARGET, kravia_target(settings))

        async def one_pass() -> RunSummary:
            async with KraviaClient(base_url=running.base_url, token=token) as client:
                return await Reconciler(settings, store, client=client).run(command="demo")

        try:
            summary = asyncio.run(one_pass())
        finally:
            store.close()
        show_summary(summary)
        held = simulator.cases()
        started = sum(1 for case in held if case.get("started"))
        console.print(f"The simulator holds {len(held)} case(s), {started} started.")
    if sum(summary.remote_calls.values()) == 0:
        console.print(
            "Nothing to do: every eligible invoice is already in Kravia. "
            f"Delete {directory} to start the demo over."
        )
    else:
        console.print("Run `kravia-sync demo` again: the second pass has nothing to do.")
    return summary
