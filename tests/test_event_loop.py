"""The commands' passes run on uvloop where it is installed, asyncio's own loop on request."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from kravia_sync import event_loop


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_a_pass_runs_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.LOOP_ENV, raising=False)
    assert event_loop.run(_loop_type()) is uvloop.Loop


def test_the_environment_can_ask_for_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.LOOP_ENV, " AsyncIO ")
    loop = event_loop.run(_loop_type())
    assert loop is not uvloop.Loop
    assert issubclass(loop, asyncio.BaseEventLoop)


def test_without_uvloop_installed_asyncios_loop_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.LOOP_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails, as on Windows
    assert event_loop.loop_factory() is None
    assert event_loop.run(_loop_type()) is not uvloop.Loop
