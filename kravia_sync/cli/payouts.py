"""`kravia-sync payouts`: Kravia's payouts to the creditor not yet booked, with the invoices each
covers; `kravia-sync payouts book ID --reference …` marks one booked at Kravia once the
accountant has booked it."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kravia_sync.cli.common import (
    ConfigOption,
    FailedError,
    SecretsOption,
    app,
    err,
    kravia_client,
    new_table,
    out,
    settings_from,
    styled_text,
    user_errors,
)
from kravia_sync.kravia.errors import KraviaAuthError, KraviaError
from kravia_sync.logging import redact_structure
from kravia_sync.settings import DEFAULT_CONFIG, Settings
from kravia_sync.state.store import StateStore

# The engine's payouts and the bookings' records are loaded when a payouts command runs: every
# other command (a pass above all) starts without them.
if TYPE_CHECKING:
    from kravia_sync.engine.payouts import BookingReport, BookingRequest, CoveredInvoice, Payout
    from kravia_sync.state.bookings import BookingAttempt

__all__ = ["book", "payouts", "payouts_app"]


payouts_app = typer.Typer(
    help="Kravia's payouts not yet booked, and which invoices each covers; `book` marks one "
    "booked at Kravia. Exit 0 listed, 1 Kravia could not be read.",
)
app.add_typer(payouts_app, name="payouts")

JsonOption = Annotated[bool, typer.Option("--json", help="Print it as JSON, for scripts.")]


class _Shared:
    """The options given before `book` (`payouts --config x book …`)."""

    __slots__ = ("as_json", "config", "secrets_dir")

    def __init__(self, config: Path, secrets_dir: Path | None, as_json: bool) -> None:
        self.config = config
        self.secrets_dir = secrets_dir
        self.as_json = as_json


@payouts_app.callback(invoke_without_command=True)
def payouts(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the settlements Kravia has not seen booked: date, amount, the invoices each covers
    (invoice number and source where the state store knows the case, else "not ours") and any
    booking of it journaled here. Exit 0 listed, 1 Kravia could not be read."""
    ctx.obj = _Shared(config, secrets_dir, as_json)
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        settings = settings_from(config, secrets_dir)
        listed = asyncio.run(_unbooked(settings, as_json=as_json))
    if as_json:
        _write_json({"settlements": [_payout_json(payout) for payout in listed]})
    else:
        _print_payouts(listed)


@payouts_app.command()
def book(
    ctx: typer.Context,
    settlement_id: Annotated[
        int, typer.Argument(metavar="ID", help="The settlement's id, as listed.")
    ],
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            help="Where the accountant booked it (the voucher): sent to Kravia as "
            "internalAccountingId.",
        ),
    ],
    by: Annotated[
        str | None, typer.Option("--by", help="Who books it (default: your user name).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help=f"The configuration file (default: {DEFAULT_CONFIG}, or as given before book).",
        ),
    ] = None,
    secrets_dir: SecretsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark one settlement booked at Kravia (PATCH settlements/{id}/bookkeep), journaled with
    who, when and the reference. Exactly once: after a lost answer it reads the settlement
    back, never sending blindly. Exit 0 booked; 1 no such settlement, already booked, or
    Kravia refused or could not be reached."""
    shared: _Shared | None = ctx.obj if isinstance(ctx.obj, _Shared) else None
    as_json = as_json or (shared is not None and shared.as_json)
    with user_errors():
        settings = settings_from(
            config or (shared.config if shared else DEFAULT_CONFIG),
            secrets_dir or (shared.secrets_dir if shared else None),
        )
        if not reference.strip():
            raise FailedError(
                'a booking needs a reference: --reference "…" (the voucher in your books)'
            )
        from kravia_sync.engine.payouts import BookingRequest  # noqa: PLC0415 - see the imports

        request = BookingRequest(settlement_id, reference.strip(), by or _os_user())
        report = asyncio.run(_book(settings, request, as_json=as_json))
    if as_json:
        _write_json(_report_json(report))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        raise FailedError("cannot tell who you are from the system: give --by NAME") from None


# --- talking to Kravia --------------------------------------------------------------------------


async def _unbooked(settings: Settings, *, as_json: bool) -> list[Payout]:
    from kravia_sync.engine.payouts import unbooked_payouts  # noqa: PLC0415 - see the imports

    with StateStore(settings.state_path) as store:
        async with kravia_client(settings) as client:
            try:
                return await unbooked_payouts(store, client)
            except KraviaError as exc:
                raise _unreachable(settings, exc, as_json=as_json) from None


async def _book(settings: Settings, request: BookingRequest, *, as_json: bool) -> BookingReport:
    from kravia_sync.engine.payouts import book_payout  # noqa: PLC0415 - see the imports

    with StateStore(settings.state_path) as store:
        async with kravia_client(settings) as client:
            try:
                return await book_payout(store, client, request)
            except KraviaError as exc:
                raise _unreachable(settings, exc, as_json=as_json) from None


def _unreachable(settings: Settings, exc: KraviaError, *, as_json: bool) -> FailedError:
    """The error for settlements Kravia would not list (nothing was journaled or sent)."""
    if isinstance(exc, KraviaAuthError):
        message = str(exc)
    else:
        message = f"could not read Kravia's settlements at {settings.kravia.base_url}: {exc}"
    if as_json:
        _write_json({"error": message})
    return FailedError(message)


# --- showing it ---------------------------------------------------------------------------------


def _write_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(redact_structure(payload), indent=2, ensure_ascii=False) + "\n")


def _invoice_json(invoice: CoveredInvoice) -> dict[str, Any]:
    return {
        "kravia_id": invoice.kravia_id,
        "amount": str(invoice.amount),
        "ours": invoice.ours,
        "invoice_number": invoice.invoice_number,
        "accounting_invoice_id": invoice.accounting_invoice_id,
        "source": invoice.source,
    }


def _booking_json(attempt: BookingAttempt | None) -> dict[str, Any] | None:
    if attempt is None:
        return None
    return {
        "attempt_id": attempt.attempt_id,
        "reference": attempt.reference,
        "by": attempt.booked_by,
        "at": attempt.at.isoformat(),
        "outcome": None if attempt.outcome is None else attempt.outcome.value,
        "outcome_at": None if attempt.outcome_at is None else attempt.outcome_at.isoformat(),
        "http_status": attempt.http_status,
        "message": attempt.message,
    }


def _payout_json(payout: Payout) -> dict[str, Any]:
    return {
        "id": payout.id,
        "date": None if payout.settled_on is None else payout.settled_on.isoformat(),
        "amount": str(payout.amount),
        "invoices": [_invoice_json(invoice) for invoice in payout.invoices],
        "booking": _booking_json(payout.booking),
    }


def _report_json(report: BookingReport) -> dict[str, Any]:
    return {
        "settlement_id": report.settlement_id,
        "result": report.result.value,
        "ok": report.ok,
        "sent": report.sent,
        "message": report.message,
        "booking": _booking_json(report.attempt),
    }


def _invoice_text(invoice: CoveredInvoice) -> str:
    if not invoice.ours:
        return f"Kravia {invoice.kravia_id}, not ours: {invoice.amount}"
    return f"{invoice.invoice_number} ({invoice.source}): {invoice.amount}"


def _booking_text(attempt: BookingAttempt | None) -> str:
    """Our latest attempt to book a settlement Kravia still lists unbooked."""
    if attempt is None:
        return ""
    sent = f"{attempt.at:%Y-%m-%d %H:%M} by {attempt.booked_by} as {attempt.reference}"
    if attempt.unsettled:
        return f"sent {sent}, answer lost: run `payouts book` again to settle it"
    if attempt.outcome == "booked":
        return f"booked {sent}, yet Kravia lists it unbooked"
    return f"{attempt.outcome} {sent}: {attempt.message or ''}".rstrip(": ")


def _print_payouts(listed: list[Payout]) -> None:
    if not listed:
        out.print("no unbooked payouts: Kravia lists every settlement as booked")
        return
    table = new_table(title=f"payouts not yet booked ({len(listed)})")
    table.add_column("settlement", justify="right")
    table.add_column("date")
    table.add_column("amount", justify="right")
    table.add_column("invoices covered", overflow="fold")
    table.add_column("booking", overflow="fold")
    for payout in listed:
        table.add_row(
            str(payout.id),
            "" if payout.settled_on is None else payout.settled_on.isoformat(),
            str(payout.amount),
            styled_text("\n".join(_invoice_text(invoice) for invoice in payout.invoices)),
            styled_text(_booking_text(payout.booking)),
        )
    out.print(table)
    out.print(
        "once booked in your accounts: kravia-sync payouts book SETTLEMENT --reference VOUCHER",
        highlight=False,
    )


def _print_report(report: BookingReport) -> None:
    """The result on stdout when booked, else on stderr; then the attempt it is about."""
    if report.ok:
        line = styled_text("booked ", style="green")
    else:
        line = styled_text(f"{report.result.value}: ", style="bold red")
    line.append(report.message)
    (out if report.ok else err).print(line, highlight=False, soft_wrap=True)
    attempt = report.attempt
    if attempt is not None:
        out.print(
            styled_text(
                f"journaled: attempt {attempt.attempt_id} by {attempt.booked_by} at "
                f"{attempt.at:%Y-%m-%d %H:%M:%S %Z} as {attempt.reference}"
            ),
            highlight=False,
            soft_wrap=True,
        )
