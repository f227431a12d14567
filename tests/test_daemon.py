"""`kravia-sync daemon` as a real process against the Kravia simulator: schedules, metrics,
graceful stops, and the writer lease shared by two daemons."""

from __future__ import annotations

import itertools
import signal
import statistics
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from daemon_support import DaemonProcess, daemon_config
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, insert, select
from state_sql import JOURNAL, LEASE, state_engine
from support import TOKEN, Sim, cases_by_accounting_id, cli_env, write_invoices

from kravia_sync.state.store import StateStore
from kravia_sync.state.stored import utc_now
from kravia_sync.testing.simulator import Faults

STATE = Path("state") / "kravia-sync.db"


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons started by a test; any still running at its end are killed."""
    started: list[DaemonProcess] = []
    yield started
    for process in started:
        process.kill()


def start(
    daemons: list[DaemonProcess],
    cwd: Path,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> DaemonProcess:
    process = DaemonProcess(cwd, args=args, env=env)
    daemons.append(process)
    return process


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def journal_counts(state: Path) -> tuple[int, int]:
    """(calls journaled with an outcome, intents without one)."""
    store = StateStore(state)
    try:
        with state_engine(store).connect() as connection:
            outcomes = connection.execute(  # of calls that left (not the intents not sent)
                select(func.count())
                .select_from(JOURNAL)
                .where(JOURNAL.c.kind == "outcome", JOURNAL.c.outcome != "not_sent")
            ).scalar_one()
            unanswered = connection.execute(
                select(func.count()).select_from(
                    select(JOURNAL.c.attempt_id)
                    .where(
                        JOURNAL.c.kind.in_(["intent", "outcome"])
                    )  # not decisions made without a call
                    .group_by(JOURNAL.c.attempt_id)
                    .having(func.count() == 1)
                    .subquery()
                )
            ).scalar_one()
        return int(outcomes), int(unanswered)
    finally:
        store.close()


def started_cases(sim: Sim) -> int:
    return sum(1 for case in sim.cases() if case["started"])


def parse_time(line: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(line["timestamp"]))


class TestSchedule:
    def test_passes_on_schedule_pick_up_new_files_and_metrics_match_the_simulator(
        self, sim: Sim, tmp_path: Path, daemons: list[DaemonProcess]
    ) -> None:
        """A first pass at start-up, then one a second; a new file is registered at the next
        pass; /metrics parses and its call counters equal what the simulator received."""
        write_invoices(tmp_path / "invoices", range(1, 5), pdf_every=2)
        daemon_config(tmp_path, sim.base_url, schedule="1s")
        daemon = start(daemons, tmp_path)

        first = daemon.wait_event("pass finished")[0]
        assert first["status"] == "done"
        assert first["counts"]["registered"] == 4
        assert started_cases(sim) == 4

        passes = daemon.wait_event("pass finished", count=5, timeout=30)
        gaps = [
            (parse_time(b) - parse_time(a)).total_seconds()
            for a, b in itertools.pairwise(passes[1:])
        ]
        assert min(gaps) >= 0.5, gaps
        assert 0.8 <= statistics.median(gaps) <= 1.5, gaps
        assert all(line["remote_calls"] == 0 for line in passes[1:])  # no-op passes

        before = len(daemon.events("pass finished"))
        write_invoices(tmp_path / "invoices", [5, 6], pdf_every=2, name="later.json")
        daemon.wait_for(lambda: started_cases(sim) == 6, what="the new invoices started")
        later = daemon.wait_for(
            lambda: [
                line
                for line in daemon.events("pass finished")[before:]
                if line["counts"].get("registered")
            ],
            what="the pass that registered the new file",
        )
        assert later[0]["counts"]["registered"] == 2
        assert later[0]["counts"]["unchanged"] == 4

        assert daemon.get("/healthz").json() == {"status": "alive"}
        ready = daemon.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["ready"] is True
        assert ready.json()["lease"] == "held"

        # Let a pass finish after the last call, so the counters are complete.
        seen = len(daemon.events("pass finished"))
        daemon.wait_event("pass finished", count=seen + 1)
        passes_logged = len(daemon.events("pass finished"))
        metrics = daemon.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        samples = metric_samples(metrics.text)
        calls = sim.simulator.calls()
        for operation in ("register", "document", "action", "search", "details"):
            ours = samples.get(
                ("kravia_sync_remote_calls_total", (("endpoint", operation), ("outcome", "ok"))),
                0.0,
            )
            assert ours == sum(calls[operation].values()), (operation, calls)
        total = sum(
            value
            for (name, _), value in samples.items()
            if name == "kravia_sync_remote_calls_total"
        )
        # register, start, three PDFs, one search of Kravia per pass that registered, and
        # the first-contact canary's read-back of its case (one search page, its details)
        assert total == calls["total"] == 6 + 6 + 3 + 2 + 2
        assert sum(calls["search"].values()) == 2 + 1
        assert samples[("kravia_sync_cases", (("phase", "started"),))] == 6
        assert samples[("kravia_sync_quarantined_records", (("kind", "invalid"),))] == 0
        done = samples[("kravia_sync_passes_total", (("outcome", "done"), ("source", "files")))]
        assert passes_logged <= done
        assert samples[("kravia_sync_seconds_since_last_success", (("source", "files"),))] < 5
        assert samples[("kravia_sync_writer_lease_held", ())] == 1

        assert daemon.stop() == 0
        assert done <= len(daemon.events("pass finished"))
        assert daemon.events("daemon stopped")
        daemon.assert_no_secret()
        with StateStore(tmp_path / STATE) as store:
            assert store.current_lease() is None  # released on the way out
        assert len(cases_by_accounting_id(sim.cases())) == 6


@pytest.mark.slow
class TestGracefulStop:
    def test_sigterm_mid_pass_journals_the_calls_in_flight_and_a_restart_finishes(
        self, sim: Sim, tmp_path: Path, daemons: list[DaemonProcess]
    ) -> None:
        """SIGTERM while calls are out: those finish and are journaled, nothing new starts,
        exit 0; after a restart every invoice is exactly one started case."""
        write_invoices(tmp_path / "invoices", range(1, 25), pdf_every=2)
        daemon_config(tmp_path, sim.base_url, schedule="1h", max_in_flight=3)
        sim.simulator.faults = Faults(latency_ms=250)
        daemon = start(daemons, tmp_path)

        daemon.wait_for(lambda: sim.calls_total() >= 6, what="calls in flight")
        daemon.signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert daemon.wait(timeout=15) == 0, daemon.output()
        assert time.monotonic() - signalled < 10

        (stopped_pass,) = daemon.events("pass finished")
        assert stopped_pass["status"] == "stopped"
        assert started_cases(sim) < 24, "the stop came too late to test anything"
        outcomes, unanswered = journal_counts(tmp_path / STATE)
        assert unanswered == 0, "a call in flight was left without its outcome"
        # Every call Kravia received is journaled with its answer: none started after the stop.
        # (The searches of Kravia's cases are reads of the whole creditor, not a case's calls,
        # and so is the first-contact canary's read-back of its case's details.)
        searches = sum(sim.simulator.calls()["search"].values())
        canary_reads = sum(sim.simulator.calls()["details"].values())
        assert canary_reads == 1
        assert outcomes == sim.calls_total() - searches - canary_reads

        sim.simulator.faults = Faults()
        restarted = start(daemons, tmp_path)
        restarted.wait_for(lambda: started_cases(sim) == 24, what="every invoice started")
        assert restarted.stop() == 0
        grouped = cases_by_accounting_id(sim.cases())
        assert sorted(grouped, key=int) == [str(n) for n in range(1, 25)]
        for aid, cases in grouped.items():
            assert len(cases) == 1, f"invoice {aid} has {len(cases)} cases"
            assert cases[0]["started"]
            assert len(cases[0]["documents"]) == (1 if int(aid) % 2 == 0 else 0), aid

    def test_a_second_signal_exits_at_once_and_the_journal_settles_it(
        self, sim: Sim, tmp_path: Path, daemons: list[DaemonProcess]
    ) -> None:
        """A second SIGTERM does not wait for the slow calls; a restart still ends with one
        started case per invoice."""
        write_invoices(tmp_path / "invoices", range(1, 7), pdf_every=0)
        # The restart must not look for a lost case before the simulator, still busy with
        # the calls cut off, has created it: settle_seconds covers the simulator's latency.
        daemon_config(
            tmp_path,
            sim.base_url,
            schedule="1h",
            max_in_flight=2,
            retry="backoff_base_seconds = 0.05\nsettle_seconds = 4\nmax_inline_wait_seconds = 6",
        )
        sim.simulator.faults = Faults(latency_ms=3000)
        daemon = start(daemons, tmp_path)

        daemon.wait_event("writer lease acquired")
        daemon.wait_for(
            lambda: journal_counts(tmp_path / STATE)[1] > 0, what="calls in flight (intents)"
        )
        daemon.signal(signal.SIGTERM)
        daemon.wait_event("stopping: the calls in flight finish, nothing new starts")
        signalled = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(timeout=10)
        assert time.monotonic() - signalled < 2.5
        assert code == 128 + signal.SIGTERM
        assert daemon.events("second signal: exiting at once")

        sim.simulator.faults = Faults()
        restarted = start(daemons, tmp_path)
        restarted.wait_for(lambda: started_cases(sim) == 6, what="every invoice started")
        assert restarted.stop() == 0
        grouped = cases_by_accounting_id(sim.cases())
        assert {aid: len(cases) for aid, cases in grouped.items()} == {
            str(n): 1 for n in range(1, 7)
        }


@pytest.mark.slow
class TestPassDeadline:
    def test_a_pass_whose_calls_hang_overruns_is_cut_off_and_the_next_pass_settles_it(
        self, sim: Sim, tmp_path: Path, daemons: list[DaemonProcess]
    ) -> None:
        """Kravia answering slower than the pass deadline: `pass overran`, /readyz 503 and the
        gauge at 1, the pass cut off and failed; once Kravia is quick again the retry makes
        every invoice exactly one started case and /readyz answers 200."""
        write_invoices(tmp_path / "invoices", range(1, 7), pdf_every=0)
        # settle_seconds covers the simulator's latency: the retry must not look for a case
        # the simulator, still busy with the calls cut off, has not created yet.
        daemon_config(
            tmp_path,
            sim.base_url,
            schedule="1h",
            max_in_flight=2,
            daemon="pass_timeout_seconds = 1\nstop_timeout_seconds = 1\nbackoff_seconds = 1",
            retry="backoff_base_seconds = 0.05\nsettle_seconds = 4\nmax_inline_wait_seconds = 6",
        )
        sim.simulator.faults = Faults(latency_ms=3000)
        daemon = start(daemons, tmp_path)

        overran = daemon.wait_event("pass overran", timeout=15)[0]
        ready = daemon.get("/readyz")
        overrunning = metric_samples(daemon.get("/metrics").text)[
            ("kravia_sync_pass_overrunning", (("source", "files"),))
        ]
        assert overran["source"] == "files"
        assert overran["level"] == "error"
        assert overran["pass_timeout_s"] == 1
        assert overran["running_s"] >= 1
        assert ready.status_code == 503, ready.text
        assert ready.json()["overrunning"]["files"]["pass_timeout_seconds"] == 1
        assert overrunning == 1

        failed = daemon.wait_event("pass finished", timeout=15)[0]
        assert failed["status"] == "failed"
        assert "overran daemon.pass_timeout_seconds (1 s) and was cut off" in failed["error"]
        sim.simulator.faults = Faults()
        daemon.wait_for(lambda: started_cases(sim) == 6, what="every invoice started", timeout=30)
        daemon.wait_event("pass finished", status="done", timeout=15)
        assert daemon.get("/readyz").status_code == 200
        assert daemon.stop() == 0
        grouped = cases_by_accounting_id(sim.cases())
        assert {aid: len(cases) for aid, cases in grouped.items()} == {
            str(n): 1 for n in range(1, 7)
        }


class TestLease:
    def test_a_second_daemon_waits_for_the_lease_and_takes_over_when_the_first_stops(
        self, sim: Sim, tmp_path: Path, daemons: list[DaemonProcess]
    ) -> None:
        """Two daemons on one state database: one works, the other says it waits for the
        lease, does nothing, and takes over when the first stops."""
        write_invoices(tmp_path / "invoices", range(1, 4), pdf_every=0)
        daemon_config(tmp_path, sim.base_url, schedule="1s", lease_seconds=1.5)
        first = start(daemons, tmp_path)
        first.wait_event("pass finished")

        second = start(daemons, tmp_path)
        waiting = second.wait_event("waiting for the writer lease")[0]
        assert waiting["holder"] == f"pid {first.pid} on {_host()}"
        # Longer than the lease lasts: the first renews it, the second keeps waiting.
        time.sleep(2.5)
        assert second.events("writer lease acquired") == []
        assert second.events("pass finished") == []
        write_invoices(tmp_path / "invoices", [4], pdf_every=0, name="four.json")
        first.wait_for(lambda: started_cases(sim) == 4, what="the first daemon registers")
        assert second.get("/readyz").json()["lease"] == "waiting"

        assert first.stop() == 0
        second.wait_event("writer lease acquired", timeout=10)
        second.wait_event("pass finished")
        write_invoices(tmp_path / "invoices", [5], pdf_every=0, name="five.json")
        second.wait_for(lambda: started_cases(sim) == 5, what="the second daemon registers")
        assert second.stop() == 0

        grouped = cases_by_accounting_id(sim.cases())
        assert {aid: len(cases) for aid, cases in grouped.items()} == {
            str(n): 1 for n in range(1, 6)
        }
        # A stop that lands mid-pass ends that pass as "stopped"; every other pass is done.
        for daemon in (first, second):
            *earlier, last = daemon.events("pass finished")
            for line in earlier:
                assert line["status"] == "done", line
            assert last["status"] in {"done", "stopped"}, last

    def test_a_lease_left_by_a_dead_daemon_elsewhere_is_taken_over_after_it_expires(
        self, sim: Sim, tmp_path: Path, daemons: list[DaemonProcess]
    ) -> None:
        """A lease whose holder cannot be checked (another host) is waited for, then taken
        once it has expired."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        daemon_config(tmp_path, sim.base_url, schedule="1h")
        expires = utc_now() + timedelta(seconds=2.5)
        with StateStore(tmp_path / STATE) as store, state_engine(store).begin() as connection:
            connection.execute(
                insert(LEASE).values(
                    name="writer",
                    holder="pid 4242 on gone-host",
                    host="gone-host",
                    pid=4242,
                    acquired_at=utc_now() - timedelta(minutes=5),
                    expires_at=expires,
                    holder_id="gone-holder",
                    epoch=3,
                    host_key="gone-host|boot|pid:[1]",
                )
            )
        daemon = start(daemons, tmp_path)
        waiting = daemon.wait_event("waiting for the writer lease")[0]
        assert waiting["holder"] == "pid 4242 on gone-host"
        acquired = daemon.wait_event("writer lease acquired", timeout=15)[0]
        assert parse_time(acquired) >= expires
        daemon.wait_for(lambda: started_cases(sim) == 2, what="the invoices started")
        assert daemon.stop() == 0


class TestAsSystemdRunsIt:
    def test_token_from_the_credentials_directory_and_state_from_the_environment(
        self, sim: Sim, tmp_path: Path, daemons: list[DaemonProcess]
    ) -> None:
        """What deploy/kravia-sync.service relies on: the token read from
        $CREDENTIALS_DIRECTORY/kravia_token, the state path from KRAVIA_SYNC_STATE__PATH, a
        configuration elsewhere than the working directory."""
        etc = tmp_path / "etc"
        etc.mkdir()
        write_invoices(etc / "invoices", range(1, 3), pdf_every=0)
        daemon_config(etc, sim.base_url, schedule="1h")
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "kravia_token").write_text(TOKEN + "\n", encoding="utf-8")
        state = tmp_path / "var" / "lib" / "kravia-sync" / "kravia-sync.db"
        env = cli_env(CREDENTIALS_DIRECTORY=str(credentials), KRAVIA_SYNC_STATE__PATH=str(state))
        del env["KRAVIA_TOKEN"]
        work = tmp_path / "work"
        work.mkdir()
        daemon = start(daemons, work, args=("--config", str(etc / "kravia-sync.toml")), env=env)
        daemon.wait_for(lambda: started_cases(sim) == 2, what="the invoices started")
        assert daemon.stop() == 0
        assert state.exists()
        assert not (etc / STATE).exists()
        daemon.assert_no_secret()


class TestReload:
    def test_sighup_reloads_the_configuration_and_a_bad_file_is_refused(
        self, sim: Sim, tmp_path: Path, daemons: list[DaemonProcess]
    ) -> None:
        """SIGHUP with a broken file keeps the running configuration; with a new source added,
        that source gets its first pass at once."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        config = daemon_config(tmp_path, sim.base_url, schedule="1h")
        daemon = start(daemons, tmp_path)
        daemon.wait_event("pass finished")
        good = config.read_text(encoding="utf-8")

        config.write_text(good.replace('schedule = "1h"', 'schedule = "every now and then"'))
        daemon.signal(signal.SIGHUP)
        refused = daemon.wait_event("configuration not reloaded: keeping the running one")[0]
        assert "every now and then" in refused["error"]

        write_invoices(tmp_path / "more", [100, 101], pdf_every=0)
        config.write_text(
            good.replace(
                "\n[daemon]",
                '\n[[sources]]\nname = "more"\nconnector = "folder"\n'
                'id_prefix = "M"\nschedule = "*/5 * * * *"\n'
                '[sources.settings]\npath = "more"\n\n[daemon]',
            )
        )
        daemon.signal(signal.SIGHUP)
        reloaded = daemon.wait_event("configuration reloaded")[0]
        assert reloaded["sources"] == {"files": "1h", "more": "*/5 * * * *"}
        line = daemon.wait_event("pass finished", source="more")[0]
        assert line["counts"]["registered"] == 2
        assert daemon.stop() == 0
        assert sorted(cases_by_accounting_id(sim.cases())) == ["1", "2", "M100", "M101"]


def _host() -> str:
    import socket  # noqa: PLC0415

    return socket.gethostname()
