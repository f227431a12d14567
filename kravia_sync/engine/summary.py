"""What a run did, as every command and the daemon report it: its status, counts, money,
sources, remote calls, pace, plan and problems."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from kravia_sync.engine.outcome import RunStatus, pending_work
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.logging import redact

__all__ = [
    "MoneyOutcome",
    "MoneyTally",
    "PlannedAction",
    "RunStatus",
    "RunSummary",
    "SourceResult",
    "StageOutcome",
]

_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class PlannedAction:
    source: str
    accounting_invoice_id: str
    invoice_number: str
    change: str
    step: str
    detail: str = ""


@dataclass
class SourceResult:
    name: str
    status: str = "ok"  # ok | failed
    error: str | None = None
    counts: Counter[str] = field(default_factory=Counter)


class MoneyOutcome(StrEnum):
    """What became of the money of a payment or credit note in a pass."""

    PAYMENTS_SENT = "payments_sent"
    CREDIT_NOTES_SENT = "credit_notes_sent"
    CLAMPED = "clamped"  # a line cut to the capital Kravia had left (to nothing, if none)
    NOTHING_LEFT = "nothing_left"  # not sent: Kravia had no capital left on its cases
    DEFERRED = "deferred"  # not sent in this pass: a later pass sends it


@dataclass(slots=True)
class MoneyRow:
    count: int = 0
    asked: Decimal = Decimal(0)  # what the source said
    sent: Decimal = Decimal(0)  # what went to Kravia


@dataclass(slots=True)
class MoneyTally:
    """The money a pass forwarded or held back, in NOK (every invoice sent is in NOK): per
    outcome, how many and their sums, asked and sent."""

    rows: dict[MoneyOutcome, MoneyRow] = field(
        default_factory=lambda: {outcome: MoneyRow() for outcome in MoneyOutcome}
    )

    def add(self, outcome: MoneyOutcome, *, asked: Decimal, sent: Decimal = Decimal(0)) -> None:
        row = self.rows[outcome]
        row.count += 1
        row.asked += asked
        row.sent += sent

    def update(self, other: MoneyTally) -> None:
        for outcome, row in other.rows.items():
            mine = self.rows[outcome]
            mine.count += row.count
            mine.asked += row.asked
            mine.sent += row.sent

    def as_dict(self) -> dict[str, dict[str, int | str]]:
        """Every outcome, the sums as exact decimal strings (`--json`)."""
        return {
            outcome.value: {
                "count": row.count,
                "asked": str(row.asked.quantize(_CENT)),
                "sent": str(row.sent.quantize(_CENT)),
            }
            for outcome, row in self.rows.items()
        }

    def log_fields(self) -> dict[str, str]:
        """The sums of the outcomes that happened, flat, for the `run finished` line: what
        was sent where something was, else what was asked."""
        fields: dict[str, str] = {}
        for outcome, row in self.rows.items():
            if not row.count:
                continue
            if outcome is MoneyOutcome.CLAMPED:
                fields["clamped_asked_nok"] = str(row.asked.quantize(_CENT))
                fields["clamped_sent_nok"] = str(row.sent.quantize(_CENT))
            elif outcome in {MoneyOutcome.PAYMENTS_SENT, MoneyOutcome.CREDIT_NOTES_SENT}:
                fields[f"{outcome.value}_nok"] = str(row.sent.quantize(_CENT))
            else:
                fields[f"{outcome.value}_asked_nok"] = str(row.asked.quantize(_CENT))
        return fields


@dataclass
class RunSummary:
    run_id: int | None
    started_at: datetime
    status: RunStatus = RunStatus.DONE
    duration_seconds: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    sources: list[SourceResult] = field(default_factory=list)
    remote_calls: dict[str, int] = field(default_factory=dict)
    pacing: dict[str, float | int | None] | None = None  # the pace at the end (PacingSnapshot)
    planned: list[PlannedAction] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    money: MoneyTally = field(default_factory=MoneyTally)

    def fail(self, why: str) -> None:
        """The run failed: `why`, with any secret in it masked, is its error."""
        self.status = RunStatus.FAILED
        self.error = redact(why)

    def close(self, client: KraviaClient, *, clock_start: float) -> None:
        """At the run's end: how long it took (`clock_start`: its `time.monotonic()` at the
        start), the calls it made and the pace they went at."""
        self.duration_seconds = time.monotonic() - clock_start
        self.remote_calls = dict(client.stats.counts)
        self.pacing = client.pacing().as_dict()

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "duration_seconds": round(self.duration_seconds, 3),
            "counts": dict(sorted(self.counts.items())),
            "remote_calls": dict(sorted(self.remote_calls.items())),
            "pacing": self.pacing,
            "sources": [
                {"name": s.name, "status": s.status, "error": s.error, "counts": dict(s.counts)}
                for s in self.sources
            ],
            "money": self.money.as_dict(),
            "attention": {kind.count: count for kind, count in pending_work(self.counts)},
            "problems": self.problems,
            "error": self.error,
        }


@dataclass(slots=True)
class StageOutcome:
    """What one stage of a pass did (the case driver, the holds, the payments): counts for the
    run summary, and the problems to report."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str]] = field(default_factory=list)
    money: MoneyTally = field(default_factory=MoneyTally)

    def add_to(self, summary: RunSummary) -> None:
        summary.counts.update(self.counts)
        summary.problems.extend(self.problems)
        summary.money.update(self.money)
