"""A pass run from the command line: the progress bar while it runs (`progress`), the summary
table when it ends, the problems it found, and the exit code they make."""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from typing import TYPE_CHECKING

from kravia_sync.engine.outcome import pending_work
from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.engine.summary import MoneyOutcome, RunStatus, RunSummary
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
    """The exit code of a pass, from its status alone (which `finished_status` in
    `kravia_sync.engine.outcome` decides): 0 done, 3 done with work pending, 1 otherwise."""
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


# The summary table's rows of what a pass did, by count (pending work is named by
# `kravia_sync.engine.outcome`, money by `_MONEY_LABELS`).
_DONE_LABELS = {
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
    "gone": "no longer in the source",
    "gone_notes_cleared": "notes cleared: Kravia closed the case or money forwarded covers it",
}
_MONEY_LABELS = {
    MoneyOutcome.PAYMENTS_SENT: "payments sent to Kravia",
    MoneyOutcome.CREDIT_NOTES_SENT: "credit notes sent to Kravia",
    MoneyOutcome.CLAMPED: "clamped to the capital Kravia had left",
    MoneyOutcome.NOTHING_LEFT: "not sent: Kravia had nothing left",
    MoneyOutcome.DEFERRED: "payments and credit notes left for a later pass",
}


def nok(amount: Decimal) -> str:
    """An amount as money in the summary table: thousands grouped, two decimals."""
    return f"{amount:,.2f}"


def _money_rows(summary: RunSummary) -> list[tuple[str, str, str]]:
    """What the pass did with money: per outcome, the count and the sum (sent, or asked
    where nothing was sent; both for a clamp)."""
    rows = []
    for outcome, label in _MONEY_LABELS.items():
        row = summary.money.rows[outcome]
        if not row.count:
            continue
        if outcome is MoneyOutcome.CLAMPED:
            amount = f"{nok(row.sent)} of {nok(row.asked)} asked"
        elif outcome in {MoneyOutcome.PAYMENTS_SENT, MoneyOutcome.CREDIT_NOTES_SENT}:
            amount = nok(row.sent)
        else:
            amount = nok(row.asked)
        rows.append((label, str(row.count), amount))
    return rows


def _summary_rows(summary: RunSummary) -> list[tuple[str, str, str]]:
    """The table's rows: what was done, the money, then the work left for a later pass or
    a person."""
    done = [
        (label, str(summary.counts[key]), "")
        for key, label in _DONE_LABELS.items()
        if summary.counts.get(key)
    ]
    pending = [
        (f"[yellow]{kind.label}[/] (for {kind.awaits})", str(count), "")
        for kind, count in pending_work(summary.counts)
    ]
    return done + _money_rows(summary) + pending


def print_summary(summary: RunSummary, console: Console = out) -> None:
    """The end-of-run table: what happened, the money forwarded, what is left for a later
    pass or a person; per source; and the problems."""
    colour = {RunStatus.DONE: "green", RunStatus.ATTENTION: "yellow"}.get(summary.status, "red")
    table = new_table(
        title=f"kravia-sync run {summary.run_id or '(plan)'}: [{colour}]{summary.status}[/]"
    )
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = _summary_rows(summary)
    with_money = any(amount for *_, amount in rows)
    if with_money:
        table.add_column("NOK", justify="right")
    for label, count, amount in rows:
        table.add_row(label, count, *([amount] if with_money else []))
    for what, value in _closing_rows(summary):
        table.add_row(what, value, *([""] if with_money else []))
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
