"""SIGKILL at many moments of a run: every invoice still ends as exactly one started case."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import Sim, cases_by_accounting_id, cli_command, cli_env, write_config, write_invoices

from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import Faults, Shape

KILLS = 24
NEW_PER_ROUND = 6


def _unanswered_intents(state: Path) -> int:
    """Journal intents that have no outcome: calls a kill left without an answer."""
    from sqlalchemy import func, select  # noqa: PLC0415
    from state_sql import JOURNAL, state_engine  # noqa: PLC0415

    store = StateStore(state)
    try:
        with state_engine(store).connect() as connection:
            rows = connection.execute(
                select(JOURNAL.c.attempt_id, func.count())
                .where(
                    JOURNAL.c.kind.in_(["intent", "outcome"])
                )  # not decisions made without a call
                .group_by(JOURNAL.c.attempt_id)
                .having(func.count() == 1)
            ).all()
        return len(rows)
    finally:
        store.close()


# `kravia-sync` with its work list holding one new invoice in memory: every other one is
# written to the pass's temporary file and read back as the workers take it.
WRITTEN_OUT = (
    "import sys\n"
    "from kravia_sync.engine.worklist import WorkList\n"
    "WorkList.IN_MEMORY = 1\n"
    "from kravia_sync.cli.app import main\n"
    "sys.argv = ['kravia-sync', *sys.argv[1:]]\n"
    "main()\n"
)


def _reconcile_command(work_list: str) -> list[str]:
    if work_list == "in memory":
        return cli_command("reconcile")
    return [sys.executable, "-c", WRITTEN_OUT, "reconcile"]


@pytest.mark.slow
class TestKilledRuns:
    @pytest.mark.parametrize("work_list", ["in memory", "written out"])
    def test_sigkill_at_24_moments_leaves_exactly_one_started_case_each(
        self, sim: Sim, tmp_path: Path, work_list: str
    ) -> None:
        """Kill `kravia-sync reconcile` mid-run again and again; re-runs settle every invoice.
        Also with the new invoices of each pass written out to its temporary file (`written
        out`): a kill while they are there loses nothing and sends nothing twice."""
        folder = tmp_path / "invoices"
        config = write_config(
            tmp_path,
            sim.base_url,
            retry="backoff_base_seconds = 0.05\nsettle_seconds = 0.3\nmax_inline_wait_seconds = 2",
        )
        config.write_text(config.read_text().replace("max_in_flight = 8", "max_in_flight = 3"))
        # Each call takes a while, so a kill lands inside calls as well as between them.
        sim.simulator.faults = Faults(latency_ms=60)
        state = tmp_path / "state" / "kravia-sync.db"
        kill_points: list[float] = []
        left_unanswered = 0
        next_number = 1
        for round_number in range(KILLS):
            write_invoices(
                folder,
                range(next_number, next_number + NEW_PER_ROUND),
                pdf_every=2,
                name=f"round-{round_number:02d}.json",
            )
            next_number += NEW_PER_ROUND
            process = subprocess.Popen(
                _reconcile_command(work_list),
                cwd=tmp_path,
                env=cli_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if round_number % 3 == 2:
                # Every third kill lands as soon as this run's first call is journaled (plus
                # 0-60 ms): mid-call, whatever the machine's pace.
                started = time.monotonic()
                _wait_for_case_intents(state, more_than=_case_intents(state), process=process)
                time.sleep((round_number % 4) * 0.02)
                delay = round(time.monotonic() - started, 3)
            else:
                # The interpreter starts in ~0.6 s; spread the kills over the run after it.
                delay = 0.5 + (round_number % 8) * 0.15 + (round_number // 8) * 0.04
                time.sleep(delay)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            kill_points.append(delay)
            if state.exists():
                left_unanswered += _unanswered_intents(state) > 0
        assert len(set(kill_points)) >= 16
        assert left_unanswered > 0, "no kill ever landed between an intent and its outcome"

        for _ in range(6):
            final = subprocess.run(
                _reconcile_command(work_list),
                cwd=tmp_path,
                env=cli_env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if final.returncode == 0:
                break
            time.sleep(0.3)
        assert final.returncode == 0, final.stdout + final.stderr

        grouped = cases_by_accounting_id(sim.cases())
        assert len(grouped) == KILLS * NEW_PER_ROUND
        duplicates = {aid: len(cases) for aid, cases in grouped.items() if len(cases) > 1}
        assert duplicates == {}
        for aid, (case,) in grouped.items():
            assert case["started"], f"invoice {aid} not started"
            assert len(case["documents"]) == (1 if int(aid) % 2 == 0 else 0), aid


PAYMENT_ROUNDS = 10
PAYMENTS_PER_ROUND = 4


def _write_payments(folder: Path, numbers: range) -> None:
    lines = ["payment_id;kind;date;amount;invoice_number"]
    lines += [
        f"P-{n};{'credit_note' if n % 3 == 0 else 'payment'};2026-11-20;{n}.25;{n}" for n in numbers
    ]
    (folder / "payments.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _case_intents(state: Path) -> int:
    """How many case calls the journal holds intents of (read without locking)."""
    if not state.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM journal WHERE kind = 'intent' AND payment_id IS NULL"
            ).fetchone()
    except sqlite3.OperationalError:  # the first run is still creating the tables
        return 0
    return int(count)


def _wait_for_case_intents(
    state: Path, *, more_than: int, process: subprocess.Popen[bytes], timeout: float = 10.0
) -> None:
    """Until a case call beyond the first `more_than` is journaled (or the run ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if _case_intents(state) > more_than:
            return
        time.sleep(0.005)


def _payment_intents(state: Path) -> int:
    """How many payment calls the journal holds intents of (read without locking)."""
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM journal WHERE kind = 'intent' AND payment_id IS NOT NULL"
        ).fetchone()
    return int(count)


def _wait_for_payment_intents(
    state: Path, *, more_than: int, process: subprocess.Popen[bytes], timeout: float = 10.0
) -> None:
    """Until a payment call beyond the first `more_than` is journaled (or the run ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if _payment_intents(state) > more_than:
            return
        time.sleep(0.005)


@pytest.mark.slow
class TestKilledPayments:
    def test_sigkill_while_forwarding_payments_sends_each_exactly_once(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Payments and credit notes forwarded while `reconcile` is killed again and again:
        in the end each one is in Kravia exactly once (the simulator does not de-duplicate)."""
        folder = tmp_path / "invoices"
        total = PAYMENT_ROUNDS * PAYMENTS_PER_ROUND
        write_invoices(folder, range(1, total + 1), pdf_every=0)
        write_config(
            tmp_path,
            sim.base_url,
            retry="backoff_base_seconds = 0.05\nsettle_seconds = 0.3\nmax_inline_wait_seconds = 2",
        )
        first = subprocess.run(
            cli_command("reconcile"), cwd=tmp_path, env=cli_env(), capture_output=True, check=False
        )
        assert first.returncode == 0, first.stdout + first.stderr
        sim.simulator.faults = Faults(
            latency_ms=60, operations=("payment", "creditnote", "details")
        )
        state = tmp_path / "state" / "kravia-sync.db"
        left_unanswered = 0
        intents = _payment_intents(state)
        for round_number in range(PAYMENT_ROUNDS):
            _write_payments(folder, range(1, (round_number + 1) * PAYMENTS_PER_ROUND + 1))
            process = subprocess.Popen(
                cli_command("reconcile"),
                cwd=tmp_path,
                env=cli_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            # Killed as soon as this round's first payment call is journaled, or a few tens of
            # milliseconds later (the calls take 60 ms): mid-call, whatever the machine's pace.
            _wait_for_payment_intents(state, more_than=intents, process=process)
            time.sleep((round_number % 4) * 0.02)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            intents = _payment_intents(state)
            left_unanswered += _unanswered_intents(state) > 0
        assert left_unanswered > 0, "no kill ever landed between an intent and its outcome"
        sim.simulator.faults = Faults()
        # A payment whose call a kill left unanswered is settled only once its settle time
        # (0.3 s, on Kravia's clock, whose Date header is cut to the second) has passed; a
        # pass that starts sooner defers it and still ends `done`, exit 0 (the exit code does
        # not count deferred payments yet). The final passes go on, as later scheduled runs
        # would, until every payment is sent (at most six).
        time.sleep(0.4)

        phases: set[str] = set()
        for _ in range(6):
            final = subprocess.run(
                cli_command("reconcile"),
                cwd=tmp_path,
                env=cli_env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            with StateStore(state) as store:
                phases = {p.phase.value for p in store.all_payments(limit=1000)}
            if final.returncode == 0 and phases == {"sent"}:
                break
            time.sleep(0.4)
        assert final.returncode == 0, final.stdout + final.stderr
        assert phases == {"sent"}

        received = [p["accountingPaymentId"] for p in sim.simulator.payments()]
        assert sorted(received) == sorted(f"P-{n}" for n in range(1, total + 1))


ACCEPTANCE_INVOICES = 300
ACCEPTANCE_KILLS = 30


@pytest.mark.slow
class TestKilledAtRandom:
    @pytest.mark.parametrize("details_shape", ["list", "object"])
    def test_thirty_random_kills_then_at_most_three_passes_finish_every_case(
        self, sim: Sim, tmp_path: Path, details_shape: str
    ) -> None:
        """300 invoices (one in three with a PDF), 20 ms per call, 30 SIGKILLs at random
        0.2-3 s into a run (every third, from the first, instead within 10 ms of a case call's intent); then at most three passes with settle_seconds = 5 end with 300
        cases, none duplicated, all started, every copy uploaded: whether Kravia's case
        details list documents and actions (`list`) or not (`object`: booleans, no
        documents, so unconfirmed uploads are sent again)."""
        rng = random.Random(f"kills-{details_shape}")
        write_invoices(tmp_path / "invoices", range(1, ACCEPTANCE_INVOICES + 1), pdf_every=3)
        write_config(tmp_path, sim.base_url, retry="settle_seconds = 5")
        sim.simulator.faults = Faults(latency_ms=20)
        sim.simulator.shape = Shape(details_shape=details_shape)
        state = tmp_path / "state" / "kravia-sync.db"
        landed = 0
        for round_number in range(ACCEPTANCE_KILLS):
            process = subprocess.Popen(
                cli_command("reconcile"),
                cwd=tmp_path,
                env=cli_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if round_number % 3 == 0:
                # However long start-up takes, and while calls remain to be made (from the
                # first round on), some kills land mid-call: within the 20 ms a call takes.
                _wait_for_case_intents(state, more_than=_case_intents(state), process=process)
                time.sleep(rng.uniform(0.0, 0.01))
            else:
                time.sleep(rng.uniform(0.2, 3.0))
            process.kill()  # SIGKILL (nothing, if the run has ended already)
            process.wait(timeout=10)
            if state.exists():
                landed += _unanswered_intents(state) > 0
        assert landed > 0, "no kill landed between an intent and its outcome"

        results = []
        for _ in range(3):
            final = subprocess.run(
                cli_command("reconcile"),
                cwd=tmp_path,
                env=cli_env(),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            results.append(final.returncode)
            if final.returncode == 0:
                break
        assert results[-1] == 0, final.stdout + final.stderr

        grouped = cases_by_accounting_id(sim.cases())
        assert len(grouped) == ACCEPTANCE_INVOICES
        duplicates = {aid: len(cases) for aid, cases in grouped.items() if len(cases) > 1}
        assert duplicates == {}
        assert all(cases[0]["started"] for cases in grouped.values())
        copies = [aid for aid, (case,) in grouped.items() if case["documents"]]
        assert sorted(copies, key=int) == [str(n) for n in range(3, 301, 3)]
        if details_shape == "list":  # confirmable: each copy exactly once
            assert all(len(grouped[aid][0]["documents"]) == 1 for aid in copies)
        with StateStore(state) as store:
            assert store.phase_counts() == {"started": ACCEPTANCE_INVOICES}
