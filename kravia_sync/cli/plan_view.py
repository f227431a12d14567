"""What `plan` shows, in both its forms: the work a pass would do (what makes exit code 2),
and what it would leave alone, each with its reason: held invoices, invoices awaiting
approval, invoices not yet eligible, and cases waiting for a later pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kravia_sync.cli.common import PENDING_STEPS, new_table, out
from kravia_sync.engine.summary import PlannedAction, RunStatus, RunSummary

__all__ = ["PlanView", "print_plan"]

# Steps that forward money (a payment or a credit note) rather than move a case on.
PAYMENT_STEPS = frozenset({"send_payment", "verify_payment"})
# How many invoices of a long list the human form names (`--json` lists every one).
SHOWN = 20


@dataclass(frozen=True)
class PlanView:
    """The planned actions of a dry run, by what a pass would do about them."""

    actions: list[PlannedAction]  # work for the pass: a call, or a decision it would write
    held: list[PlannedAction]  # held by an operator, with what the hold comes to
    awaiting: list[PlannedAction]  # registered, waiting for approval (start = manual)
    not_eligible: list[PlannedAction]  # kept out by the policy for now
    not_now: list[PlannedAction]  # work for a later pass (a backoff, a copy to fix, …)

    @classmethod
    def of(cls, planned: Iterable[PlannedAction]) -> PlanView:
        view = cls([], [], [], [], [])
        for action in planned:
            group = view._group(action)
            if group is not None:
                group.append(action)
        return view

    def _group(self, action: PlannedAction) -> list[PlannedAction] | None:
        if action.step in PENDING_STEPS:
            return self.actions
        if action.step == "held":
            return self.held
        if action.step == "waiting":
            return self.not_eligible
        if action.step == "none":  # nothing to do for it, unless it waits for an approval
            return self.awaiting if "awaiting approval" in action.detail else None
        return self.not_now

    @property
    def pending(self) -> bool:
        """Whether a pass would do anything (`plan` exits 2)."""
        return bool(self.actions)

    @property
    def listed(self) -> bool:
        """Whether anything is listed that a pass would leave alone."""
        return bool(self.held or self.awaiting or self.not_eligible or self.not_now)

    def as_dict(self) -> dict[str, Any]:
        def rows(actions: list[PlannedAction]) -> list[dict[str, str]]:
            return [dataclasses.asdict(action) for action in actions]

        return {
            "pending": self.pending,
            "actions": rows(self.actions),
            "held": rows(self.held),
            "awaiting_approval": rows(self.awaiting),
            "not_eligible": rows(self.not_eligible),
            "not_now": rows(self.not_now),
        }


def print_plan(summary: RunSummary, view: PlanView) -> None:
    """The human form: the work first (or that there is none), then what waits, and why."""
    if summary.status == RunStatus.FAILED:
        _print_failure(summary)
    elif view.pending:
        _print_actions(view.actions)
    elif view.listed:
        out.print("plan: nothing to do (what is listed below waits for a person or the policy)")
    else:
        out.print("plan: nothing to do")
    for action in view.held:
        out.print(f"[yellow]held[/] {_named(action)}: {action.detail}", highlight=False)
    if view.awaiting:
        out.print(
            f"{len(view.awaiting)} case(s) awaiting approval (start = manual): "
            + _numbers(view.awaiting)
            + "; approve with kravia-sync start",
            highlight=False,
        )
    _print_not_eligible(view.not_eligible)
    for action in view.not_now:
        out.print(f"[yellow]{action.step}[/] {_named(action)}: {action.detail}", highlight=False)
    if summary.counts.get("changed"):
        out.print(f"{summary.counts['changed']} case(s) changed after registration (not re-sent)")
    _print_problems(summary.problems)


def _print_failure(summary: RunSummary) -> None:
    """Why the plan is not whole: what is listed below is only what could be read."""
    out.print("[red]plan failed[/]: what follows is only what could be read", highlight=False)
    for source in summary.sources:
        if source.status != "ok":
            out.print(f"[red]source {source.name} failed:[/] {source.error}", highlight=False)
    if summary.error:
        out.print(f"[red]error:[/] {summary.error}", highlight=False)


def _print_actions(actions: list[PlannedAction]) -> None:
    cases = [action for action in actions if action.step not in PAYMENT_STEPS]
    payments = [action for action in actions if action.step in PAYMENT_STEPS]
    if cases:
        table = new_table(title=f"plan: {len(cases)} case(s) with something to do")
        for column in ("source", "invoice", "accountingInvoiceId", "change", "next step", "detail"):
            table.add_column(column, overflow="fold")
        for action in cases:
            table.add_row(
                action.source,
                action.invoice_number,
                action.accounting_invoice_id,
                action.change,
                action.step,
                action.detail,
            )
        out.print(table)
    if payments:
        table = new_table(
            title=f"plan: {len(payments)} payment(s) or credit note(s) to forward to Kravia"
        )
        for column in ("source", "accountingInvoiceId", "kind", "next step", "detail"):
            table.add_column(column, overflow="fold")
        for action in payments:
            table.add_row(
                action.source,
                action.accounting_invoice_id,
                action.change,
                action.step,
                action.detail,
            )
        out.print(table)


def _print_not_eligible(waiting: list[PlannedAction]) -> None:
    if not waiting:
        return
    out.print(f"not yet eligible ({len(waiting)}), not sent:", highlight=False)
    for action in waiting[:SHOWN]:
        out.print(f"  {_named(action)}: {action.detail}", highlight=False)
    if len(waiting) > SHOWN:
        out.print(f"  … and {len(waiting) - SHOWN} more (plan --json lists every one)")


def _print_problems(problems: list[dict[str, str]]) -> None:
    """The run's problems, but for the holds (listed as held above)."""
    for problem in problems:
        if problem["field"] == "hold":
            continue
        label = "needs attention" if problem["field"] == "payment" else "quarantined"
        out.print(
            f"[yellow]{label}[/] {problem['source']} {problem['record']}: "
            f"{problem['field']}: {problem['reason']}",
            highlight=False,
        )


def _named(action: PlannedAction) -> str:
    """Source and invoice number, with the accountingInvoiceId when it says more."""
    number = action.invoice_number
    known = action.accounting_invoice_id
    return f"{action.source} {number}" + (f" ({known})" if known and known != number else "")


def _numbers(actions: list[PlannedAction]) -> str:
    shown = ", ".join(action.invoice_number for action in actions[:SHOWN])
    return shown + (" …" if len(actions) > SHOWN else "")
