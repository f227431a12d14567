"""Helpers for the tests of reading files safely: hangs that fail instead of blocking the
suite, and big files that cost no disk."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

MIB = 1024 * 1024
T = TypeVar("T")


def within(seconds: float, call: Callable[[], T]) -> T:
    """`call()`'s outcome, or a failed test if it takes longer than `seconds` (a hang, such as
    opening a named pipe that has no writer), instead of a suite that never ends."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed over to the test's own thread
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)  # a hung thread must not block exit
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: it blocks")
    if failure:
        raise failure[0]
    return outcome[0]


def sparse_file(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes neither disk space nor time to write (a sparse file)."""
    with path.open("wb") as handle:
        handle.truncate(size)
    return path
