"""A pass run from the command line: the progress bar while it runs (`progress`), the summary
table when it ends, the problems it found, and the exit code they make."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.engine.summary import RunStatus, RunSummary
from kravia_sync.settings import (
    Settings,
)

if TYPE_CHECKING:
    from rich.console import Console
from kravia_sync.cli.common import (
    EXIT_ATTENTION,
    EXIT_DONE,
    EXIT_FAILED,
    err,
    new_table,
    out,
    real_console,
    store_and_client,
)

__all__ = ["print_summary", "run_pass"]


def exit_code(summary: RunSummary) -> int:
    codes = {RunStatus.DONE: EXIT_DONE, RunStatus.ATTENTION: EXIT_ATTENTION}
    return codes.get(summary.status, EXIT_FAILED)


def _closing_rows(summary: RunSummary) -> list[tuple[str, str]]:
    """The summary's last lines: the calls made, the pace they ended at (with any 429s or
    overload seen), and the time taken."""
    calls = sum(summary.remote_calls.values())
    rows = [("remote calls", str(calls))]
    pace = summary.pacing
    if calls and pace is not None:
        rate = "none" if pace["rate"] is None else f"{pace['rate']}/s"
        rows.append(("pace at the end", f"{pace['limit']} in flight, rate {rate}"))
        if pace["throttled"] or pace["overloaded"]:
            seen = f"{pace['throttled']} / {pace['overloaded']}"
            rows.append(("answered 429 / overloaded", seen))
    rows.append(("seconds", f"{summary.duration_seconds:.2f}"))
    return rows


def print_summary(summary: RunSummary, console: Console = out) -> None:
    """The end-of-run table: what happened, per source, and what needs a person."""
    colour = {RunStatus.DONE: "green", RunStatus.ATTENTION: "yellow"}.get(summary.status, "red")
    table = new_table(
        title=f"kravia-sync run {summary.run_id or '(plan)'}: [{colour}]{summary.status}[/]"
    )
    table.add_column("what")
    table.add_column("count", justify="right")
    labels = {
        "read": "records read",
        "unchanged": "unchanged",
        "new": "new invoices",
        "registered": "registered in Kravia",
        "adopted": "adopted (Kravia already had the case)",
        "register_deferred": "registers deferred (Kravia's search could not be read)",
        "conflicts": "not sent: changed in the state store meanwhile",
        "gated_held": "not sent: held",
        "gated_waiting": "not sent: no longer eligible (policy)",
        "gated_invalid": "not sent: the copy cannot be sent",
        "documented": "invoice copies uploaded",
        "started": "collection started",
        "awaiting_approval": "awaiting approval (start = manual)",
        "changed": "changed after registration (not re-sent)",
        "waiting": "not yet eligible (policy)",
        "invalid": "quarantined (invalid)",
        "rejected": "rejected by Kravia",
        "needs_review": "needs review",
        "deferred": "deferred to a later pass",
        "gone": "no longer in the source",
    }
    for key, label in labels.items():
        if summary.counts.get(key):
            table.add_row(label, str(summary.counts[key]))
    for row in _closing_rows(summary):
        table.add_row(*row)
    console.print(table)
    for source in summary.sources:
        if source.status != "ok":
            console.print(f"[red]source {source.name} failed:[/] {source.error}", highlight=False)
    if summary.error:
        console.print(f"[red]run failed:[/] {summary.error}", highlight=False)
    if summary.problems:
        _print_problems(summary.problems, console)


def _print_problems(found: list[dict[str, str]], console: Console) -> None:
    problems = new_table(title="needs attention")
    for column in ("source", "record", "field", "reason"):
        problems.add_column(column, overflow="fold")
    for problem in found[:50]:
        problems.add_row(problem["source"], problem["record"], problem["field"], problem["reason"])
    console.print(problems)
    if len(found) > 50:
        console.print(f"… and {len(found) - 50} more: see `kravia-sync status`")


async def run_pass(
    settings: Settings, *, show_progress: bool, confirm_gone: Collection[str] = ()
) -> RunSummary:
    async with store_and_client(settings) as (store, client):
        if not show_progress:
            reconciler = Reconciler(settings, store, client=client, confirm_gone=confirm_gone)
            return await reconciler.run()
        from kravia_sync.cli.progress import shown_on  # noqa: PLC0415 - only on a terminal

        async with shown_on(real_console(err), client) as progress:
            reconciler = Reconciler(
                settings, store, client=client, progress=progress, confirm_gone=confirm_gone
            )
            return await reconciler.run()
