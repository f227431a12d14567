"""Helpers for the daemon tests: a daemon process whose JSON log lines are read as they come,
and passes that hang, standing in for the Reconciler in a daemon driven in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from support import TOKEN, cli_command, cli_env, write_config

from kravia_sync.engine.summary import RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.service.daemon import PassRunner
from kravia_sync.settings import Settings
from kravia_sync.state.store import StateStore
from kravia_sync.state.stored import utc_now

# How a source's stand-in pass behaves: `wait` hangs in an async wait and ignores a stop request;
# `obey` hangs until asked to stop; `thread` is stuck in a blocking read in a thread; `deaf`
# hangs, and once cancelled goes on waiting a while. Any other source passes at once.
Hang = Literal["wait", "obey", "thread", "deaf"]
STUCK_READ_SECONDS = 20.0  # a stuck read gives up by itself after this, to bound every test


@dataclass
class FakePasses:
    """A `pass_factory` for the daemon: passes that do no work and hang as `hang` says, and a
    record of what happened to them (by source, in order)."""

    hang: dict[str, Hang]
    release: threading.Event = field(default_factory=threading.Event)  # ends stuck reads
    started: list[str] = field(default_factory=list)
    asked_to_stop: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    def __call__(self, settings: Settings, store: StateStore, client: KraviaClient) -> PassRunner:
        return _FakePass(self)

    def stuck_read(self) -> None:
        """A source read that blocks (like time.sleep) until released, or STUCK_READ_SECONDS."""
        self.release.wait(STUCK_READ_SECONDS)


class _FakePass:
    def __init__(self, passes: FakePasses) -> None:
        self._passes = passes
        self._stop = asyncio.Event()
        self._source = ""

    def request_stop(self) -> None:
        self._passes.asked_to_stop.append(self._source)
        self._stop.set()

    async def run(
        self,
        *,
        command: str = "reconcile",
        sources: Collection[str] | None = None,
        lease: object = None,
    ) -> RunSummary:
        (self._source,) = sources or ["?"]
        self._passes.started.append(self._source)
        try:
            await self._hang(self._passes.hang.get(self._source))
        except asyncio.CancelledError:
            self._passes.cancelled.append(self._source)
            raise
        self._passes.finished.append(self._source)
        status = "stopped" if self._stop.is_set() else "done"
        return RunSummary(run_id=None, started_at=utc_now(), status=status)

    async def _hang(self, how: Hang | None) -> None:
        if how == "wait":
            await asyncio.Event().wait()
        elif how == "obey":
            await self._stop.wait()
        elif how == "thread":
            await asyncio.to_thread(self._passes.stuck_read)
        elif how == "deaf":
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
            self._passes.cancelled.append(self._source)
            await asyncio.sleep(STUCK_READ_SECONDS)  # a second cancel (at exit) ends it


def daemon_config(
    directory: Path,
    base_url: str,
    *,
    schedule: str = "1s",
    lease_seconds: float = 2.0,
    max_in_flight: int = 8,
    daemon: str = "",
    retry: str = "backoff_base_seconds = 0.05\nsettle_seconds = 0.2\nmax_inline_wait_seconds = 3",
) -> Path:
    """A configuration with one folder source `files` on `schedule`, HTTP on a free port."""
    config = write_config(directory, base_url, source=f'schedule = "{schedule}"', retry=retry)
    text = config.read_text(encoding="utf-8")
    text = text.replace(
        'path = "state/kravia-sync.db"',
        f'path = "state/kravia-sync.db"\nlease_seconds = {lease_seconds}',
    ).replace("max_in_flight = 8", f"max_in_flight = {max_in_flight}")
    text += f"\n[daemon]\nport = 0\n{daemon}\n"
    config.write_text(text, encoding="utf-8")
    return config


class DaemonProcess:
    """`kravia-sync daemon` as a real process; its stdout lines parsed as JSON as they come."""

    def __init__(
        self, cwd: Path, *, args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> None:
        self.process = subprocess.Popen(
            cli_command("daemon", *args),
            cwd=cwd,
            env=env or cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self.raw.append(line)
                try:
                    parsed = json.loads(line)
                except ValueError:
                    continue
                if isinstance(parsed, dict):
                    self.lines.append(parsed)

    def events(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [line for line in self.lines if line.get("event") == event]

    def output(self) -> str:
        with self._lock:
            return "".join(self.raw)

    def wait_for(
        self, check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition"
    ) -> Any:
        """Poll `check` until it returns something truthy; fail with the output if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the readers catch the last lines
                result = check()
                if result:
                    return result
                raise AssertionError(
                    f"daemon exited ({self.process.returncode}) before {what}:\n{self.output()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()[-6000:]}")

    def wait_event(
        self, event: str, *, count: int = 1, timeout: float = 20.0, **fields: Any
    ) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            matching = [
                line
                for line in self.events(event)
                if all(line.get(key) == value for key, value in fields.items())
            ]
            return matching if len(matching) >= count else []

        return self.wait_for(found, timeout=timeout, what=f"{count} x {event!r} {fields}")

    @property
    def url(self) -> str:
        started = self.wait_event("daemon started")[0]
        return str(started["http"])

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def wait(self, *, timeout: float = 20.0) -> int:
        """The exit code of a process already told to stop (no signal of our own: a second
        signal would make it exit at once)."""
        code = self.process.wait(timeout=timeout)
        self._close()
        return code

    def stop(self, *, timeout: float = 20.0) -> int:
        """SIGTERM, then the exit code (within `timeout`)."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def assert_no_secret(self) -> None:
        assert TOKEN not in self.output()
