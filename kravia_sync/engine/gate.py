"""The gate before every call that changes a case in Kravia: may this step be sent now?

Pure: the case, the invoice as the source has it now, the policy, today's date and what the
invoice copy looks like come in; a refusal with its reason (or None) comes out. The engine asks
at the moment of each register, upload and Start (not only when an invoice is first seen), and
`plan` asks the same question, so both say the same. Holds are checked once more inside the
transaction that journals the call's intent (`StateStore.commit_case_writes`), so a hold placed
while a pass runs stops every call not yet on its way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from kravia_sync.documents import CopyRead
from kravia_sync.lifecycle import CaseState, Phase, StartPolicy, Step
from kravia_sync.model import Invoice
from kravia_sync.settings import PolicySettings

__all__ = ["Refusal", "RefusalKind", "gate_refusal", "hold_reason", "ineligibility", "judge"]

# The steps the gate judges: they change what Kravia holds against a debtor.
GATED_STEPS = frozenset({Step.REGISTER, Step.UPLOAD, Step.START})


class RefusalKind(StrEnum):
    HELD = "held"  # an operator holds the invoice
    WAITING = "waiting"  # the policy keeps it out today (not overdue enough, too small, paid)
    INVALID = "invalid"  # its copy cannot be sent
    GONE = "gone"  # the source no longer has it (only lost answers are settled)
    APPROVAL = "approval"  # start = manual and nobody approved it


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: RefusalKind
    field: str
    reason: str


def hold_reason(holds: Mapping[str, str], invoice: Invoice | CaseState) -> str | None:
    """The reason an operator holds this invoice (by accountingInvoiceId or number), or None."""
    if not holds:
        return None
    reason = holds.get(invoice.accounting_invoice_id)
    return reason if reason is not None else holds.get(invoice.invoice_number)


def ineligibility(invoice: Invoice, policy: PolicySettings, today: date) -> str | None:
    """Why the policy keeps `invoice` out of collection today, or None when it may go."""
    if invoice.amount <= 0:
        return f"nothing outstanding (amount {invoice.amount}): not sent to collection"
    overdue = invoice.days_overdue(today)
    if overdue < policy.min_days_overdue:
        state = f"{overdue} days overdue" if overdue >= 0 else "not due yet"
        try:
            ready = f"on {invoice.due_date + timedelta(days=policy.min_days_overdue)}"
        except OverflowError:
            ready = "never (the due date is at the end of the calendar)"
        return (
            f"due {invoice.due_date}, {state}; collection may start "
            f"{policy.min_days_overdue} days after the due date, {ready}"
        )
    if invoice.amount < policy.min_amount:
        return f"amount {invoice.amount} is below min_amount {policy.min_amount}"
    return None


def judge(  # noqa: PLR0911 - one return per rule reads best
    step: Step,
    case: CaseState | None,
    invoice: Invoice | None,
    *,
    policy: PolicySettings,
    today: date,
    hold: str | None,
    copy_problem: Callable[[], str | None],
) -> Refusal | None:
    """Why `step` may not be sent for `case` now, or None when it may.

    Register, upload and Start need the invoice in the source now, not held, eligible under
    the policy (days overdue, minimum amount, something outstanding), and its copy, when it has
    one, readable and a PDF (`copy_problem` is asked only then, and may read the file). Start
    also needs the copy uploaded first, and an approval under start = manual."""
    if step not in GATED_STEPS:
        return None
    if invoice is None:
        return Refusal(
            RefusalKind.GONE,
            "invoice",
            "no longer in the source (or invalid there now): nothing more is sent",
        )
    if hold is not None:
        return Refusal(
            RefusalKind.HELD, "hold", f"on hold: {hold} (kravia-sync release to let it go)"
        )
    waiting = ineligibility(invoice, policy, today)
    if waiting is not None:
        field = "due_date" if waiting.startswith("due") else "amount"
        return Refusal(RefusalKind.WAITING, field, waiting)
    if step is Step.UPLOAD and invoice.document is None:
        return Refusal(
            RefusalKind.INVALID, "document", "the invoice copy is no longer in the source"
        )
    if invoice.document is not None and step is not Step.START:
        problem = copy_problem()
        if problem is not None:
            return Refusal(RefusalKind.INVALID, "document", problem)
    if step is Step.START:
        return _start_refusal(case, invoice, policy)
    return None


def _start_refusal(
    case: CaseState | None, invoice: Invoice, policy: PolicySettings
) -> Refusal | None:
    if case is None:
        raise ValueError("a Start is judged for a stored case")
    if invoice.document is not None and case.phase is not Phase.DOCUMENTED:
        return Refusal(
            RefusalKind.INVALID,
            "document",
            "the invoice copy is not uploaded yet: collection is not started without it",
        )
    if policy.start is StartPolicy.MANUAL and case.approved_at is None:
        return Refusal(
            RefusalKind.APPROVAL,
            "start",
            "awaiting approval (start = manual): kravia-sync start",
        )
    return None


def gate_refusal(
    step: Step,
    case: CaseState | None,
    invoice: Invoice,
    *,
    policy: PolicySettings,
    today: date,
    holds: Mapping[str, str],
    check_document: Callable[[Invoice], CopyRead] | None,
) -> tuple[Refusal | None, bytes | None]:
    """Why the gate keeps `step` from going for this invoice now (None: it may go, or only
    waits for an approval; asked again at the moment of the call), and the copy the gate
    read and found sendable (None: not read, or none). `check_document` reads the copy
    (None: it is not read here)."""
    read: list[CopyRead] = []

    def copy_problem() -> str | None:
        if check_document is None:
            return None
        read.append(check_document(invoice))
        return read[-1].problem

    refusal = judge(
        step,
        case,
        invoice,
        policy=policy,
        today=today,
        hold=hold_reason(holds, invoice),
        copy_problem=copy_problem,
    )
    if refusal is not None and refusal.kind is not RefusalKind.APPROVAL:
        return refusal, None
    return None, read[-1].content if read else None
