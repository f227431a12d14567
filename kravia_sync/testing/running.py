"""A simulator served from a thread of its own, for tests and benchmarks that drive it from
synchronous code: `RunningServer` runs an event loop in that thread and listens there with the
daemon's own listener (`kravia_sync.service.listener.AppListener`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Final, Self

from starlette.applications import Starlette

from kravia_sync.service.listener import AppListener
from kravia_sync.testing._dropped import quiet_dropped_connections

__all__ = ["RunningServer"]


class RunningServer:
    """Serves `app` on 127.0.0.1 (a free port, `root_url` once started; kept after `stop`) in a
    background thread."""

    START_TIMEOUT_S: Final = 10.0
    STOP_TIMEOUT_S: Final = 10.0

    def __init__(self, app: Starlette, *, name: str, date_header: bool = True) -> None:
        self._app = app
        self._name = name
        self._date_header = date_header
        self.root_url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start serving and wait until the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError(f"the {self._name} is already running")
        quiet_dropped_connections()
        self._ready.clear()
        self._error = None
        self.root_url = ""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(self.START_TIMEOUT_S) or not self.root_url:
            error = self._error
            self.stop()
            raise RuntimeError(f"the {self._name} did not start") from error

    def stop(self) -> None:
        """Shut the server down and join its thread (bounded wait)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(stopping.set)
        thread.join(self.STOP_TIMEOUT_S)
        self._thread = None
        self._loop = None
        self._stopping = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(); never kill the interpreter
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        listener = AppListener(self._app, host="127.0.0.1", port=0, date_header=self._date_header)
        await listener.start()
        try:
            self.root_url = f"http://127.0.0.1:{listener.port}"
            self._ready.set()
            await self._stopping.wait()
        finally:
            await listener.stop()
