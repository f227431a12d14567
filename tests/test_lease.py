"""The lease keeper (`kravia_sync.state.lease`): renewals from a thread of its own, the margin
before a call may start, and noticing a take-over."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kravia_sync.state.errors import LeaseLostError
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.store import StateStore

TTL = timedelta(seconds=0.3)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.db") as opened:
        yield opened


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


class TestLeaseKeeper:
    def test_renews_while_the_event_loop_is_busy(self, store):
        """The lease is renewed from its own thread even while the caller's thread is busy
        (here: sleeping without yielding), so it never lapses under a slow pass."""
        keeper = LeaseKeeper(store, ttl=TTL, clock=lambda: datetime.now(UTC))
        keeper.acquire()
        try:
            first = store.current_lease()["expires_at"]
            time.sleep(0.5)  # the caller's thread does nothing for longer than the lease
            assert store.current_lease()["expires_at"] > first
            assert keeper.has_margin()
            keeper.check()
        finally:
            keeper.release()
        assert store.current_lease() is None

    def test_a_take_over_is_noticed_and_stops_calls(self, store):
        """Another holder takes the lease over (its row now names that holder, at the next
        epoch): the keeper says so once, no call may start, and it gives nothing up on
        release (the lease is not its own)."""
        lost: list[str] = []
        keeper = LeaseKeeper(store, ttl=TTL, clock=lambda: datetime.now(UTC), on_lost=lost.append)
        keeper.acquire()
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE lease SET holder_id = 'rival', epoch = epoch + 1")

        assert wait_until(lambda: bool(lost), timeout=2), "the take-over was not noticed"
        assert not keeper.has_margin()
        with pytest.raises(LeaseLostError, match="taken over"):
            keeper.check()
        keeper.release()
        assert store.current_lease()["holder_id"] == "rival"
        assert len(lost) == 1

    def test_late_renewals_close_the_margin(self, store, monkeypatch):
        """When the store cannot be written for two beats, no call may start (the lease could
        run out under it), though nobody took it over."""
        keeper = LeaseKeeper(store, ttl=TTL, clock=lambda: datetime.now(UTC))
        keeper.acquire()
        try:

            def busy(**_: object) -> bool:
                raise RuntimeError("database is locked")

            monkeypatch.setattr(store, "renew_lease", busy)
            assert wait_until(lambda: not keeper.has_margin(), timeout=2)
            with pytest.raises(LeaseLostError, match="not renewed in time"):
                keeper.check()
        finally:
            monkeypatch.undo()
            keeper.release()
