"""What the daemon's parts share: what it remembers of a source, and what it drives for a pass."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kravia_sync.engine.summary import RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.settings import Settings
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.store import StateStore

__all__ = ["PassFactory", "PassRunner", "SourceState", "iso"]


class PassRunner(Protocol):
    """What the daemon drives for one source's pass: a `Reconciler` (tests stand in their own)."""

    def request_stop(self) -> None: ...

    async def run(
        self,
        *,
        command: str = ...,
        sources: Collection[str] | None = ...,
        lease: LeaseKeeper | None = ...,
    ) -> RunSummary: ...


PassFactory = Callable[[Settings, StateStore, KraviaClient], PassRunner]


@dataclass
class SourceState:
    """What the daemon remembers of one source between passes."""

    name: str
    failures: int = 0  # failed passes in a row
    last_status: str | None = None
    last_error: str | None = None
    last_success: float | None = None  # Unix time
    not_before: datetime | None = None  # backing off until then


def iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None
