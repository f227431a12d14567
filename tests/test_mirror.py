"""The mirror of Kravia's cases (`kravia_sync.engine.mirror`): searches measured on Kravia's clock,
stored whole or not at all, shared by a pass."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import CREDITOR_ID, TOKEN, invoice_record

from kravia_sync.engine.mirror import CURSOR, MIRROR_EPOCH, SEARCH_OVERLAP, KraviaMirror
from kravia_sync.identity import Absent, Adopt, Unknown
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.model import Invoice
from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import Shape, Simulator

NOW = datetime(2026, 12, 5, 9, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.db") as opened:
        yield opened


def register(simulator: Simulator, number: int) -> None:
    """A case in the simulator, as another writer (or an earlier life) made it."""
    invoice = Invoice.from_record(invoice_record(number))

    async def go() -> None:
        async with client_for(simulator) as client:
            await client.register(invoice, creditor_id=CREDITOR_ID)

    asyncio.run(go())


def client_for(simulator: Simulator, seen: list[str] | None = None) -> KraviaClient:
    async def watch(request: httpx.Request) -> None:
        if seen is not None:
            seen.append(str(request.url))

    inner = httpx.ASGITransport(app=simulator.app)

    class Watched(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await watch(request)
            return await inner.handle_async_request(request)

    return KraviaClient(base_url="http://kravia.test/api/v2/", token=TOKEN, transport=Watched())


def search(store: StateStore, simulator: Simulator, seen: list[str] | None = None) -> Any:
    async def go() -> Any:
        async with client_for(simulator, seen) as client:
            mirror = KraviaMirror(store, client, clock=lambda: NOW)
            return await mirror.search(), mirror

    return asyncio.run(go())


class TestSearches:
    def test_a_cold_start_searches_everything_and_keeps_kravias_clock(self, store):
        """The first search covers every case since the beginning; the cursor is the time
        Kravia's Date header gave, not ours (Kravia's clock here is 20 minutes behind)."""
        simulator = Simulator(token=TOKEN, creditor_id=CREDITOR_ID)
        simulator.shape = Shape(clock_offset_seconds=-1200)
        register(simulator, 1)
        seen: list[str] = []

        done, mirror = search(store, simulator, seen)

        assert done.cases == 1
        assert "lastUpdatedTime=2000-01-01" in seen[0]
        cursor = datetime.fromisoformat(store.meta(CURSOR))
        kravia_now = datetime.now(UTC) - timedelta(seconds=1200)
        assert abs((cursor - kravia_now).total_seconds()) < 5
        assert mirror.fresh_since(None)  # a search of this pass
        assert mirror.began is not None
        assert abs((mirror.began - kravia_now).total_seconds()) < 5  # on Kravia's clock
        assert MIRROR_EPOCH.year == 2000

    def test_the_next_search_starts_a_margin_before_the_last(self, store):
        """A later search starts SEARCH_OVERLAP before where the last began (on Kravia's
        clock): a case updated around the edge is not missed."""
        simulator = Simulator(token=TOKEN, creditor_id=CREDITOR_ID)
        search(store, simulator)
        cursor = datetime.fromisoformat(store.meta(CURSOR))
        seen: list[str] = []

        search(store, simulator, seen)

        since = (cursor - SEARCH_OVERLAP).strftime("%Y-%m-%dT%H:%M:%S")
        assert f"lastUpdatedTime={since}" in httpx.URL(seen[0]).query.decode().replace("%3A", ":")

    def test_a_search_that_fails_stores_nothing_and_is_not_repeated_in_the_pass(self, store):
        """Kravia answers 503 to every search: nothing is stored, the mirror is not fresh,
        and the pass does not search again (nothing is registered on it)."""

        async def go() -> tuple[bool, bool, int]:
            calls = 0

            def counted(_request: httpx.Request) -> httpx.Response:
                nonlocal calls
                calls += 1
                return httpx.Response(503)

            client = KraviaClient(
                base_url="http://kravia.test/api/v2/",
                token=TOKEN,
                transport=httpx.MockTransport(counted),
            )
            async with client:
                mirror = KraviaMirror(store, client, clock=lambda: NOW)
                first = await mirror.ensure_fresh(NOW)
                asked = calls
                second = await mirror.ensure_fresh(NOW)
            return first, second, calls - asked

        first, second, again = asyncio.run(go())

        assert (first, second, again) == (False, False, 0)
        assert store.meta(CURSOR) is None
        assert store.mirrored_count() == 0


class TestVerdicts:
    def test_the_mirror_tells_what_kravia_holds(self, store):
        """After a search: an invoice Kravia has is adopted, one it lacks is absent, and with
        Kravia's search leaving out accountingInvoiceId a case with the number is unknown."""
        simulator = Simulator(token=TOKEN, creditor_id=CREDITOR_ID)
        register(simulator, 1)
        _, mirror = search(store, simulator)
        (case,) = simulator.cases()

        assert mirror.verdict("1", "1", fallback_id="1") == Adopt(case["id"])
        assert mirror.verdict("2", "2", fallback_id="2") == Absent()

        simulator.shape = Shape(search_without_aid=True)
        with StateStore(store.path.parent / "other.db") as other:
            _, blind = search(other, simulator)
            assert isinstance(blind.verdict("1", "1", fallback_id="1"), Unknown)
