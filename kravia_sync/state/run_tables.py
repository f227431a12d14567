"""The books of the runs themselves: records kept out with their reasons, the runs, and the
writer lease."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from typing import Any

from kravia_sync.state.database import Database
from kravia_sync.state.errors import LeaseHeldError
from kravia_sync.state.process import holder_alive, this_process
from kravia_sync.state.records import QuarantineEntry, QuarantineKind
from kravia_sync.state.rows import (
    WRITER_LEASE,
    assignments_sql,
    bound_values,
    decoded_row,
    id_chunks,
    insert_sql,
)
from kravia_sync.state.stored import utc_text

__all__ = ["RunTables"]


_QUARANTINE_FIELDS = tuple(f.name for f in fields(QuarantineEntry))


_QUARANTINE_COLUMNS = ", ".join(_QUARANTINE_FIELDS)


_INSERT_QUARANTINE_SQL = insert_sql(
    "quarantine", ("source", *_QUARANTINE_FIELDS, "first_seen_at", "last_seen_at")
)


_UPDATE_QUARANTINE_SQL = (
    f"UPDATE quarantine SET {assignments_sql((*_QUARANTINE_FIELDS[1:], 'last_seen_at'))} "  # noqa: S608
    "WHERE source = :source AND record_key = :record_key"
)


def _lease_row(connection: sqlite3.Connection) -> dict[str, Any] | None:
    row = connection.execute("SELECT * FROM lease WHERE name = ?", (WRITER_LEASE,)).fetchone()
    return None if row is None else decoded_row(row)


class RunTables(Database):
    """Quarantine, runs and the writer lease."""

    # --- quarantine -------------------------------------------------------------------------------
    def load_quarantine(self, source: str) -> dict[str, QuarantineEntry]:
        with self._read() as connection:
            rows = connection.execute(
                f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE source = ?",  # noqa: S608
                (source,),
            )
            return {
                key: QuarantineEntry(key, QuarantineKind(kind), *rest) for key, kind, *rest in rows
            }

    def sync_quarantine(
        self,
        source: str,
        current: Mapping[str, QuarantineEntry],
        *,
        complete: bool,
        now: datetime,
    ) -> None:
        """Record what is quarantined now; after a complete read, forget what is resolved."""
        known = self.load_quarantine(source)
        changed = [entry for key, entry in current.items() if known.get(key) != entry]
        resolved = [key for key in known if key not in current] if complete else []
        if not changed and not resolved:
            return
        with self._fenced_write() as connection:
            for entry in changed:
                values = bound_values(asdict(entry) | {"source": source, "last_seen_at": now})
                if entry.record_key in known:
                    connection.execute(_UPDATE_QUARANTINE_SQL, values)
                else:
                    connection.execute(
                        _INSERT_QUARANTINE_SQL, values | {"first_seen_at": values["last_seen_at"]}
                    )
            for chunk in id_chunks(resolved):
                connection.execute(
                    "DELETE FROM quarantine WHERE source = ? "  # noqa: S608 - placeholders only
                    f"AND record_key IN ({','.join('?' * len(chunk))})",
                    (source, *chunk),
                )

    def quarantined(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, parameters = ("", ()) if kind is None else ("WHERE kind = ? ", (kind,))
        with self._read() as connection:
            rows = connection.execute(
                f"SELECT * FROM quarantine {where}ORDER BY source, record_key",  # noqa: S608
                parameters,
            )
            return [decoded_row(row) for row in rows]

    # --- runs -------------------------------------------------------------------------------------
    def start_run(self, *, holder: str, command: str, now: datetime) -> int:
        with self._write() as connection:
            result = connection.execute(
                "INSERT INTO runs (started_at, holder, command, status, counts) "
                "VALUES (?, ?, ?, 'running', '{}')",
                (utc_text(now), holder, command),
            )
            run_id = result.lastrowid
        assert run_id is not None  # noqa: S101 - an insert into a rowid table always gives one
        return run_id

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        counts: Mapping[str, Any],
        now: datetime,
        error: str | None = None,
    ) -> None:
        with self._write() as connection:
            connection.execute(
                "UPDATE runs SET finished_at = ?, status = ?, counts = ?, error = ? WHERE id = ?",
                (
                    utc_text(now),
                    status,
                    json.dumps(counts, sort_keys=True, default=str),
                    error,
                    run_id,
                ),
            )

    def last_runs(self, limit: int = 5) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
            return [decoded_row(row) | {"counts": json.loads(row["counts"])} for row in rows]

    # --- lease ------------------------------------------------------------------------------------
    def acquire_lease(self, *, ttl: timedelta, now: datetime) -> str:
        """Take the writer lease (or renew it, if this store holds it) or raise
        `LeaseHeldError` naming who holds it. Every take-over by another holder adds one to the
        lease's epoch, which fences the writes of the one it was taken from.

        A lease whose holder is known to be gone (a process of this machine, in this process
        namespace, that no longer runs) is taken over at once; any other lease only once it
        has expired.
        """
        me = this_process()
        holder = f"pid {me.pid} on {me.host}"
        with self._write() as connection:
            row = _lease_row(connection)
            ours = row is not None and row["holder_id"] == self.holder_id
            if row is not None and row["holder_id"] and not ours:
                alive = holder_alive(row["host_key"], row["pid"], row["started"])
                if row["expires_at"] > now and alive is not False:
                    raise LeaseHeldError(row["holder"], row["acquired_at"], row["expires_at"])
            epoch = (0 if row is None else int(row["epoch"])) + (0 if ours else 1)
            values = {
                "name": WRITER_LEASE,
                "holder": holder,
                "host": me.host,
                "pid": me.pid,
                "acquired_at": row["acquired_at"] if ours and row is not None else now,
                "expires_at": now + ttl,
                "holder_id": self.holder_id,
                "epoch": epoch,
                "host_key": me.host_key,
                "started": me.started,
            }
            connection.execute("DELETE FROM lease WHERE name = ?", (WRITER_LEASE,))
            connection.execute(insert_sql("lease", values), bound_values(values))
        self._epoch = epoch
        return holder

    def renew_lease(self, *, ttl: timedelta, now: datetime) -> bool:
        """Extend our lease; False when it is no longer ours (it was taken over)."""
        if self._epoch is None:
            return False
        with self._write() as connection:
            result = connection.execute(
                "UPDATE lease SET expires_at = ? WHERE name = ? AND holder_id = ? AND epoch = ?",
                (utc_text(now + ttl), WRITER_LEASE, self.holder_id, self._epoch),
            )
            return result.rowcount == 1

    def release_lease(self) -> None:
        """Give the lease up (if it is still ours). Its row stays, with its epoch; this store
        is fenced from then on, as if the lease had been taken over."""
        with self._write() as connection:
            connection.execute(
                "UPDATE lease SET holder_id = '' WHERE name = ? AND holder_id = ?",
                (WRITER_LEASE, self.holder_id),
            )

    def current_lease(self) -> dict[str, Any] | None:
        """The writer lease as held now, or None when nobody holds it."""
        with self._read() as connection:
            row = _lease_row(connection)
        return None if row is None or not row["holder_id"] else row

    def force_unlock(self) -> dict[str, Any] | None:
        """Remove the writer lease, whoever holds it; what was removed, or None. Refused
        (`LeaseHeldError`) while its holder runs on this machine: that process would go on
        writing (it is fenced from its next write on, but its calls in flight finish)."""
        with self._write() as connection:
            row = _lease_row(connection)
            if row is None or not row["holder_id"]:
                return None
            if holder_alive(row["host_key"], row["pid"], row["started"]):
                raise LeaseHeldError(row["holder"], row["acquired_at"], row["expires_at"])
            connection.execute("UPDATE lease SET holder_id = '' WHERE name = ?", (WRITER_LEASE,))
            return row
