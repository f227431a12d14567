"""Every file the folder source reads, read the same guarded way: opened without blocking, read
only if it is a regular file, streamed and never past its limit (also when it grows after it
was measured), and never through a symbolic link that leads out of the folder unless allowed.
A refusal names the file, never what is in it."""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from kravia_sync import ConnectorError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


__all__ = ["MIB"]


MIB = 1024 * 1024


CHUNK_BYTES = 64 * 1024


# Read-only and never blocking: opening a named pipe for reading waits for a writer otherwise.
# Binary on Windows (no newline translation).
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


_READ_FLAGS = os.O_RDONLY | _NONBLOCK | getattr(os, "O_BINARY", 0)


_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


# Opening relative to a directory descriptor lets each step refuse a link (POSIX; not Windows).
_OPENAT = os.open in os.supports_dir_fd and _NOFOLLOW != 0


_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}


def list_directory(directory: Path) -> list[os.DirEntry[str]]:
    """The visible entries of `directory`, sorted by name; a failure fails the whole read."""
    try:
        with os.scandir(directory) as iterator:
            entries = [entry for entry in iterator if not _is_hidden(entry.name)]
    except FileNotFoundError:
        raise ConnectorError(f"source folder {directory} does not exist") from None
    except NotADirectoryError:
        raise ConnectorError(f"source folder {directory} is not a directory") from None
    except OSError as exc:
        raise ConnectorError(f"cannot read source folder {directory}: {_os_reason(exc)}") from exc
    return sorted(entries, key=lambda entry: entry.name)


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "~$"))  # `~$` are Office lock files of open documents


def is_directory(entry: os.DirEntry[str]) -> bool:
    """A directory itself, not a symbolic link to one."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def is_directory_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink() and entry.is_dir()
    except OSError:
        return False


class RefusedError(Exception):
    """A file that is not read (or not read further), and why."""

    def __init__(self, reason: str, *, names_the_file: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self._names_the_file = names_the_file

    def about(self, name: str) -> str:
        """The reason as a sentence that says which file it is about."""
        return self.reason if self._names_the_file else f"{name}: {self.reason}"


@dataclass(frozen=True, slots=True)
class FileRules:
    """How the files of one folder are read: only regular files, at most `max_bytes` each,
    never through a symbolic link out of the folder unless `follow_symlinks`."""

    folder: Path | None  # as configured: names in messages are relative to it
    root: Path | None  # the folder with its own links resolved (None: no folder to stay in)
    max_bytes: int
    follow_symlinks: bool

    @classmethod
    def of(cls, folder: Path | None, max_bytes: int, follow_symlinks: bool) -> FileRules:
        # The folder itself may be a link (the operator's choice): what counts is where it is.
        root = None if folder is None else Path(os.path.realpath(folder))
        return cls(folder, root, max_bytes, follow_symlinks)

    def name(self, path: Path) -> str:
        """`path` for messages: relative to the folder, else the file's own name (never the
        absolute path a link leads to)."""
        if self.folder is not None and path.is_relative_to(self.folder):
            return path.relative_to(self.folder).as_posix()
        return path.name

    def inside(self, path: Path) -> bool:
        """Whether `path`, every link on the way followed, is within the folder."""
        return self.root is None or Path(os.path.realpath(path)).is_relative_to(self.root)

    def read(self, path: Path) -> bytes:
        """The whole file, if the rules allow it; else `RefusedError`."""
        with self.open(path) as handle:
            return handle.read_whole()

    def open(self, path: Path) -> CappedFile:
        """`path` opened for reading, if the rules allow it; else `RefusedError`."""
        descriptor = self._descriptor(path)
        try:
            return _checked(descriptor, self.max_bytes)
        except BaseException:
            os.close(descriptor)
            raise

    def _descriptor(self, path: Path) -> int:
        """A descriptor of `path` opened without blocking, or `RefusedError`."""
        root = self.root
        real = Path(os.path.realpath(path))
        try:
            if root is not None and real.is_relative_to(root):
                return _open_below(root, real.relative_to(root))
            if root is None or self.follow_symlinks:
                return os.open(path, _READ_FLAGS)
        except OSError as exc:
            raise RefusedError(_unopened_reason(path, exc)) from None
        name = self.name(path)
        raise RefusedError(link_reason(name), names_the_file=True)


class CappedFile(io.RawIOBase):
    """An open regular file that is never read past `limit` bytes: one that grows after it was
    measured costs at most `limit + 1` bytes of reading, then `RefusedError`. A read error is
    a `RefusedError` too, so a caller has one thing to catch."""

    def __init__(self, descriptor: int, limit: int, size: int) -> None:
        super().__init__()
        self._file = io.FileIO(descriptor, "rb")  # owns the descriptor from here on
        self._limit = limit
        self._size = size  # as measured when it was opened
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        with memoryview(buffer) as view, view.cast("B") as target:
            room = min(len(target), self._limit + 1 - self._position)
            try:
                count = self._file.readinto(target[:room]) or 0
            except OSError as exc:
                raise RefusedError(f"cannot read the file: {_os_reason(exc)}") from None
        self._position += count
        if self._position > self._limit:
            raise RefusedError(
                f"the file grew beyond max_file_bytes ({self._limit}) while it was read; "
                "reading stopped there"
            )
        return count

    def read_whole(self) -> bytes:
        """The whole file: one read for a file of its measured size, more if it has grown."""
        chunks: list[bytes] = []
        want = self._size + 1  # + 1: the end of the file is seen without another read
        while chunk := self.read(want):
            chunks.append(chunk)
            want = CHUNK_BYTES
        return b"".join(chunks)

    def rewind(self) -> None:
        self._file.seek(0)
        self._position = 0

    def close(self) -> None:
        self._file.close()
        super().close()


def _checked(descriptor: int, limit: int) -> CappedFile:
    """The opened file, if it is a regular file of at most `limit` bytes; else `RefusedError`."""
    # What was opened, not what the path names now: it may have changed since.
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        raise RefusedError(_not_regular_reason(info.st_mode))
    if info.st_size > limit:
        raise RefusedError(_too_big_reason(info.st_size, limit))
    if _NONBLOCK:  # no effect on a regular file on most systems; cleared all the same
        os.set_blocking(descriptor, True)
    return CappedFile(descriptor, limit, info.st_size)


def _open_below(root: Path, relative: PurePath) -> int:
    """Open `root / relative` one name at a time, refusing a symbolic link at every step
    (O_NOFOLLOW), so a link swapped in after the path was resolved cannot lead out."""
    if not _OPENAT or not relative.parts:
        return os.open(root / relative, _READ_FLAGS)
    directory = os.open(root, _DIRECTORY_FLAGS)
    try:
        for part in relative.parts[:-1]:
            inner = os.open(part, _DIRECTORY_FLAGS | _NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        return os.open(relative.parts[-1], _READ_FLAGS | _NOFOLLOW, dir_fd=directory)
    finally:
        os.close(directory)


def link_reason(name: str) -> str:
    # Names the link only: neither where it leads nor anything read from there.
    return (
        f"{name} is a symbolic link to outside the source folder; "
        "set follow_symlinks = true to allow it"
    )


def _not_regular_reason(mode: int) -> str:
    kind = _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")
    return f"not a regular file ({kind}); it was not read"


def _unopened_reason(path: Path, exc: OSError) -> str:
    """Why `path` could not be opened: a socket, for one, cannot be opened at all."""
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):
        return _not_regular_reason(mode)
    return f"cannot read the file: {_os_reason(exc)}"


def _too_big_reason(size: int, limit: int) -> str:
    return f"the file has {size} bytes, more than max_file_bytes ({limit}); it was not read"


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


FILE = "file"  # the RecordError field for a problem with a whole file
