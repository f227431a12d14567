"""Helpers for the daemon tests: a daemon process whose JSON log lines are read as they come."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from support import TOKEN, cli_command, cli_env, write_config


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
