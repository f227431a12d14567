"""What a run did, as every command and the daemon report it: its status, counts, sources,
remote calls, pace, plan and problems."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from kravia_sync.kravia.client import KraviaClient
from kravia_sync.logging import redact

__all__ = ["PlannedAction", "RunStatus", "RunSummary", "SourceResult", "StageOutcome"]


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


class RunStatus(StrEnum):
    """How a run ended (`running` only while it has not)."""

    RUNNING = "running"
    DONE = "done"  # everything it could do is done
    ATTENTION = "attention"  # done, but records are quarantined, need review or were deferred
    STOPPED = "stopped"  # stopped on request before the end (a signal, a lost lease)
    FAILED = "failed"  # a source, Kravia or the state store failed: see its error


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
            "problems": self.problems,
            "error": self.error,
        }


@dataclass(slots=True)
class StageOutcome:
    """What one stage of a pass did (the case driver, the holds, the payments): counts for the
    run summary, and the problems to report."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str]] = field(default_factory=list)

    def add_to(self, summary: RunSummary) -> None:
        summary.counts.update(self.counts)
        summary.problems.extend(self.problems)
