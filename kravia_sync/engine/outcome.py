"""How a pass ended: its status, and the work it leaves for a later pass or a person (the
kinds of pending work, counted). Pure: functions of the run's counts and problems.

This is the one place that knows which counts are pending work. The run's status comes from
`finished_status`, and everything else reads that status: `reconcile`'s exit code (3 for
`attention`), the runs table that `status` lists, the daemon's pass log line and its
`kravia_sync_passes` metric. The summary table and `--json` name the pending work with
`pending_work`.

Not pending: records the policy keeps out for now (not yet eligible, too small), invoices an
operator holds before they reached Kravia, cases awaiting approval (`start = manual`), and
payments waiting for their invoice to reach Kravia. Each waits on a choice already made; a
pass would do nothing about it, as `plan` says too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "PENDING_KINDS",
    "Awaits",
    "PendingKind",
    "RunStatus",
    "finished_status",
    "pending_work",
]


class RunStatus(StrEnum):
    """How a run ended (`running` only while it has not)."""

    RUNNING = "running"
    DONE = "done"  # everything it could do is done, and nothing is pending
    ATTENTION = "attention"  # done, but work is pending (`PENDING_KINDS`) or problems reported
    STOPPED = "stopped"  # stopped on request before the end (a signal, a lost lease)
    FAILED = "failed"  # a source, Kravia or the state store failed: see its error


class Awaits(StrEnum):
    """Who finishes a kind of pending work."""

    PERSON = "a person"
    LATER_PASS = "a later pass"


@dataclass(frozen=True, slots=True)
class PendingKind:
    """One kind of pending work: the run summary's count of it, and how the summary table
    names it."""

    count: str
    label: str
    awaits: Awaits


PENDING_KINDS: tuple[PendingKind, ...] = (
    # Cases and records.
    PendingKind("invalid", "quarantined (invalid)", Awaits.PERSON),
    PendingKind("rejected", "rejected by Kravia", Awaits.PERSON),
    PendingKind("needs_review", "needs review", Awaits.PERSON),
    PendingKind("errors", "cases that failed unexpectedly", Awaits.PERSON),
    PendingKind("deferred", "cases deferred", Awaits.LATER_PASS),
    # Payments and credit notes.
    PendingKind(
        "payments_deferred",
        "payments and credit notes deferred: Kravia's case could not be read",
        Awaits.LATER_PASS,
    ),
    PendingKind(
        "payments_to_retry",
        "payments and credit notes Kravia failed for now: sent again",
        Awaits.LATER_PASS,
    ),
    PendingKind(
        "payments_sending",
        "payments and credit notes whose answer was lost (to be checked)",
        Awaits.LATER_PASS,
    ),
    PendingKind(
        "payments_waiting_for_credit_note",
        "amount drops waiting for a credit note or payment on their invoice",
        Awaits.LATER_PASS,
    ),
    PendingKind(
        "payments_needs_review", "payments and credit notes that need review", Awaits.PERSON
    ),
    PendingKind(
        "payments_changed_after_sent",
        "payments and credit notes changed in the source after they were sent",
        Awaits.PERSON,
    ),
    # Holds on cases already in Kravia.
    PendingKind("held_not_paused", "on hold but collecting in Kravia: pause it", Awaits.PERSON),
    PendingKind("hold_action_deferred", "hold actions deferred", Awaits.LATER_PASS),
    PendingKind("hold_action_failed", "hold actions refused or lost", Awaits.PERSON),
    # Notes for a person on cases in Kravia.
    PendingKind(
        "gone_unexplained",
        "gone from the source, and Kravia still collects",
        Awaits.PERSON,
    ),
    PendingKind("duplicated_in_kravia", "held twice in Kravia", Awaits.PERSON),
    PendingKind(
        "noted_changes", "changed after it was sent: to change in Kravia by hand", Awaits.PERSON
    ),
)


def pending_work(counts: Mapping[str, int]) -> list[tuple[PendingKind, int]]:
    """Each kind of pending work the run counted, with its count, in the order of
    `PENDING_KINDS`."""
    return [(kind, counts[kind.count]) for kind in PENDING_KINDS if counts.get(kind.count, 0) > 0]


def finished_status(
    status: RunStatus, counts: Mapping[str, int], problems: Sequence[object]
) -> RunStatus:
    """How a pass ended, from how it went (`status`) and what it counted: a failed or
    stopped pass stays so; otherwise `attention` while any work is pending or any problem
    was reported, else `done`."""
    if status in {RunStatus.FAILED, RunStatus.STOPPED}:
        return status
    return RunStatus.ATTENTION if pending_work(counts) or problems else RunStatus.DONE
