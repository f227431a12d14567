"""A state store that cannot be used ends the pass with a clear message, never a traceback,
and nothing is sent that its journal did not record first."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest
from support import (
    TOKEN,
    Sim,
    cases_by_accounting_id,
    cli_env,
    load,
    run_cli,
    write_config,
    write_invoices,
)

from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.engine.summary import RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.state import database, rows
from kravia_sync.state.errors import StateError
from kravia_sync.state.store import StateStore


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer gives up on a lock after 0.3 s instead of 30."""
    monkeypatch.setattr(rows, "BUSY_TIMEOUT_SECONDS", 0.3)


def lock(path: Path) -> sqlite3.Connection:
    """Another program's connection holding the database's write lock."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_a_locked_store_is_a_state_error_naming_the_file(tmp_path: Path, short_wait: None) -> None:
    path = tmp_path / "state.db"
    StateStore(path).close()
    holder = lock(path)
    try:
        with pytest.raises(StateError, match=r"state\.db could not be used: database is locked"):
            StateStore(path)
    finally:
        holder.close()
    with StateStore(path) as store:  # usable again once the lock is gone
        assert store.schema_version() == database.SCHEMA_VERSION


def test_a_file_that_is_not_a_database_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"these are not the bytes of an SQLite database" * 100)
    with pytest.raises(StateError, match=r"state\.db could not be used: file is not a database"):
        StateStore(path)


def test_the_command_line_says_so_and_exits_1(sim: Sim, tmp_path: Path) -> None:
    """`kravia-sync reconcile` against a store that is not a database: one line naming the
    file and the reason, exit 1, no traceback, nothing sent."""
    write_invoices(tmp_path / "invoices", [1], pdf_every=0)
    write_config(tmp_path, sim.base_url)
    state = tmp_path / "state" / "kravia-sync.db"
    state.parent.mkdir()
    state.write_bytes(b"not a database" * 500)
    result = run_cli("reconcile", cwd=tmp_path, env=cli_env())
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "kravia-sync.db could not be used: file is not a database" in " ".join(
        result.stderr.split()
    )
    assert sim.calls_total() == 0


def test_a_lock_taken_mid_pass_ends_it_failed_with_nothing_sent_unrecorded(
    sim: Sim, tmp_path: Path, short_wait: None
) -> None:
    """Another program locks the store while the pass has its first register out: the
    pass stops with a `StateError` saying the store is locked (what `kravia-sync` prints, exit
    1), sends nothing more, and the next pass (the lock gone) finishes every invoice with one
    case each."""
    write_invoices(tmp_path / "invoices", range(1, 6), pdf_every=0)
    config = write_config(tmp_path, sim.base_url)
    settings = load(config)
    settings.state_path.parent.mkdir(parents=True, exist_ok=True)
    holders: list[sqlite3.Connection] = []
    calls_at_lock: list[int] = []

    class LockOnFirstRegister(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/register") and not holders:
                holders.append(lock(settings.state_path))
                calls_at_lock.append(sim.calls_total())
            return await super().handle_async_request(request)

    def one_pass(transport: httpx.AsyncBaseTransport | None) -> RunSummary:
        store = StateStore(settings.state_path)

        async def go() -> RunSummary:
            async with KraviaClient(
                base_url=settings.kravia.base_url,
                token=TOKEN,
                max_in_flight=1,
                transport=transport,
            ) as client:
                return await Reconciler(settings, store, client=client).run()

        try:
            return asyncio.run(go())
        finally:
            store.close()

    try:
        # The pass fails; so does writing its run row and giving its lease back.
        with pytest.raises(StateError, match="database is locked") as failed:
            one_pass(LockOnFirstRegister())
        sent_while_locked = sim.calls_total() - calls_at_lock[0]
    finally:
        for holder in holders:
            holder.close()
    assert "Traceback" not in str(failed.value)
    assert sent_while_locked <= 1  # the register already on its way, nothing after it
    with sqlite3.connect(settings.state_path) as db:  # as when its process has ended
        db.execute("UPDATE lease SET expires_at = '2000-01-01T00:00:00.000000+00:00'")

    for _ in range(3):
        again = one_pass(None)
        if again.status == "done":
            break
    assert again.status == "done", again.error
    cases = cases_by_accounting_id(sim.cases())
    assert len(cases) == 5
    assert all(len(found) == 1 for found in cases.values())


def test_a_wrong_statement_is_not_taken_for_an_unusable_store(tmp_path: Path) -> None:
    """A constraint the statement breaks is a bug or a race to handle, not a store that
    cannot be used: it stays the driver's own error."""
    with StateStore(tmp_path / "state.db") as store:
        with pytest.raises(sqlite3.IntegrityError), store._write() as connection:
            connection.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '3')")
        assert store.schema_version() == database.SCHEMA_VERSION


def test_a_value_of_the_wrong_kind_is_refused_before_it_is_stored(tmp_path: Path) -> None:
    """A time column given text (or an amount given a float) would be stored in a form no
    later read could decode: refused, nothing written."""
    with StateStore(tmp_path / "state.db") as store:
        with pytest.raises(TypeError, match="hold_action_at is a time, not str"):
            store.set_case_notes([("A-1", {"hold_action_at": "yesterday"})])
        with pytest.raises(TypeError, match="payouts_accounted is an amount"):
            store.set_case_notes([("A-1", {"payouts_accounted": 0.1 + 0.2})])


def test_a_file_with_only_sqlites_own_tables_gets_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("ANALYZE")
        db.execute("DROP TABLE t")
    with StateStore(path) as store:
        assert store.schema_version() == database.SCHEMA_VERSION
