"""Where a Fiken refresh token lives between runs: a file only its owner can read.

`kravia-sync auth fiken` writes the first refresh token; the connector reads it on every token
refresh and writes the new one whenever Fiken rotates it. A rotated refresh token is the only
valid one there is, so it is written durably before the access token that came with it is used:
a new file beside the old one (mode 0600), flushed to disk, renamed over the old one, and the
directory flushed too. A crash or a failed write at any point leaves the file holding either
the old token or the new one, whole, never a truncated or empty file. A lock file beside it
(`<file>.lock`, `flock`) makes the read-refresh-write of one process whole for the others (a
`check` while the daemon reads, for one), so two processes never spend the same token.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from kravia_sync import ConnectorError

__all__ = ["RefreshTokenFile"]

_MODE: Final = 0o600
# Threads of one process share a lock of their own: `flock` locks are per open file, so two
# threads opening the lock file each would both get it.
_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


class RefreshTokenFile:
    """One refresh token in one file (`path`), read and replaced whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"RefreshTokenFile({str(self.path)!r})"

    def load(self) -> str:
        """The stored refresh token; `ConnectorError` (telling what to run) when there is none."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConnectorError(
                f"no Fiken refresh token in {self.path}: run `kravia-sync auth fiken` once, "
                "to give kravia-sync access to the company"
            ) from None
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConnectorError(
                f"cannot read the Fiken refresh token file {self.path}: {reason}"
            ) from None
        token = text.strip()
        if not token:
            raise ConnectorError(
                f"the Fiken refresh token file {self.path} is empty: run `kravia-sync auth fiken`"
            )
        return token

    def save(self, token: str) -> None:
        """Replace the stored token with `token`, durably (see the module); `OSError` when it
        could not be written, the old file then left as it was."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = directory / f".{self.path.name}.{os.getpid()}.new"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _MODE)
        try:
            try:
                os.fchmod(descriptor, _MODE)  # whatever the umask
                os.write(descriptor, f"{token}\n".encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            temporary.replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        _sync_directory(directory)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the token for one read-refresh-write, against other threads and processes."""
        key = self.path.resolve()
        with _THREAD_LOCKS_GUARD:
            thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
        lock_path = self.path.with_name(self.path.name + ".lock")
        with thread_lock:
            try:
                lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, _MODE)
            except OSError as exc:
                raise ConnectorError(
                    f"cannot open the lock file {lock_path} of the Fiken refresh token: "
                    f"{exc.strerror or exc}"
                ) from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                yield
            finally:
                os.close(descriptor)  # closing releases the lock


def _sync_directory(directory: Path) -> None:
    """Flush the directory entry of a rename (where the file system allows it)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - a directory that cannot be opened for reading
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
