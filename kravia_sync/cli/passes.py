"""The commands that run passes: `reconcile`, `plan`, `refresh` and `daemon`."""

import asyncio
import json
import sys
from typing import Annotated

import typer

from kravia_sync.cli.common import (
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_PENDING,
    ConfigOption,
    SecretsOption,
    app,
    daemon_clients,
    err,
    kravia_client,
    out,
    settings_from,
    store_and_client,
    user_errors,
)
from kravia_sync.cli.plan_view import PlanView, print_plan
from kravia_sync.cli.summary import exit_code, print_summary, run_pass
from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.engine.summary import RunStatus, RunSummary
from kravia_sync.logging import configure_logging, redact_structure, register_secrets
from kravia_sync.settings import (
    DEFAULT_CONFIG,
    Settings,
    load_settings,
)
from kravia_sync.state.store import StateStore

__all__ = ["daemon", "plan", "reconcile", "refresh"]


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
    work pending for a person or a later pass, 1 failed."""
    with user_errors():
        settings = settings_from(config, secrets_dir)
        show_progress = not as_json and err.is_terminal
        summary = asyncio.run(
            run_pass(settings, show_progress=show_progress, confirm_gone=confirm_gone or ())
        )
    if as_json:
        sys.stdout.write(json.dumps(redact_structure(summary.as_dict()), indent=2) + "\n")
    else:
        print_summary(summary)
    raise typer.Exit(exit_code(summary))


@app.command()
def plan(
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show what a pass would do, changing nothing. Exit 0 nothing to do, 2 changes pending,
    1 error."""
    with user_errors():
        settings = settings_from(config, secrets_dir)
        with StateStore(settings.state_path) as store:
            summary = asyncio.run(Reconciler(settings, store).run(dry_run=True))
    view = PlanView.of(summary.planned)
    if as_json:
        payload = summary.as_dict() | view.as_dict()
        sys.stdout.write(json.dumps(redact_structure(payload), indent=2) + "\n")
    else:
        print_plan(summary, view)
    if summary.status == RunStatus.FAILED:
        raise typer.Exit(EXIT_FAILED)
    raise typer.Exit(EXIT_PENDING if view.pending else EXIT_DONE)


@app.command()
def refresh(config: ConfigOption = DEFAULT_CONFIG, secrets_dir: SecretsOption = None) -> None:
    """Pull back the status and capital left of Kravia's cases now (passes do it every
    kravia.status_every_seconds)."""
    with user_errors():
        settings = settings_from(config, secrets_dir)

        async def go() -> RunSummary:
            async with store_and_client(settings) as (store, client):
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
def daemon(config: ConfigOption = DEFAULT_CONFIG, secrets_dir: SecretsOption = None) -> None:
    """Run as a service: each source on its schedule, /healthz, /readyz and /metrics over HTTP,
    JSON log lines on stdout. SIGTERM stops cleanly, SIGHUP reloads the configuration."""
    from kravia_sync.service.daemon import Daemon, run_daemon  # noqa: PLC0415

    def settings_for_daemon() -> Settings:
        settings = load_settings(config, secrets_dir=secrets_dir)
        register_secrets(settings.secret_values())
        configure_logging(level=settings.log.level, fmt=settings.log.format, stream=sys.stdout)
        return settings

    with user_errors():
        settings = settings_for_daemon()
        if settings.kravia_token is None:
            kravia_client(settings)  # raises the message that says where the token goes
        code = run_daemon(
            Daemon(settings, client_factory=daemon_clients(), reload=settings_for_daemon)
        )
    raise typer.Exit(code)
