"""The daemon's parts in-process: schedules, settings, back-off and alerting, readiness, the pass
deadline, and the Reconciler's stop request and one-source passes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_support import FakePasses
from structlog.testing import capture_logs
from support import (
    TOKEN,
    Sim,
    cases_by_accounting_id,
    load,
    run_pass,
    write_config,
    write_invoices,
)

from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.schedule import parse_schedule
from kravia_sync.service.daemon import Daemon
from kravia_sync.service.scheduling import Scheduler
from kravia_sync.settings import ConfigError, Settings, load_settings
from kravia_sync.state import rows
from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import Faults


def client_for(settings: Settings) -> KraviaClient:
    return KraviaClient(
        base_url=settings.kravia.base_url,
        token=TOKEN,
        timeout=settings.kravia.timeout_seconds,
        max_in_flight=settings.kravia.max_in_flight,
        requests_per_second=settings.kravia.requests_per_second,
    )


async def until(check: Callable[[], Any], *, within: float = 15.0, what: str = "") -> Any:
    """Poll `check` on the event loop until it is truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class TestParseSchedule:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("30s", 30), ("15m", 900), ("1h30m", 5400), ("1d", 86400), ("2H", 7200)],
    )
    def test_intervals(self, text: str, seconds: int) -> None:
        """Intervals combine days, hours, minutes and seconds."""
        assert parse_schedule(text).interval == timedelta(seconds=seconds)

    def test_cron_expressions_are_kept_as_written(self) -> None:
        """A five-field cron expression is accepted and normalised for spaces only."""
        schedule = parse_schedule("*/10  7-18 * * mon-fri")
        assert schedule.cron == "*/10 7-18 * * mon-fri"
        assert schedule.interval is None

    @pytest.mark.parametrize("text", ["", "0s", "15", "15 minutes", "61 * * * *", "* * * *"])
    def test_nonsense_is_refused_with_a_reason(self, text: str) -> None:
        """Empty, zero, unit-less and malformed cron schedules raise ValueError."""
        with pytest.raises(ValueError, match=r"interval|cron"):
            parse_schedule(text)


class TestDaemonSettings:
    def test_defaults_and_per_source_schedules(self, tmp_path: Path) -> None:
        """[daemon] has safe defaults (localhost, 15m); a source may set its own schedule."""
        config = write_config(tmp_path, "http://127.0.0.1:1/", source='schedule = "0 6 * * *"')
        settings = load_settings(config)
        assert settings.daemon.host == "127.0.0.1"
        assert settings.daemon.schedule == "15m"
        assert settings.sources[0].schedule == "0 6 * * *"

    def test_a_bad_schedule_names_the_key(self, tmp_path: Path) -> None:
        """A schedule that is neither interval nor cron is a ConfigError naming the source."""
        config = write_config(tmp_path, "http://127.0.0.1:1/", source='schedule = "hourly"')
        with pytest.raises(ConfigError, match=r"sources\.0\.schedule: .*'hourly'"):
            load_settings(config)

    def test_the_pass_deadline_defaults_to_half_an_hour_and_must_be_positive(
        self, tmp_path: Path
    ) -> None:
        """daemon.pass_timeout_seconds is 1800 unless set; 0 is refused naming the key."""
        config = write_config(tmp_path, "http://127.0.0.1:1/")
        assert load_settings(config).daemon.pass_timeout_seconds == 1800
        config.write_text(config.read_text() + "\n[daemon]\npass_timeout_seconds = 0\n")
        with pytest.raises(ConfigError, match=r"daemon\.pass_timeout_seconds"):
            load_settings(config)

    def test_the_documented_example_is_valid(self, tmp_path: Path) -> None:
        """The [daemon] and source example in docs/running-as-a-service.md loads."""
        docs = Path(__file__).resolve().parent.parent / "docs"
        page = (docs / "running-as-a-service.md").read_text("utf-8")
        example = page.split("```toml\n", 1)[1].split("```", 1)[0]
        config = tmp_path / "kravia-sync.toml"
        config.write_text(
            "[kravia]\ncreditor_id = 1\n"
            + example.replace('connector = "sql"', 'connector = "sql"\nsettings = {}'),
            encoding="utf-8",
        )
        settings = load_settings(config)
        assert settings.daemon.port == 9464
        assert settings.daemon.pass_timeout_seconds == 1800
        assert settings.sources[0].schedule == "*/10 7-18 * * mon-fri"


class TestScheduler:
    def test_due_jobs_call_back_and_a_retry_runs_once(self) -> None:
        """An interval job fires on time; `once` adds a single extra run."""
        fired: list[str] = []

        async def due(name: str) -> None:
            fired.append(name)

        async def go() -> None:
            scheduler = Scheduler(due, timezone="Europe/Oslo")
            scheduler.start()
            scheduler.set_jobs({"a": parse_schedule("1s")})
            assert scheduler.next_run("a") is not None
            scheduler.once("b", scheduler.next_run("a") - timedelta(seconds=0.5))  # type: ignore[operator]
            await until(lambda: fired.count("a") >= 2, what="two runs of a", within=5)
            scheduler.set_jobs({})
            assert scheduler.next_run("a") is None
            scheduler.shutdown()
            await asyncio.sleep(0)

        asyncio.run(go())
        assert fired.count("b") == 1


class TestBackoffAndAlerts:
    def test_a_failing_source_backs_off_alerts_and_leaves_the_others_alone(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A source that cannot be read fails, backs off, logs `source failing` after the
        threshold and makes /readyz answer 503; the good source keeps passing."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        config = write_config(tmp_path, sim.base_url, source='schedule = "1s"')
        config.write_text(
            config.read_text()
            + '\n[[sources]]\nname = "broken"\nconnector = "folder"\nid_prefix = "B"\n'
            'schedule = "1s"\n[sources.settings]\npath = "missing"\n'
            "\n[daemon]\nport = 0\nbackoff_seconds = 0.2\nbackoff_cap_seconds = 0.4\n"
            "alert_after_failures = 2\nstop_timeout_seconds = 5\n"
        )
        settings = load(config)
        daemon = Daemon(settings, client_factory=client_for, handle_signals=False)

        async def go() -> dict[str, Any]:
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.sources["broken"].failures >= 3, what="three failures")
            await until(lambda: daemon.sources["files"].last_status == "done", what="files")
            assert daemon.http is not None
            async with httpx.AsyncClient() as http:
                ready = await http.get(f"http://127.0.0.1:{daemon.http.port}/readyz")
                metrics = await http.get(f"http://127.0.0.1:{daemon.http.port}/metrics")
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=10) == 0
            return {"ready": ready, "metrics": metrics.text}

        with capture_logs() as logs:
            result = asyncio.run(go())

        assert result["ready"].status_code == 503
        body = result["ready"].json()
        assert body["sources"]["broken"]["failing"] is True
        assert body["sources"]["files"]["failing"] is False
        assert "missing" in body["sources"]["broken"]["last_error"]
        alerts = [line for line in logs if line["event"] == "source failing"]
        assert alerts, logs
        assert alerts[0]["source"] == "broken"
        assert alerts[0]["consecutive_failures"] == 2
        assert alerts[0]["log_level"] == "error"
        broken = [
            line for line in logs if line["event"] == "pass finished" and line["source"] == "broken"
        ]
        assert [line["consecutive_failures"] for line in broken[:3]] == [1, 2, 3]
        assert all(line["retry_at"] is not None for line in broken)
        assert 'kravia_sync_passes_total{outcome="failed",source="broken"}' in result["metrics"]
        assert 'kravia_sync_source_consecutive_failures{source="broken"}' in result["metrics"]
        assert len(sim.cases()) == 2  # the good source did its work


def deadline_settings(
    tmp_path: Path,
    *,
    stop_timeout: float,
    also: tuple[str, ...] = (),
    schedule: str = "1s",
    backoff: float = 0.2,
) -> Settings:
    """Source `files` (then each of `also`) on `schedule`, a 0.3 s pass deadline,
    `stop_timeout`, a `backoff` after a failure; nothing is read or sent (the passes are
    stand-ins)."""
    config = write_config(tmp_path, "http://127.0.0.1:1/", source=f'schedule = "{schedule}"')
    text = config.read_text(encoding="utf-8")
    for name in also:
        text += (
            f'\n[[sources]]\nname = "{name}"\nconnector = "folder"\nid_prefix = "{name}-"\n'
            f'schedule = "{schedule}"\n[sources.settings]\npath = "{name}"\n'
        )
    text += (
        "\n[daemon]\nport = 0\npass_timeout_seconds = 0.3\n"
        f"stop_timeout_seconds = {stop_timeout}\nbackoff_seconds = {backoff}\n"
        f"backoff_cap_seconds = {backoff * 2}\nalert_after_failures = 3\n"
    )
    config.write_text(text, encoding="utf-8")
    return load(config)


def events(logs: list[dict[str, Any]], event: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        line
        for line in logs
        if line["event"] == event and all(line.get(k) == v for k, v in fields.items())
    ]


async def is_ready(daemon: Daemon) -> bool:
    ready, _ = await daemon.readiness()
    return ready


OVERRUNNING = 'kravia_sync_pass_overrunning{source="files"}'


class TestPassDeadline:
    def test_a_hanging_pass_is_asked_to_stop_then_cut_off_and_counted_failed(
        self, tmp_path: Path
    ) -> None:
        """A pass that ignores the stop request at its deadline is cut off stop_timeout_seconds
        later and counts as failed; /readyz is 503 (saying which source, for how long) and
        the gauge 1 while it overruns, 200 and 0 after."""
        settings = deadline_settings(tmp_path, stop_timeout=1.0, schedule="1h", backoff=60)
        passes = FakePasses({"files": "wait"})
        daemon = Daemon(
            settings, client_factory=client_for, handle_signals=False, pass_factory=passes
        )

        async def go() -> dict[str, Any]:
            task = asyncio.create_task(daemon.run())
            await until(lambda: passes.asked_to_stop, what="the stop request", within=5)
            during = await daemon.readiness()
            assert daemon.http is not None
            async with httpx.AsyncClient() as http:
                http_during = await http.get(f"http://127.0.0.1:{daemon.http.port}/readyz")
            metrics_during = daemon.metrics.exposition().decode()
            await until(lambda: passes.cancelled, what="the cut-off", within=5)
            await until(lambda: daemon.sources["files"].failures == 1, what="the failure")
            after = await daemon.readiness()
            metrics_after = daemon.metrics.exposition().decode()
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=10) == 0
            return {
                "during": during,
                "http_during": http_during,
                "metrics_during": metrics_during,
                "after": after,
                "metrics_after": metrics_after,
            }

        with capture_logs() as logs:
            result = asyncio.run(go())

        ready, body = result["during"]
        assert ready is False
        overrun = body["overrunning"]["files"]
        assert overrun["running_seconds"] >= 0.3
        assert overrun["pass_timeout_seconds"] == 0.3
        assert overrun["cut_off"] is False
        assert result["http_during"].status_code == 503
        assert "files" in result["http_during"].json()["overrunning"]
        assert f"{OVERRUNNING} 1.0" in result["metrics_during"]

        ready, body = result["after"]
        assert ready is True, body
        assert body["overrunning"] == {}
        assert f"{OVERRUNNING} 0.0" in result["metrics_after"]
        failed = 'kravia_sync_passes_total{outcome="failed",source="files"} 1.0'
        assert failed in result["metrics_after"]
        assert passes.asked_to_stop == ["files"]
        assert passes.cancelled == ["files"]
        assert passes.finished == []

        (overran,) = events(logs, "pass overran")
        assert overran["log_level"] == "error"
        assert overran["source"] == "files"
        assert overran["running_s"] >= 0.3
        assert overran["pass_timeout_s"] == 0.3
        finished = events(logs, "pass finished", source="files")[0]
        assert finished["status"] == "failed"
        assert finished["consecutive_failures"] == 1
        assert finished["retry_at"] is not None  # the usual back-off
        assert "overran daemon.pass_timeout_seconds (0.3 s) and was cut off" in finished["error"]
        assert finished["duration_s"] >= 1.3  # the deadline, then the stop timeout

    def test_a_pass_that_stops_when_asked_still_counts_as_failed(self, tmp_path: Path) -> None:
        """A pass that stops at the request its deadline brings is not cancelled, and counts
        as a failed pass whose error names the deadline."""
        settings = deadline_settings(tmp_path, stop_timeout=5.0, schedule="1h", backoff=60)
        passes = FakePasses({"files": "obey"})
        daemon = Daemon(
            settings, client_factory=client_for, handle_signals=False, pass_factory=passes
        )

        async def go() -> None:
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.sources["files"].failures == 1, what="the failure")
            assert await is_ready(daemon)
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=10) == 0

        with capture_logs() as logs:
            asyncio.run(go())

        assert passes.finished[0] == "files"
        assert passes.cancelled == []
        finished = events(logs, "pass finished", source="files")[0]
        assert finished["status"] == "failed"
        assert finished["duration_s"] < 2
        error = finished["error"]
        assert "overran daemon.pass_timeout_seconds (0.3 s) and was asked to stop" in error
        assert not daemon.cut_off

    def test_a_pass_stuck_in_a_thread_does_not_hold_up_the_next_source(
        self, tmp_path: Path
    ) -> None:
        """A pass stuck in a blocking read (in asyncio.to_thread) is cut off without waiting
        for the thread and the next source's pass runs; the stuck source's next pass waits,
        and /readyz stays 503, until the read returns."""
        settings = deadline_settings(tmp_path, stop_timeout=0.3, also=("next",))
        passes = FakePasses({"files": "thread"})
        daemon = Daemon(
            settings, client_factory=client_for, handle_signals=False, pass_factory=passes
        )

        async def go(logs: list[dict[str, Any]]) -> dict[str, Any]:
            task = asyncio.create_task(daemon.run())
            try:
                await until(lambda: "next" in passes.finished, what="the next source's pass")
                while_stuck = await daemon.readiness()
                # Its retry after the back-off, and its schedule, find the read still running.
                await until(
                    lambda: events(logs, "skipped: the source's cut-off pass is still running"),
                    what="the stuck source held back",
                )
                starts_while_stuck = passes.started.count("files")
            finally:
                passes.release.set()
            await until(lambda: is_ready(daemon), what="ready once the read returned")
            await until(lambda: passes.finished.count("files") >= 1, what="files again")
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=10) == 0
            return {"while_stuck": while_stuck, "starts_while_stuck": starts_while_stuck}

        with capture_logs() as logs:
            result = asyncio.run(go(logs))

        assert passes.started[:2] == ["files", "next"]
        assert passes.cancelled[0] == "files"
        assert result["starts_while_stuck"] == 1
        ready, body = result["while_stuck"]
        assert ready is False
        assert body["overrunning"]["files"]["cut_off"] is True
        assert body["overrunning"]["files"]["read_left_running"] is True
        assert body["sources"]["files"]["last_status"] == "failed"
        assert events(logs, "pass finished", source="next")[0]["status"] == "done"
        assert events(logs, "pass overran", source="files")
        assert events(logs, "pass finished", source="files")[-1]["status"] == "done"
        assert daemon.cut_off  # run_daemon exits without waiting for such a thread

    def test_a_cut_off_pass_that_does_not_end_is_left_behind(self, tmp_path: Path) -> None:
        """A pass that goes on after it is cancelled is given up after a short grace: the next
        source's pass runs, the given-up pass is counted failed once, and its source waits."""
        settings = deadline_settings(tmp_path, stop_timeout=0.3, also=("next",))
        passes = FakePasses({"files": "deaf"})
        daemon = Daemon(
            settings, client_factory=client_for, handle_signals=False, pass_factory=passes
        )

        async def go() -> tuple[bool, dict[str, Any]]:
            task = asyncio.create_task(daemon.run())
            await until(lambda: "next" in passes.finished, what="the next source's pass")
            await asyncio.sleep(1.5)  # long enough for `files` to fall due again
            readiness = await daemon.readiness()
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=10) == 0
            return readiness

        with capture_logs() as logs:
            ready, body = asyncio.run(go())

        assert passes.cancelled[0] == "files"
        assert passes.started.count("files") == 1
        assert events(logs, "the cut-off pass did not end: going on without it", source="files")
        assert len(events(logs, "pass finished", source="files")) == 1
        assert events(logs, "skipped: the source's cut-off pass is still running", source="files")
        assert daemon.sources["files"].failures == 1
        assert ready is False
        assert body["overrunning"]["files"]["given_up"] is True


class TestReconcilerStop:
    def test_a_stop_request_lets_calls_in_flight_finish_and_starts_nothing_new(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """request_stop() during a pass: the pass ends `stopped`, every call sent has its
        outcome journaled, and no call starts after it."""
        write_invoices(tmp_path / "invoices", range(1, 21), pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        config.write_text(config.read_text().replace("max_in_flight = 8", "max_in_flight = 2"))
        settings = load(config)
        sim.simulator.faults = Faults(latency_ms=150)

        async def go() -> tuple[str, int]:
            with StateStore(settings.state_path) as store:
                async with client_for(settings) as client:
                    reconciler = Reconciler(settings, store, client=client)
                    task = asyncio.create_task(reconciler.run())
                    await until(lambda: client.stats.total() >= 3, what="some calls")
                    reconciler.request_stop()
                    summary = await task
                    return summary.status, client.stats.total()

        status, calls = asyncio.run(go())
        assert status == "stopped"
        assert calls == sim.calls_total()
        assert 3 <= calls < 40

    def test_a_pass_can_be_limited_to_named_sources(self, sim: Sim, tmp_path: Path) -> None:
        """run(sources=[...]) reads only those sources; an unknown name is refused."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        write_invoices(tmp_path / "other", [7], pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        config.write_text(
            config.read_text()
            + '\n[[sources]]\nname = "other"\nconnector = "folder"\nid_prefix = "O"\n'
            '[sources.settings]\npath = "other"\n'
        )
        settings = load(config)

        async def go(sources: list[str]) -> list[str]:
            with StateStore(settings.state_path) as store:
                async with client_for(settings) as client:
                    summary = await Reconciler(settings, store, client=client).run(sources=sources)
                    return [source.name for source in summary.sources]

        assert asyncio.run(go(["other"])) == ["other"]
        assert sorted(c["accountingInvoiceId"] for c in sim.cases()) == ["O7"]
        with pytest.raises(ValueError, match="no such source: nope"):
            asyncio.run(go(["nope"]))


class TestLockedStore:
    def test_a_pass_on_a_locked_store_fails_in_one_line_and_the_next_one_works(
        self, sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Another program holding the state store's write lock fails the daemon's pass with
        one error line naming the file and the lock (no traceback); the daemon goes on, and
        the first pass after the lock is let go works, sending nothing twice."""
        monkeypatch.setattr(rows, "BUSY_TIMEOUT_SECONDS", 0.3)
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        config = write_config(tmp_path, sim.base_url, source='schedule = "1s"')
        config.write_text(
            config.read_text()
            + "\n[daemon]\nport = 0\nbackoff_seconds = 0.2\nbackoff_cap_seconds = 0.4\n"
            "stop_timeout_seconds = 5\n"
        )
        settings = load(config)
        daemon = Daemon(settings, client_factory=client_for, handle_signals=False)
        files = daemon.sources["files"]

        async def go() -> None:
            task = asyncio.create_task(daemon.run())
            await until(lambda: files.last_status == "done", what="the first pass")
            locker = sqlite3.connect(settings.state_path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                await until(lambda: files.failures >= 1, what="a failed pass")
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            await until(lambda: files.last_status == "done", what="a pass after the lock")
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=10) == 0

        with capture_logs() as logs:
            asyncio.run(go())

        failed = events(logs, "pass failed", source="files")
        assert failed, [line["event"] for line in logs]
        assert failed[0]["log_level"] == "error"
        assert "exc_info" not in failed[0]  # said in one line, not with a traceback
        assert settings.state_path.name in failed[0]["error"]
        assert "lock" in failed[0]["error"]
        assert not [line for line in logs if line["event"] == "pass failed unexpectedly"]
        grouped = cases_by_accounting_id(sim.cases())
        assert sorted(grouped) == ["1", "2"]
        assert all(len(cases) == 1 for cases in grouped.values())


class TestThePassFinishedLine:
    def test_it_carries_the_money_a_pass_forwarded(self, sim: Sim, tmp_path: Path) -> None:
        """The daemon's line for a pass names the sums moved, as `run finished` does: the
        payment and the credit note forwarded, in NOK, as decimal strings."""
        folder = tmp_path / "invoices"
        write_invoices(folder, [1, 2], pdf_every=0)
        config = write_config(tmp_path, sim.base_url, source='schedule = "1h"')
        config.write_text(config.read_text() + "\n[daemon]\nport = 0\n")
        settings = load(config)
        run_pass(config)  # both cases registered and started
        (folder / "payments.csv").write_text(
            "payment_id,kind,date,amount,invoice_number\n"
            "P-1,payment,2026-11-20,300.00,1\n"
            "CN-2,credit_note,2026-11-20,200.50,2\n",
            encoding="utf-8",
        )
        daemon = Daemon(settings, client_factory=client_for, handle_signals=False)

        async def go() -> None:
            task = asyncio.create_task(daemon.run())
            await until(lambda: daemon.sources["files"].last_status, what="the pass")
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=10) == 0

        with capture_logs() as logs:
            asyncio.run(go())

        finished = events(logs, "pass finished", source="files")[0]
        assert finished["status"] == "done", finished
        assert finished["payments_sent_nok"] == "300.00"
        assert finished["credit_notes_sent_nok"] == "200.50"
        assert "clamped_sent_nok" not in finished  # only what happened
