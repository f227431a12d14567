"""The event loop the commands run their passes on.

uvloop (libuv under asyncio's interface) where it is installed, as it is on every platform
but Windows: a pass spends most of its own time in the loop (a socket read and write, a few
callbacks and futures per call to Kravia), and uvloop does that work in a fifth less CPU, which
on a busy machine is a fifth more calls in flight at once. asyncio's own loop otherwise, or when
`KRAVIA_SYNC_EVENT_LOOP=asyncio` asks for it (to rule the loop out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LOOP_ENV", "loop_factory", "run"]

T = TypeVar("T")

LOOP_ENV = "KRAVIA_SYNC_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's own loop (see the module docstring)."""
    if os.environ.get(LOOP_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - only when a command runs a loop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end on a new loop (as `asyncio.run` does) and return its result."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
