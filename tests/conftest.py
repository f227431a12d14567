"""Shared fixtures: a running Kravia simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import CREDITOR_ID, TOKEN, Sim

from kravia_sync.simulator import RunningSimulator, Simulator


@pytest.fixture
def sim() -> Iterator[Sim]:
    """A Kravia simulator serving over real HTTP on a free local port."""
    simulator = Simulator(token=TOKEN, creditor_id=CREDITOR_ID)
    with RunningSimulator(simulator) as running:
        yield Sim(simulator, running)
