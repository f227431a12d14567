"""Shared fixtures: a running Kravia simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import CREDITOR_ID, TOKEN, Sim

from kravia_sync.engine.worklist import WorkList
from kravia_sync.testing.simulator import RunningSimulator, Simulator

# A pass holds this many new invoices as objects before writing the rest out (5,000 in use):
# with three, every test of more than three new invoices also drives written-out ones.
WORK_HELD_IN_MEMORY = 3


@pytest.fixture(autouse=True)
def _work_written_out_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WorkList, "IN_MEMORY", WORK_HELD_IN_MEMORY)


@pytest.fixture
def sim() -> Iterator[Sim]:
    """A Kravia simulator serving over real HTTP on a free local port."""
    simulator = Simulator(token=TOKEN, creditor_id=CREDITOR_ID)
    with RunningSimulator(simulator) as running:
        yield Sim(simulator, running)
