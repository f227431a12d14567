"""The `kravia-sync` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import ipaddress
import json
import secrets
import socket
import sys
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast
from urllib.parse import urlsplit

import typer

from kravia_sync.cli import _startup  # noqa: F401 - before anything imports httpx (see the module)
from kravia_sync.engine.canary import probe as probe_kravia
from kravia_sync.engine.canary import stored_contract
from kravia_sync.engine.reconcile import (
    PlannedAction,
    Reconciler,
    RunStatus,
    RunSummary,
    build_connector,
)
from kravia_sync.engine.resolve import ResolveError, resolve_case, resolve_payment
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import KraviaAuthError, KraviaError
from kravia_sync.kravia.pacing import Pacing, PacingSnapshot
from kravia_sync.kravia.probe import Contract, Finding, Verdict, differing
from kravia_sync.lifecycle import IN_KRAVIA_PHASES
from kravia_sync.logging import configure_logging, redact, register_secrets
from kravia_sync.settings import (
    DEFAULT_CONFIG,
    TOKEN_ENV,
    TOKEN_SECRET_FILE,
    WEBHOOK_SECRET_ENV,
    WEBHOOK_SECRET_FILE,
    ConfigError,
    Settings,
    load_settings,
)
from kravia_sync.state.errors import LeaseHeldError, SchemaError, StateError
from kravia_sync.state.store import StateStore

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table
    from rich.text import Text

app = typer.Typer(
    name="kravia-sync",
    help="Forward overdue invoices from your sources into Kravia debt collection, exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
webhook_app = typer.Typer(help="Kravia's webhook for your creditor.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")


class _LazyConsole:
    """A rich console made on first use: a run that prints only JSON never loads rich."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the console's own attributes
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415

            self._console = Console(stderr=self._stderr)
        return getattr(self._console, name)


out = cast("Console", _LazyConsole(stderr=False))
err = cast("Console", _LazyConsole(stderr=True))


def _table(*headers: str, **options: Any) -> Table:  # noqa: ANN401 - rich's own options
    from rich.table import Table  # noqa: PLC0415

    return Table(*headers, **options)


def _text(text: str, **options: Any) -> Text:  # noqa: ANN401 - rich's own options
    from rich.text import Text  # noqa: PLC0415

    return Text(text, **options)


EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_PENDING = 2  # plan: changes pending
EXIT_ATTENTION = 3  # reconcile: done, but records are quarantined, need review or were deferred
# What `plan` shows as work a pass would do (exit 2): calls, and decisions it would write.
# Waits, holds, policy refusals and approvals are not: a pass would do nothing about them.
PENDING_STEPS = frozenset(
    {
        "register",
        "upload",
        "start",
        "lookup",
        "verify_upload",
        "verify_start",
        "verify_adopted",
        "adopt",
        "identify",
        "needs_review",
    }
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The configuration file.", show_default=True)
]
SecretsOption = Annotated[
    Path | None,
    typer.Option(
        "--secrets-dir",
        help="Directory of secret files (kravia_token, …). Default: $CREDENTIALS_DIRECTORY, "
        "else /run/secrets when it exists.",
    ),
]


class FailedError(Exception):
    """A command failure with a message for the user (already redacted)."""


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except (ConfigError, SchemaError, StateError, LeaseHeldError, FailedError, ResolveError) as exc:
        err.print(f"[bold red]error:[/] {redact(str(exc))}", highlight=False, markup=True)
        raise typer.Exit(EXIT_FAILED) from None


def _settings(config: Path, secrets_dir: Path | None) -> Settings:
    settings = load_settings(config, secrets_dir=secrets_dir)
    register_secrets(settings.secret_values())
    configure_logging(level=settings.log.level, fmt=settings.log.format)
    return settings


def _client(settings: Settings, pacing: Pacing | None = None) -> KraviaClient:
    if settings.kravia_token is None:
        raise FailedError(
            f"no Kravia token: set the environment variable {TOKEN_ENV}, or put it in a file "
            f"named {TOKEN_SECRET_FILE} in the secrets directory (--secrets-dir)"
        )
    kravia = settings.kravia
    return KraviaClient(
        base_url=kravia.base_url,
        token=settings.kravia_token.get_secret_value(),
        timeout=kravia.timeout_seconds,
        max_in_flight=kravia.max_in_flight,
        requests_per_second=kravia.requests_per_second,
        pacing=pacing,
    )


def _daemon_clients() -> Callable[[Settings], KraviaClient]:
    """Clients for a daemon's passes, sharing one pace, so what a pass learned of Kravia's
    limits holds for the next (a changed max_in_flight or requests_per_second starts anew)."""
    paces: dict[tuple[int, float | None], Pacing] = {}

    def client_for(settings: Settings) -> KraviaClient:
        kravia = settings.kravia
        key = (kravia.max_in_flight, kravia.requests_per_second)
        if key not in paces:
            paces.clear()
            paces[key] = Pacing(max_in_flight=key[0], ceiling=key[1])
        return _client(settings, pacing=paces[key])

    return client_for


def pace_text(pace: PacingSnapshot) -> str:
    """The pace in a few words: calls answered per second, the limit in flight, any rate."""
    text = f"{pace.achieved:.0f} calls/s, {pace.limit} in flight"
    if pace.rate is not None:
        text += f", at most {pace.rate:.1f}/s"
    return text


class _RichProgress:
    def __init__(self, progress: Progress, pace: Callable[[], PacingSnapshot]) -> None:
        self._progress = progress
        self._pace = pace
        self._task: Any = None

    def start(self, total: int) -> None:
        self._task = self._progress.add_task("applying", total=total, pace="")

    def advance(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1, pace=pace_text(self._pace()))


async def _reconcile(
    settings: Settings, *, show_progress: bool, confirm_gone: Collection[str] = ()
) -> RunSummary:
    with StateStore(settings.state_path) as store:
        async with _client(settings) as client:
            if not show_progress:
                reconciler = Reconciler(settings, store, client=client, confirm_gone=confirm_gone)
                return await reconciler.run()
            from rich.progress import (  # noqa: PLC0415 - only with a terminal to show it on
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = (
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[pace]}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=err, transient=True) as progress:
                reconciler = Reconciler(
                    settings,
                    store,
                    client=client,
                    progress=_RichProgress(progress, client.pacing),
                    confirm_gone=confirm_gone,
                )
                return await reconciler.run()


def _exit_code(summary: RunSummary) -> int:
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
    table = _table(
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
    problems = _table(title="needs attention")
    for column in ("source", "record", "field", "reason"):
        problems.add_column(column, overflow="fold")
    for problem in found[:50]:
        problems.add_row(problem["source"], problem["record"], problem["field"], problem["reason"])
    console.print(problems)
    if len(found) > 50:
        console.print(f"… and {len(found) - 50} more: see `kravia-sync status`")


@app.command()
def reconcile(
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
    confirm_gone: Annotated[
        list[str] | None,
        typer.Option(
            "--confirm-gone",
            metavar="SOURCE",
            help="Confirm that many cases really left this source (lifts the breaker once).",
        ),
    ] = None,
) -> None:
    """Run one pass: register, document and start what is new; exit 0 done, 3 done with
    records needing attention, 1 failed."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        show_progress = not as_json and err.is_terminal
        summary = asyncio.run(
            _reconcile(settings, show_progress=show_progress, confirm_gone=confirm_gone or ())
        )
    if as_json:
        sys.stdout.write(redact(json.dumps(summary.as_dict(), indent=2)) + "\n")
    else:
        print_summary(summary)
    raise typer.Exit(_exit_code(summary))


@app.command()
def plan(
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show what a pass would do, changing nothing. Exit 0 nothing to do, 2 changes pending,
    1 error."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        with StateStore(settings.state_path) as store:
            summary = asyncio.run(Reconciler(settings, store).run(dry_run=True))
    actions = [a for a in summary.planned if a.step in PENDING_STEPS]
    awaiting = [a for a in summary.planned if a.step == "none" and "awaiting approval" in a.detail]
    waiting = [a for a in summary.planned if a.step not in PENDING_STEPS and a.step != "none"]
    if as_json:
        payload = summary.as_dict() | {
            "actions": [dataclasses.asdict(a) for a in actions],
            "awaiting_approval": [dataclasses.asdict(a) for a in awaiting],
            "not_now": [dataclasses.asdict(a) for a in waiting],
        }
        sys.stdout.write(redact(json.dumps(payload, indent=2)) + "\n")
    else:
        _print_plan(summary, actions, awaiting)
        for action in waiting:
            out.print(
                f"[yellow]{action.step}[/] {action.source} {action.invoice_number}: "
                f"{action.detail}",
                highlight=False,
            )
    if summary.status == RunStatus.FAILED:
        raise typer.Exit(EXIT_FAILED)
    pending = actions or summary.counts.get("payments_to_forward")
    raise typer.Exit(EXIT_PENDING if pending else EXIT_DONE)


def _print_plan(
    summary: RunSummary, actions: list[PlannedAction], awaiting: list[PlannedAction]
) -> None:
    if not actions:
        out.print("plan: nothing to do")
    table = _table(title=f"plan: {len(actions)} case(s) with something to do")
    for column in ("source", "invoice", "accountingInvoiceId", "change", "next step", "detail"):
        table.add_column(column, overflow="fold")
    for action in actions:
        table.add_row(
            action.source,
            action.invoice_number,
            action.accounting_invoice_id,
            action.change,
            action.step,
            action.detail,
        )
    if actions:
        out.print(table)
    if awaiting:
        out.print(
            f"{len(awaiting)} case(s) awaiting approval (start = manual): "
            + ", ".join(a.invoice_number for a in awaiting[:20])
            + (" …" if len(awaiting) > 20 else "")
            + "; approve with kravia-sync start",
            highlight=False,
        )
    if summary.counts.get("changed"):
        out.print(f"{summary.counts['changed']} case(s) changed after registration (not re-sent)")
    if summary.counts.get("payments_to_forward"):
        out.print(
            f"{summary.counts['payments_to_forward']} payment(s) or credit note(s) to "
            "forward to Kravia"
        )
    for problem in summary.problems:
        out.print(
            f"[yellow]quarantined[/] {problem['source']} {problem['record']}: "
            f"{problem['field']}: {problem['reason']}",
            highlight=False,
        )


@app.command()
def status(config: ConfigOption = DEFAULT_CONFIG, secrets_dir: SecretsOption = None) -> None:
    """Counts per phase, quarantined records with reasons, cases that need review, last runs."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        with StateStore(settings.state_path) as store:
            _print_status(store)


def _print_status(store: StateStore) -> None:
    phases = _table(title="cases by phase")
    phases.add_column("phase")
    phases.add_column("count", justify="right")
    for phase, count in sorted(store.phase_counts().items()):
        phases.add_row(phase, str(count))
    out.print(phases)
    statuses = store.kravia_status_counts()
    if statuses:
        out.print(
            "as Kravia last reported (kravia-sync refresh): "
            + ", ".join(f"{status}={count}" for status, count in sorted(statuses.items())),
            highlight=False,
        )
    _print_quarantine(store)
    _print_attention(store)
    _print_holds(store)
    _print_payments(store)
    _print_runs(store)


def _print_quarantine(store: StateStore) -> None:
    invalid = store.quarantined("invalid")
    if invalid:
        table = _table(title=f"quarantined records ({len(invalid)}): not sent")
        for column in ("source", "record", "invoice", "field", "reason", "since"):
            table.add_column(column, overflow="fold")
        for row in invalid:
            table.add_row(
                row["source"],
                row["record_key"],
                row["invoice_number"] or "",
                row["field"],
                row["reason"],
                f"{row['first_seen_at']:%Y-%m-%d %H:%M}",
            )
        out.print(table)
    waiting = store.quarantined("waiting")
    if waiting:
        table = _table(title=f"not yet eligible ({len(waiting)})")
        for column in ("source", "record", "invoice", "reason"):
            table.add_column(column, overflow="fold")
        for row in waiting[:50]:
            table.add_row(
                row["source"], row["record_key"], row["invoice_number"] or "", row["reason"]
            )
        out.print(table)


def _print_attention(store: StateStore) -> None:
    from kravia_sync.lifecycle import Phase  # noqa: PLC0415

    attention = store.cases_in([Phase.REJECTED, Phase.NEEDS_REVIEW])
    if attention:
        table = _table(title="cases needing attention")
        for column in ("invoice", "accountingInvoiceId", "kravia id", "phase", "why"):
            table.add_column(column, overflow="fold")
        for case in attention:
            table.add_row(
                case.invoice_number,
                case.accounting_invoice_id,
                str(case.kravia_id or ""),
                case.phase.value,
                case.last_error or "",
            )
        out.print(table)


def _print_holds(store: StateStore) -> None:
    holds = store.holds()
    if holds:
        table = _table(title=f"on hold ({len(holds)}): never sent")
        for column in ("invoice", "reason", "since", "by"):
            table.add_column(column, overflow="fold")
        for invoice, row in holds.items():
            table.add_row(
                invoice, row["reason"], f"{row['held_at']:%Y-%m-%d %H:%M}", row["held_by"]
            )
        out.print(table)
    noted = store.cases_with_attention()
    if noted:
        table = _table(title=f"changes to make in Kravia by hand ({len(noted)})")
        for column in ("invoice", "kravia id", "what"):
            table.add_column(column, overflow="fold")
        for case in noted:
            table.add_row(case.invoice_number, str(case.kravia_id or ""), case.attention or "")
        out.print(table)


def _print_payments(store: StateStore) -> None:
    counts = store.payment_counts()
    if not counts:
        return
    out.print(
        "payments and credit notes: "
        + ", ".join(f"{phase}={count}" for phase, count in sorted(counts.items())),
        highlight=False,
    )
    table = _table(title="latest payments and credit notes")
    for column in ("source", "id", "kind", "date", "amounts", "phase", "note"):
        table.add_column(column, overflow="fold")
    for payment in store.all_payments(limit=20):
        amounts = ", ".join(
            f"{line.amount}"
            + (f" (sent {line.sent})" if line.sent is not None and line.sent != line.amount else "")
            + f" on {line.accounting_invoice_id}"
            for line in payment.lines
        )
        table.add_row(
            payment.source,
            payment.payment_id,
            payment.kind.value,
            payment.paid_on.isoformat(),
            amounts,
            payment.phase.value,
            payment.note or "",
        )
    out.print(table)


def _print_runs(store: StateStore) -> None:
    runs = _table(title="last runs")
    for column in ("run", "started", "status", "counts"):
        runs.add_column(column, overflow="fold")
    for run in store.last_runs():
        counts = ", ".join(f"{k}={v}" for k, v in sorted(run["counts"].items()))
        runs.add_row(
            str(run["id"]), f"{run['started_at']:%Y-%m-%d %H:%M:%S}", run["status"], counts
        )
    out.print(runs)
    lease = store.current_lease()
    if lease is not None:
        out.print(f"writer lease held by {lease['holder']} until {lease['expires_at']:%H:%M:%S %Z}")


@app.command()
def cases(
    term: Annotated[str, typer.Argument(help="Invoice number, accountingInvoiceId or Kravia id.")],
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Find a case and show its mapping, phase and journal."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        with StateStore(settings.state_path) as store:
            found = store.find_cases(term)
            if not found:
                quarantined = [
                    row
                    for row in store.quarantined()
                    if term
                    in {row["invoice_number"], row["accounting_invoice_id"], row["record_key"]}
                ]
                for row in quarantined:
                    out.print(
                        f"{row['record_key']} ({row['source']}) is {row['kind']}: "
                        f"{row['field']}: {row['reason']}",
                        highlight=False,
                    )
                if not quarantined:
                    err.print(f"no case matches {term!r}")
                    raise typer.Exit(EXIT_FAILED)
                return
            for case in found:
                table = _table(title=f"invoice {case.invoice_number}", show_header=False)
                table.add_column("key")
                table.add_column("value", overflow="fold")
                for key in (
                    "source",
                    "accounting_invoice_id",
                    "kravia_id",
                    "phase",
                    "record_key",
                    "attempts",
                    "next_attempt_at",
                    "last_error",
                    "changed_at",
                    "attention",
                    "amount",
                    "kravia_status",
                    "kravia_remaining",
                    "status_at",
                    "approved_at",
                    "first_seen_at",
                    "updated_at",
                ):
                    value = getattr(case, key)
                    table.add_row(key, "" if value is None else str(value))
                out.print(table)
                journal = _table(title="journal")
                for column in ("at", "kind", "operation", "outcome", "status", "ms", "message"):
                    journal.add_column(column, overflow="fold")
                for entry in store.journal_for(case.accounting_invoice_id):
                    journal.add_row(
                        f"{entry['at']:%Y-%m-%d %H:%M:%S}",
                        entry["kind"],
                        entry["operation"],
                        entry["outcome"] or "",
                        str(entry["http_status"] or ""),
                        str(entry["duration_ms"] or ""),
                        entry["message"] or "",
                    )
                out.print(journal)


@app.command()
def refresh(config: ConfigOption = DEFAULT_CONFIG, secrets_dir: SecretsOption = None) -> None:
    """Pull back the status and capital left of Kravia's cases now (passes do it every
    kravia.status_every_seconds)."""
    with _user_errors():
        settings = _settings(config, secrets_dir)

        async def go() -> RunSummary:
            with StateStore(settings.state_path) as store:
                async with _client(settings) as client:
                    return await Reconciler(settings, store, client=client).refresh()

        summary = asyncio.run(go())
    if summary.status == RunStatus.FAILED:
        err.print(f"refresh failed: {summary.error}", highlight=False)
        raise typer.Exit(EXIT_FAILED)
    out.print(
        f"read {summary.counts['status_read']} case(s) from Kravia, "
        f"{summary.counts['status_changed']} changed"
    )


@app.command()
def hold(
    invoice: Annotated[str, typer.Argument(help="Invoice number or accountingInvoiceId.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown wherever it is held).")],
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Hold an invoice: it is never sent to Kravia; one already in collection is flagged so
    you pause it in Kravia."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        if not reason.strip():
            err.print('a hold needs a reason: --reason "…"')
            raise typer.Exit(EXIT_FAILED)
        with StateStore(settings.state_path) as store:
            store.hold(invoice, reason=reason.strip(), by=_operator(), now=datetime.now(UTC))
            known = [
                case
                for case in store.find_cases(invoice)
                if invoice in {case.invoice_number, case.accounting_invoice_id}
            ]
    out.print(f"{invoice} is on hold: {reason.strip()}", highlight=False)
    for case in known:
        if case.phase in IN_KRAVIA_PHASES:
            out.print(
                f"[yellow]{case.accounting_invoice_id} is already in Kravia ({case.phase}, "
                f"Kravia id {case.kravia_id}): pause it in Kravia[/]",
                highlight=False,
            )


@app.command()
def release(
    invoice: Annotated[str, typer.Argument(help="Invoice number or accountingInvoiceId.")],
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Release a hold: the invoice is handled again from the next pass."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        with StateStore(settings.state_path) as store:
            released = store.release(invoice)
    if not released:
        err.print(f"{invoice} is not on hold (holds are kept as given: number or id)")
        raise typer.Exit(EXIT_FAILED)
    out.print(f"{invoice} released")


@app.command()
def start(
    invoices: Annotated[
        list[str] | None, typer.Argument(help="Invoice numbers or accountingInvoiceIds.")
    ] = None,
    start_all: Annotated[
        bool, typer.Option("--all", help="Approve every case awaiting approval.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Approve cases awaiting approval (start = "manual") and run a pass that starts them."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        if not invoices and not start_all:
            err.print("name the invoices to start, or give --all")
            raise typer.Exit(EXIT_FAILED)
        with StateStore(settings.state_path) as store:
            approved, refused = store.approve(
                None if start_all else invoices or [], now=datetime.now(UTC)
            )
        for line in refused:
            err.print(line, highlight=False)
        out.print(f"approved {len(approved)} case(s): {', '.join(approved) or '-'}")
        if not approved:
            raise typer.Exit(EXIT_FAILED if refused else EXIT_DONE)
        summary = asyncio.run(_reconcile(settings, show_progress=err.is_terminal))
    print_summary(summary)
    raise typer.Exit(_exit_code(summary))


def _operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@app.command()
def check(
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Also read Kravia's answers (read-only) and check their shapes against what "
            "kravia-sync assumes; shows the contract the first-contact canary recorded.",
        ),
    ] = False,
) -> None:
    """Validate the configuration, each source's settings, the state store, and the token."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        out.print(f"[green]ok[/] {config}: valid configuration", highlight=False)
        for source in settings.sources:
            build_connector(settings, source)
            out.print(f"[green]ok[/] source {source.name} ({source.connector})", highlight=False)
        with StateStore(settings.state_path) as store:
            version = store.schema_version()
            known_id = store.latest_kravia_id()
            contract = stored_contract(store, settings.kravia.base_url)
        out.print(
            f"[green]ok[/] state store {settings.state_path} (schema {version})", highlight=False
        )

        async def try_token() -> list[Finding]:
            async with _client(settings) as client:
                await client.check_token()
                return await probe_kravia(client, kravia_id=known_id) if probe else []

        try:
            findings = asyncio.run(try_token())
        except KraviaAuthError as exc:
            raise FailedError(str(exc)) from None
        except KraviaError as exc:
            raise FailedError(
                f"could not reach Kravia at {settings.kravia.base_url}: {exc}"
            ) from None
        out.print(f"[green]ok[/] Kravia at {settings.kravia.base_url} accepts the token")
    if probe:
        _print_findings(findings)
        _print_contract(contract, settings)
        if differing(findings):
            raise typer.Exit(EXIT_PENDING)


_VERDICT_STYLE = {Verdict.HOLDS: "green", Verdict.DIFFERS: "bold red", Verdict.NOT_SEEN: "yellow"}


def _print_findings(findings: list[Finding]) -> None:
    table = _table(title="Kravia's answers against what kravia-sync assumes (shapes only)")
    table.add_column("assumption", overflow="fold")
    table.add_column("what came back", overflow="fold")
    table.add_column("", no_wrap=True)
    table.add_column("note", overflow="fold")
    for finding in findings:
        style = _VERDICT_STYLE[finding.verdict]
        table.add_row(
            _text(finding.assumption),
            _text(finding.seen),
            _text(finding.verdict.value, style=style),
            _text(finding.note),
        )
    out.print(table)


def _print_contract(contract: Contract | None, settings: Settings) -> None:
    base_url = settings.kravia.base_url
    if settings.policy.canary == "off":
        out.print('first-contact canary: off (policy.canary = "off")')
    if contract is None:
        out.print(
            f"contract with {base_url}: none recorded yet; the first pass with a new invoice "
            "sends that one case first and checks it (the canary)",
            highlight=False,
        )
        return
    when = f"{contract.checked_at:%Y-%m-%d %H:%M} UTC"
    case = contract.accounting_invoice_id or "?"
    if contract.confirmed:
        out.print(
            f"contract with {base_url}: [green]confirmed[/] {when} on case {case} "
            f"(Kravia id {contract.kravia_id})",
            highlight=False,
        )
        return
    out.print(
        f"contract with {base_url}: [bold red]differs[/] (checked {when} on case {case}); "
        "passes send nothing until it is read right:",
        highlight=False,
    )
    _print_findings(differing(contract.findings))


@app.command()
def unlock(
    force: Annotated[
        bool, typer.Option("--force", help="Remove the lease whoever holds it.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Show the writer lease; with --force, remove it (refused while its holder runs on this
    machine)."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        with StateStore(settings.state_path) as store:
            lease = store.current_lease()
            if lease is None:
                out.print("no lease is held")
                return
            if not force:
                out.print(f"lease held by {lease['holder']} until {lease['expires_at']}")
                raise typer.Exit(EXIT_FAILED)
            try:
                store.force_unlock()
            except LeaseHeldError:
                raise FailedError(
                    f"the lease holder ({lease['holder']}) is still running on this machine: "
                    "stop it (or wait for it to finish); --force only removes the lease of a "
                    "process that is gone"
                ) from None
            out.print(
                f"removed the lease held by {lease['holder']}. If that process still runs "
                "elsewhere it can no longer write: its next write is refused (its calls in "
                "flight are settled by the next pass)",
                highlight=False,
            )


@app.command()
def resolve(
    invoice: Annotated[
        str | None,
        typer.Argument(help="Invoice number or accountingInvoiceId of a parked case."),
    ] = None,
    decision: Annotated[
        str,
        typer.Option(
            "--as",
            help="Cases: 'new' (Kravia has no case for it: send it from the start) or "
            "'kravia:ID' (it is Kravia's case ID: continue that one). Payments: 'sent' (it "
            "reached Kravia) or 'new' (it did not: send it).",
        ),
    ] = "",
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the journal).")] = "",
    payment: Annotated[
        str | None, typer.Option("--payment", help="Resolve this payment or credit note id.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --as new: send a case known to be in Kravia again, once you have "
            "checked Kravia no longer has it.",
        ),
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Settle a case (or payment) the engine parked for a person: rejected or needs_review.
    The decision is journaled with your reason; the next pass carries it out."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        if not reason.strip():
            raise FailedError('a resolution needs a reason: --reason "…"')
        if (invoice is None) == (payment is None):
            raise FailedError("name one case (INVOICE) or one payment (--payment ID)")
        with StateStore(settings.state_path) as store:
            if payment is not None:
                line = resolve_payment(store, payment, decision, reason.strip(), _operator())
            else:
                assert invoice is not None  # noqa: S101 - checked above
                line = resolve_case(
                    store, invoice, decision, reason.strip(), _operator(), force=force
                )
    out.print(line, highlight=False)


@app.command()
def daemon(config: ConfigOption = DEFAULT_CONFIG, secrets_dir: SecretsOption = None) -> None:
    """Run as a service: each source on its schedule, /healthz, /readyz and /metrics over HTTP,
    JSON log lines on stdout. SIGTERM stops cleanly, SIGHUP reloads the configuration."""
    from kravia_sync.service.daemon import Daemon, run_daemon  # noqa: PLC0415

    def settings_for_daemon() -> Settings:
        settings = load_settings(config, secrets_dir=secrets_dir)
        register_secrets(settings.secret_values())
        configure_logging(level=settings.log.level, fmt=settings.log.format, stream=sys.stdout)
        return settings

    with _user_errors():
        settings = settings_for_daemon()
        if settings.kravia_token is None:
            _client(settings)  # raises the message that says where the token goes
        code = run_daemon(
            Daemon(settings, client_factory=_daemon_clients(), reload=settings_for_daemon)
        )
    raise typer.Exit(code)


@webhook_app.command("configure")
def webhook_configure(
    url: Annotated[
        str, typer.Option("--url", help="Where Kravia sends webhooks: https://…/kravia/webhook.")
    ],
    disable: Annotated[
        bool, typer.Option("--disable", help="Keep the URL, but have Kravia send nothing.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Set the creditor's webhook at Kravia: the URL, the secret it signs with (from the
    secrets directory or the environment) and whether it is enabled."""
    with _user_errors():
        settings = _settings(config, secrets_dir)
        problem = webhook_url_problem(url)
        if problem is not None:
            raise FailedError(f"--url {url}: {problem}")
        if settings.kravia_webhook_secret is None:
            raise FailedError(
                f"no webhook secret: set the environment variable {WEBHOOK_SECRET_ENV}, or put "
                f"it in a file named {WEBHOOK_SECRET_FILE} in the secrets directory "
                "(--secrets-dir); the daemon checks signatures with the same secret"
            )
        secret = settings.kravia_webhook_secret.get_secret_value()

        async def configure() -> None:
            async with _client(settings) as client:
                await client.configure_webhook(
                    creditor_id=settings.kravia.creditor_id,
                    url=url,
                    secret=secret,
                    enabled=not disable,
                )

        try:
            asyncio.run(configure())
        except KraviaAuthError as exc:
            raise FailedError(str(exc)) from None
        except KraviaError as exc:
            raise FailedError(f"Kravia did not set the webhook: {exc}") from None
    state = "disabled" if disable else "enabled"
    out.print(f"webhook at Kravia {state}: {url}", highlight=False)


def webhook_url_problem(url: str) -> str | None:
    """Why Kravia cannot be sent `url` as its webhook, or None. Webhooks carry a signature,
    not encryption: plain http is only for this machine (tests, the simulator)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "not an http(s) URL such as https://sync.example.no/kravia/webhook"
    if parts.scheme == "http" and not _is_local_host(parts.hostname):
        return "webhooks must go over https:// (plain http only to localhost)"
    return None


def _is_local_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def init(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[
        str, typer.Option("--source", help="The connector of the example source: folder, sql, …")
    ] = "folder",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example configuration."""
    from kravia_sync.cli.example import EXAMPLE_CONFIG  # noqa: PLC0415
    from kravia_sync.connector import load_connector  # noqa: PLC0415

    if config.exists() and not force:
        err.print(f"[red]error:[/] {config} exists; use --force to overwrite it")
        raise typer.Exit(EXIT_FAILED)
    try:
        example = load_connector(source).example_config
    except (LookupError, TypeError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    if not example:
        example = f'[[sources]]\nname = "{source}"\nconnector = "{source}"\n[sources.settings]\n'
    config.write_text(EXAMPLE_CONFIG + "\n" + example, encoding="utf-8")
    out.print(f"wrote {config}: edit creditor_id and the source, then run `kravia-sync check`")


@app.command("connectors")
def connectors_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print them as JSON, with each settings JSON Schema.")
    ] = False,
) -> None:
    """List the installed connectors (built-in and third-party): package, version, settings."""
    from kravia_sync.plugins import installed_connectors  # noqa: PLC0415

    found = installed_connectors()
    if as_json:
        sys.stdout.write(json.dumps([info.as_json() for info in found], indent=2) + "\n")
    else:
        table = _table("connector", "package", "version", "settings (* required)")
        for info in found:
            settings = (
                _text(f"cannot load: {info.error}", style="red")
                if info.error
                else _text(", ".join(info.settings_keys()))
            )
            table.add_row(info.name, info.package, info.version, settings)
        out.print(table)
        out.print("JSON Schema of each connector's settings: kravia-sync connectors --json")
    if any(info.error for info in found):
        raise typer.Exit(EXIT_FAILED)


@app.command("new-connector")
def new_connector(
    name: Annotated[str, typer.Argument(help="The connector's name, e.g. my-erp.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the package's directory.")
    ] = Path(),
) -> None:
    """Create a connector package: pyproject with the entry point, settings, connector, a test
    running the conformance kit, README."""
    from kravia_sync.cli.scaffold import ConnectorNames, scaffold  # noqa: PLC0415

    try:
        target = scaffold(name, directory)
    except (ValueError, FileExistsError) as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    names = ConnectorNames.of(name)
    out.print(
        f"created {target} (package {names.dist}, module {names.module})",
        markup=False,
        soft_wrap=True,
    )
    out.print(
        f"next: cd {target} && pip install -e '.[test]' && pytest", markup=False, soft_wrap=True
    )


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8085,
    token: Annotated[
        str | None, typer.Option(envvar="KRAVIA_SIM_TOKEN", help="Token to accept.")
    ] = None,
    creditor_id: Annotated[int | None, typer.Option(help="Only accept this creditor.")] = None,
    latency_ms: Annotated[float, typer.Option(help="Latency added to every call.")] = 0.0,
    error_5xx: Annotated[float, typer.Option(help="Share of calls answered 5xx.")] = 0.0,
    rate_limit_429: Annotated[float, typer.Option(help="Share of calls answered 429.")] = 0.0,
    rate_limit: Annotated[
        float | None,
        typer.Option(
            help="Enforce this many calls per second (a token bucket of one second's worth); "
            "calls beyond are answered 429 with Retry-After."
        ),
    ] = None,
    drop_after_commit: Annotated[
        float, typer.Option(help="Share of mutating calls applied, then dropped unanswered.")
    ] = 0.0,
    timeout: Annotated[float, typer.Option(help="Share of calls that stall.")] = 0.0,
    data_file: Annotated[Path | None, typer.Option(help="Keep cases in this JSON file.")] = None,
    # the simulator's DetailsShape and SearchShape names (a test keeps them the same)
    details_shape: Annotated[
        Literal["list", "object", "named"], typer.Option(help="Shape of invoice details.")
    ] = "list",
    search_shape: Annotated[
        Literal["items", "list", "data", "value"], typer.Option(help="Envelope of search.")
    ] = "items",
    search_without_aid: Annotated[
        bool,
        typer.Option("--search-without-aid", help="Leave accountingInvoiceId out of search."),
    ] = False,
    clock_offset_seconds: Annotated[
        float, typer.Option(help="Kravia's clock minus the host's, in seconds.")
    ] = 0.0,
    register_shape: Annotated[
        Literal["id", "bare", "invoice_id", "no_id"],
        typer.Option(help="What register answers."),
    ] = "id",
    time_zone: Annotated[
        Literal["utc", "local", "offset"], typer.Option(help="How lastUpdatedTime is written.")
    ] = "utc",
) -> None:
    """Run the local Kravia simulator (the same API, strict validation, faults on demand)."""
    _require_simulator_extra("simulate")
    from kravia_sync.testing.simulator import Faults, Shape, serve  # noqa: PLC0415

    try:
        shape = Shape.from_dict(
            {
                "details_shape": details_shape,
                "search_shape": search_shape,
                "search_without_aid": search_without_aid,
                "clock_offset_seconds": clock_offset_seconds,
                "register_shape": register_shape,
                "time_zone": time_zone,
            }
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--clock-offset-seconds") from None

    accepted = token or secrets.token_urlsafe(16)
    if token is None:
        out.print(f"accepting the token: {accepted}  (set KRAVIA_SIM_TOKEN to choose one)")
    out.print(f"Kravia simulator on http://{host}:{port}/api/v2/  (cases: /_sim/cases)")
    faults = Faults(
        latency_ms=latency_ms,
        rate_limit=rate_limit,
        error_5xx=error_5xx,
        rate_limit_429=rate_limit_429,
        drop_after_commit=drop_after_commit,
        timeout=timeout,
    )
    serve(
        host=host,
        port=port,
        token=accepted,
        creditor_id=creditor_id,
        faults=faults,
        data_file=data_file,
        shape=shape,
    )


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo keeps its files and state.")
    ] = Path("state/demo"),
) -> None:
    """Run a pass of the bundled sample invoices against the bundled simulator. Run it twice:
    the second pass has nothing to do."""
    _require_simulator_extra("demo")
    from kravia_sync.cli.demo import run_demo  # noqa: PLC0415

    with _user_errors():
        summary = run_demo(
            directory, console=out, show_summary=lambda shown: print_summary(shown, out)
        )
    raise typer.Exit(EXIT_FAILED if summary.status == RunStatus.FAILED else EXIT_DONE)


def _require_simulator_extra(command: str) -> None:
    """The bundled simulator reads multipart uploads with python-multipart, which comes with
    the `[simulator]` extra, not with kravia-sync itself: say so, rather than fail at the
    first upload."""
    try:
        import python_multipart  # noqa: F401, PLC0415
    except ImportError:
        err.print(
            f"`kravia-sync {command}` runs the bundled simulator, which needs the [simulator] "
            "extra: pip install 'kravia-sync[simulator]'",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILED) from None


def main() -> None:
    app()
