"""The state store's errors: one `StateError` for a store that cannot be used (locked, damaged,
unreadable), whatever the driver said, and the schema's and the writer lease's own."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from kravia_sync.errors import KraviaSyncError
from kravia_sync.state import rows

__all__ = [
    "LeaseHeldError",
    "LeaseLostError",
    "NotNewError",
    "SchemaError",
    "StateConflictError",
    "StateError",
    "state_errors",
]


class NotNewError(Exception):
    """The payment is no longer new: another writer began it."""


class StateError(KraviaSyncError, RuntimeError):
    """The state database could not be read or written: locked by another program past the
    wait, a full disk, a file that is not a database or is damaged. What the pass had not
    committed is not sent; the next pass starts from what was."""


def _state_error(path: Path, exc: sqlite3.Error) -> StateError:
    reason = str(exc) or type(exc).__name__
    if "locked" in reason or "busy" in reason:
        reason += (
            f" (waited {rows.BUSY_TIMEOUT_SECONDS} s): another program holds a lock on it, e.g. a "
            "database browser with a transaction open; close it and run again"
        )
    elif "disk is full" in reason or "disk I/O" in reason:
        reason += ": check the disk it is on"
    return StateError(f"the state store {path} could not be used: {reason}")


# The driver's errors that say the database cannot be used (locked, unreadable, full disk,
# not a database) rather than that a statement is wrong: those stay as they are (a bug, or a
# race the caller handles).
_STATEMENT_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.NotSupportedError,
)


@contextmanager
def state_errors(path: Path) -> Iterator[None]:
    """The driver's errors inside the block that say the database cannot be used, as
    `StateError`s naming the file."""
    try:
        yield
    except _STATEMENT_ERRORS:
        raise
    except sqlite3.Error as exc:
        raise _state_error(path, exc) from exc


class SchemaError(KraviaSyncError, RuntimeError):
    """The state database is not one this version of kravia-sync can use."""


class LeaseHeldError(KraviaSyncError, RuntimeError):
    """Another process holds the writer lease."""

    def __init__(self, holder: str, acquired_at: datetime, expires_at: datetime) -> None:
        super().__init__(
            f"another kravia-sync is writing to this state store: {holder}, "
            f"since {acquired_at:%Y-%m-%d %H:%M:%S %Z}, lease valid until "
            f"{expires_at:%Y-%m-%d %H:%M:%S %Z}. Wait for it to finish: a lease whose holder "
            "died is taken over when it expires (at once when it died on this machine); "
            "`kravia-sync unlock --force` removes it sooner, but never while its holder runs "
            "here."
        )
        self.holder = holder


class LeaseLostError(KraviaSyncError, RuntimeError):
    """The writer lease is no longer this store's (another process took it over): nothing
    more may be written or sent."""


class StateConflictError(KraviaSyncError, RuntimeError):
    """A case changed in the state store after it was read (an operator command during the
    read): the read's writes were not made; the next pass reads it again."""
