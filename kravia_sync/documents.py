"""The copy of an invoice that goes to Kravia with the case: a PDF in a file, or one a connector
fetches when it is needed. Read once, at most `MAX_DOCUMENT_BYTES`, and checked to be a PDF."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Protocol, runtime_checkable

from kravia_sync.errors import InvalidRecordError

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "PDF_MAGIC",
    "CallableDocument",
    "CopyRead",
    "Document",
    "FileDocument",
    "check_pdf",
    "read_copy",
]


PDF_MAGIC = b"%PDF-"


MAX_DOCUMENT_BYTES: Final = 20 * 1024 * 1024


@runtime_checkable
class Document(Protocol):
    """A lazily loaded copy of the invoice (a PDF). Nothing is read until `load()`."""

    @property
    def name(self) -> str: ...

    def load(self) -> bytes: ...


class FileDocument:
    """A document stored as a file; read only when needed.

    `load()` reads only a regular file (a link to one is followed) of at most `max_bytes`
    bytes, streamed, so a named pipe, a device or a huge file named like a PDF cannot hang or
    exhaust the process. What cannot be used raises `InvalidRecordError` (field `document`).
    """

    def __init__(self, path: Any, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> None:  # noqa: ANN401 - any os.PathLike
        from pathlib import Path  # noqa: PLC0415 - keep the module import light

        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self._path = Path(path)
        self._max_bytes = max_bytes

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def max_bytes(self) -> int:
        """The largest file `load()` reads."""
        return self._max_bytes

    def load(self) -> bytes:
        """The file's bytes; `InvalidRecordError` when it is not a regular file, is bigger than
        `max_bytes` (also if it grows while it is read) or cannot be read."""
        descriptor = self._open()
        try:
            size = self._measure(descriptor)
        except BaseException:
            os.close(descriptor)
            raise
        with open(descriptor, "rb", buffering=0) as handle:  # noqa: PTH123 - a descriptor
            try:
                data = _read_at_most(handle, self._max_bytes, size)
            except OSError as exc:
                reason = f"{self.name} cannot be read: {exc.strerror or exc}"
                raise InvalidRecordError("document", reason) from None
        if len(data) > self._max_bytes:  # it grew after it was measured
            raise InvalidRecordError("document", self._too_big_reason(len(data), grew=True))
        return data

    def _open(self) -> int:
        try:
            # Non-blocking: opening a named pipe for reading would wait for a writer forever.
            return os.open(self._path, _READ_FLAGS)
        except OSError as exc:
            raise InvalidRecordError("document", self._unopened_reason(exc)) from None

    def _measure(self, descriptor: int) -> int:
        """The opened file's size, if it is a regular file within the limit."""
        info = os.fstat(descriptor)  # of what was opened: the path may have changed since
        if not stat.S_ISREG(info.st_mode):
            reason = f"{self.name} is not a regular file ({_file_kind(info.st_mode)})"
            raise InvalidRecordError("document", reason)
        if info.st_size > self._max_bytes:
            raise InvalidRecordError("document", self._too_big_reason(info.st_size))
        if _NONBLOCK:  # no effect on a regular file on most systems; cleared all the same
            os.set_blocking(descriptor, True)
        return info.st_size

    def _unopened_reason(self, exc: OSError) -> str:
        try:
            mode = self._path.stat().st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):  # a socket cannot be opened at all: say what it is
            return f"{self.name} is not a regular file ({_file_kind(mode)})"
        return f"{self.name} cannot be read: {exc.strerror or exc}"

    def _too_big_reason(self, size: int, *, grew: bool = False) -> str:
        limit = self._max_bytes
        if grew:
            return f"{self.name} grew beyond the limit of {limit} bytes while it was read"
        return f"{self.name} has {size} bytes, more than the limit of {limit}; it was not read"

    def __repr__(self) -> str:
        return f"FileDocument({str(self._path)!r})"


# Read-only, never blocking on a named pipe; binary on Windows (no newline translation).
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


_READ_FLAGS = os.O_RDONLY | _NONBLOCK | getattr(os, "O_BINARY", 0)


_READ_CHUNK_BYTES = 1024 * 1024


_FILE_KINDS: Final = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}


def _file_kind(mode: int) -> str:
    """What a file that is not a regular file is, for messages."""
    return _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")


def _read_at_most(handle: BinaryIO, limit: int, expected: int) -> bytes:
    """At most `limit + 1` bytes of `handle`: more than `limit` means the file is too big.

    The first read is sized from the file's measured size (`expected`), so a small file does
    not allocate `limit` bytes; a file that grew since is read on in chunks up to the cap.
    """
    chunks: list[bytes] = []
    left = limit + 1
    want = min(expected, limit) + 1
    while left > 0 and (chunk := handle.read(min(want, left))):
        chunks.append(chunk)
        left -= len(chunk)
        want = _READ_CHUNK_BYTES
    return b"".join(chunks)


class CallableDocument:
    """A document produced by a callable (a database query, an HTTP download)."""

    def __init__(self, name: str, loader: Callable[[], bytes]) -> None:
        self._name = name
        self._loader = loader

    @property
    def name(self) -> str:
        return self._name

    def load(self) -> bytes:
        return self._loader()

    def __repr__(self) -> str:
        return f"CallableDocument({self._name!r})"


def check_pdf(content: bytes, name: str) -> None:
    """Raise `InvalidRecordError` unless `content` is a PDF file."""
    if not content.startswith(PDF_MAGIC):
        head = content[:8]
        raise InvalidRecordError("document", f"{name} is not a PDF (it starts with {head!r})")


@dataclass(frozen=True, slots=True)
class CopyRead:
    """An invoice's copy, read and checked: why it cannot be sent (None: it can, or there is
    none), and the checked PDF when there is one, to be uploaded without reading it again."""

    problem: str | None
    content: bytes | None = None


def read_copy(document: Document | None) -> CopyRead:
    """`document` read within its limits and checked to be a PDF."""
    if document is None:
        return CopyRead(None)
    try:
        content = document.load()
        check_pdf(content, document.name)
    except InvalidRecordError as exc:
        return CopyRead(exc.reason)
    except OSError as exc:
        return CopyRead(f"{document.name} cannot be read: {exc}")
    return CopyRead(None, content)
