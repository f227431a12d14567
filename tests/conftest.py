"""Shared fixtures: a running Kravia simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sql_fixture import SERVER_BACKENDS, Backend, open_backend
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


@pytest.fixture(params=SERVER_BACKENDS)
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The fixture schema and rows (`sql_fixture`) in PostgreSQL, then MariaDB."""
    with open_backend(request.param, tmp_path) as backend:
        yield backend


@pytest.fixture
def pg_db(tmp_path: Path) -> Iterator[Backend]:
    """The fixture schema and rows in PostgreSQL."""
    with open_backend("postgresql", tmp_path) as backend:
        yield backend
