"""The commands that show the state store: `status` and `cases`."""

from typing import Annotated, Any

import typer

from kravia_sync.cli.common import (
    EXIT_FAILED,
    ConfigOption,
    SecretsOption,
    app,
    err,
    new_table,
    out,
    settings_from,
    user_errors,
)
from kravia_sync.engine.holds import HoldEffect, hold_effect, hold_effect_text
from kravia_sync.lifecycle import CaseState
from kravia_sync.settings import (
    DEFAULT_CONFIG,
)
from kravia_sync.state.store import StateStore

__all__ = ["cases", "status"]


@app.command()
def status(config: ConfigOption = DEFAULT_CONFIG, secrets_dir: SecretsOption = None) -> None:
    """Counts per phase, quarantined records with reasons, cases that need review, last runs."""
    with user_errors():
        settings = settings_from(config, secrets_dir)
        with StateStore(settings.state_path) as store:
            _print_status(store, hold_action=settings.policy.hold_action)


def _print_status(store: StateStore, *, hold_action: str | None) -> None:
    phases = new_table(title="cases by phase")
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
    _print_holds(store, hold_action)
    _print_payments(store)
    _print_runs(store)


def _print_quarantine(store: StateStore) -> None:
    invalid = store.quarantined("invalid")
    if invalid:
        table = new_table(title=f"quarantined records ({len(invalid)}): not sent")
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
        table = new_table(title=f"not yet eligible ({len(waiting)})")
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
        table = new_table(title="cases needing attention")
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


def _print_holds(store: StateStore, hold_action: str | None) -> None:
    never_sent, in_kravia = _holds_by_where(store)
    if never_sent:
        table = new_table(title=f"on hold, not in Kravia ({len(never_sent)}): never sent")
        for column in ("invoice", "reason", "since", "by"):
            table.add_column(column, overflow="fold")
        for invoice, row in never_sent:
            table.add_row(
                invoice, row["reason"], f"{row['held_at']:%Y-%m-%d %H:%M}", row["held_by"]
            )
        out.print(table)
    if in_kravia:
        table = new_table(title=f"on hold, already in Kravia ({len(in_kravia)})")
        for column in ("invoice", "reason", "since", "by", "what comes of it"):
            table.add_column(column, overflow="fold")
        for invoice, row, case in in_kravia:
            table.add_row(
                invoice,
                row["reason"],
                f"{row['held_at']:%Y-%m-%d %H:%M}",
                row["held_by"],
                hold_effect_text(case, hold_action),
            )
        out.print(table)
    noted = store.cases_with_attention()
    if noted:
        table = new_table(title=f"changes to make in Kravia by hand ({len(noted)})")
        for column in ("invoice", "kravia id", "what"):
            table.add_column(column, overflow="fold")
        for case in noted:
            table.add_row(case.invoice_number, str(case.kravia_id or ""), case.attention or "")
        out.print(table)


def _holds_by_where(
    store: StateStore,
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any], CaseState]]]:
    """Every hold, split: those no case of which is in Kravia (nothing of them was sent), and
    each case in Kravia that a hold is on."""
    never_sent: list[tuple[str, dict[str, Any]]] = []
    in_kravia: list[tuple[str, dict[str, Any], CaseState]] = []
    for invoice, row in store.holds().items():
        sent = [
            case
            for case in store.find_cases(invoice)
            if invoice in {case.invoice_number, case.accounting_invoice_id}
            and hold_effect(case, None) is not HoldEffect.NOTHING_TO_PAUSE
        ]
        if not sent:
            never_sent.append((invoice, row))
        in_kravia.extend((invoice, row, case) for case in sent)
    return never_sent, in_kravia


def _print_payments(store: StateStore) -> None:
    counts = store.payment_counts()
    if not counts:
        return
    out.print(
        "payments and credit notes: "
        + ", ".join(f"{phase}={count}" for phase, count in sorted(counts.items())),
        highlight=False,
    )
    table = new_table(title="latest payments and credit notes")
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
    runs = new_table(title="last runs")
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
    with user_errors():
        settings = settings_from(config, secrets_dir)
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
                table = new_table(title=f"invoice {case.invoice_number}", show_header=False)
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
                journal = new_table(title="journal")
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
