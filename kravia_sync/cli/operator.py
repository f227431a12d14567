"""The commands a person decides with: `hold`, `release`, `start`, `resolve` and `unlock`."""

import asyncio
import getpass
import socket
from datetime import UTC, datetime
from typing import Annotated

import typer

from kravia_sync.cli.common import (
    EXIT_FAILED,
    ConfigOption,
    FailedError,
    SecretsOption,
    app,
    err,
    out,
    settings_from,
    user_errors,
)
from kravia_sync.cli.summary import exit_code, print_summary, run_pass
from kravia_sync.engine.holds import HoldEffect, hold_effect, hold_effect_text
from kravia_sync.engine.resolve import resolve_case, resolve_payment
from kravia_sync.settings import (
    DEFAULT_CONFIG,
)
from kravia_sync.state.errors import LeaseHeldError
from kravia_sync.state.store import StateStore

__all__ = ["hold", "release", "resolve", "start", "unlock"]


@app.command()
def hold(
    invoice: Annotated[str, typer.Argument(help="Invoice number or accountingInvoiceId.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown wherever it is held).")],
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Hold an invoice: it is never sent to Kravia. One already in collection is paused by
    the next pass when policy.hold_action is set; otherwise it is flagged for you to pause it
    in Kravia."""
    with user_errors():
        settings = settings_from(config, secrets_dir)
        if not reason.strip():
            err.print('a hold needs a reason: --reason "…"')
            raise typer.Exit(EXIT_FAILED)
        with StateStore(settings.state_path) as store:
            invoice = _case_id(store, invoice)
            store.hold(invoice, reason=reason.strip(), by=_operator(), now=datetime.now(UTC))
            known = store.cases_named(invoice)
    out.print(f"{invoice} is on hold: {reason.strip()}", highlight=False)
    action = settings.policy.hold_action
    if not known:
        out.print(f"{invoice}: {hold_effect_text(None, action)}", highlight=False)
    for case in known:
        by_hand = hold_effect(case, action) is HoldEffect.PAUSE_BY_HAND
        line = f"{case.accounting_invoice_id}: {hold_effect_text(case, action)}"
        out.print(f"[yellow]{line}[/]" if by_hand else line, highlight=False)


@app.command()
def release(
    invoice: Annotated[str, typer.Argument(help="Invoice number or accountingInvoiceId.")],
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Release a hold: the invoice is handled again from the next pass."""
    with user_errors():
        settings = settings_from(config, secrets_dir)
        with StateStore(settings.state_path) as store:
            released = store.release(_case_id(store, invoice))
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
    with user_errors():
        settings = settings_from(config, secrets_dir)
        if not invoices and not start_all:
            err.print("name the invoices to start, or give --all")
            raise typer.Exit(EXIT_FAILED)
        with StateStore(settings.state_path) as store:
            approved, refused = store.approve(
                None if start_all else invoices or [], now=datetime.now(UTC)
            )
        for line in refused:
            err.print(line, highlight=False)
        if not approved:
            if start_all:
                err.print("no case is awaiting approval: nothing to start")
            raise typer.Exit(EXIT_FAILED)
        out.print(f"approved {len(approved)} case(s): {', '.join(approved)}")
        summary = asyncio.run(run_pass(settings, show_progress=err.is_terminal))
    print_summary(summary)
    raise typer.Exit(exit_code(summary))


def _operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


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
    with user_errors():
        settings = settings_from(config, secrets_dir)
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
    with user_errors():
        settings = settings_from(config, secrets_dir)
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


def _case_id(store: StateStore, invoice: str) -> str:
    """The id a hold is kept under: an invoice's later id (an alias, see `cases`) is held as
    the accountingInvoiceId its case keeps."""
    case_id = store.case_of_alias(invoice)
    if case_id is None:
        return invoice
    out.print(f"{invoice} is a later id of the invoice registered as {case_id}", highlight=False)
    return case_id
