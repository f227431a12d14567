"""Holds and manual approval, through the CLI against the Kravia simulator."""

from __future__ import annotations

from pathlib import Path

from support import Sim, run_cli, run_pass, write_config, write_invoices

from kravia_sync.state.store import StateStore

MANUAL = 'start = "manual"'


def started(sim: Sim) -> set[str]:
    return {case["invoiceNo"] for case in sim.cases() if case["started"]}


def registered(sim: Sim) -> set[str]:
    return {case["invoiceNo"] for case in sim.cases()}


def _section(output: str, title: str) -> str:
    """The lines of the table whose title has `title` in it, up to the next table."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line and "┏" not in line)
    end = next(i for i in range(start + 2, len(lines)) if lines[i].startswith("└"))
    return "\n".join(lines[start : end + 1])


class TestHolds:
    def test_a_held_invoice_is_never_sent_until_released(self, sim: Sim, tmp_path: Path) -> None:
        write_invoices(tmp_path / "invoices", range(1, 4), pdf_every=0)
        write_config(tmp_path, sim.base_url)

        held = run_cli("hold", "2", "--reason", "disputed by the customer", cwd=tmp_path)
        first = run_cli("reconcile", cwd=tmp_path)
        status = run_cli("status", cwd=tmp_path)

        assert held.returncode == 0, held.stderr
        assert first.returncode == 0, first.stdout + first.stderr
        assert registered(sim) == {"1", "3"}
        assert "disputed by the customer" in status.stdout
        plan = run_cli("plan", cwd=tmp_path)
        assert plan.returncode == 0  # nothing to do while held

        released = run_cli("release", "2", cwd=tmp_path)
        second = run_cli("reconcile", cwd=tmp_path)

        assert released.returncode == 0, released.stderr
        assert second.returncode == 0, second.stdout + second.stderr
        assert started(sim) == {"1", "2", "3"}

    def test_a_hold_on_a_case_in_collection_is_flagged(self, sim: Sim, tmp_path: Path) -> None:
        """Nothing we can send takes it back: the case and every run say to pause it."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        calls = sim.calls_total()

        held = run_cli("hold", "1", "--reason", "paid in cash", cwd=tmp_path)
        summary = run_pass(config)

        assert "already in Kravia" in held.stdout
        assert sim.calls_total() == calls
        assert summary.status == "attention"
        assert summary.as_dict()["attention"] == {"held_not_paused": 1}
        (problem,) = summary.problems
        assert problem["field"] == "hold"
        assert "pause it in Kravia" in problem["reason"]
        with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
            (case,) = [c for c in store.load_cases("files").values() if c.invoice_number == "1"]
        assert case.attention is not None
        assert "paid in cash" in case.attention

    def test_the_configured_pause_action_is_sent_once(self, sim: Sim, tmp_path: Path) -> None:
        """With policy.hold_action, a held case in collection is paused in Kravia, once."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        config = write_config(tmp_path, sim.base_url, policy='hold_action = "Pause"')
        run_pass(config)
        run_cli("hold", "1", "--reason", "disputed", cwd=tmp_path)

        first = run_pass(config)
        second = run_pass(config)

        statuses = {case["invoiceNo"]: case["status"] for case in sim.cases()}
        assert statuses == {"1": "Paused", "2": "CollectionStarted"}
        assert first.counts["hold_actions_sent"] == 1
        assert first.problems == []
        assert second.counts.get("hold_actions_sent", 0) == 0
        assert sum(second.remote_calls.values()) == 0
        with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
            (case,) = [c for c in store.load_cases("files").values() if c.invoice_number == "1"]
            operations = [
                entry["operation"] for entry in store.journal_for(case.accounting_invoice_id)
            ]
        assert operations.count("hold_action") == 2  # intent and outcome
        assert case.hold_action_at is not None

        assert run_cli("release", "1", cwd=tmp_path).returncode == 0
        with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
            (case,) = [c for c in store.load_cases("files").values() if c.invoice_number == "1"]
        assert (case.attention, case.hold_action_at) == (None, None)

    def test_hold_says_what_comes_of_it_for_each_hold_action(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """`hold` tells apart an invoice not in Kravia (nothing to pause), a case the next pass
        pauses (policy.hold_action set) and one a person must pause (unset)."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)

        not_sent = run_cli("hold", "77", "--reason", "not ours", cwd=tmp_path)
        by_hand = run_cli("hold", "1", "--reason", "disputed", cwd=tmp_path)
        write_config(tmp_path, sim.base_url, policy='hold_action = "Pause"')
        by_pass = run_cli("hold", "2", "--reason", "disputed", cwd=tmp_path)

        assert not_sent.returncode == by_hand.returncode == by_pass.returncode == 0
        assert "not in Kravia" in not_sent.stdout
        assert "nothing to pause" in not_sent.stdout
        assert "pause it in Kravia yourself" in by_hand.stdout
        assert "the next pass sends 'Pause' to pause it" in by_pass.stdout
        assert "pause it in Kravia" not in by_pass.stdout

    def test_status_tells_holds_never_sent_from_holds_in_kravia(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """`status` lists a hold on an invoice never sent apart from one on a case Kravia has,
        and says of the latter what comes of it."""
        write_invoices(tmp_path / "invoices", range(1, 4), pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        run_cli("hold", "2", "--reason", "disputed by the customer", cwd=tmp_path)
        run_pass(config)
        run_cli("hold", "3", "--reason", "paid in cash", cwd=tmp_path)

        status = run_cli("status", cwd=tmp_path)

        assert status.returncode == 0, status.stderr
        never_sent, in_kravia = (
            _section(status.stdout, "never sent"),
            _section(status.stdout, "already in Kravia ("),
        )
        assert "disputed by the customer" in never_sent
        assert "paid in cash" not in never_sent
        assert "paid in cash" in in_kravia
        assert "pause it in Kravia yourself" in in_kravia

    def test_release_of_what_is_not_held_fails(self, sim: Sim, tmp_path: Path) -> None:
        write_config(tmp_path, sim.base_url)

        result = run_cli("release", "77", cwd=tmp_path)

        assert result.returncode == 1
        assert "not on hold" in result.stderr


class TestManualApproval:
    def test_only_what_is_approved_starts(self, sim: Sim, tmp_path: Path) -> None:
        write_invoices(tmp_path / "invoices", range(1, 5), pdf_every=2)
        write_config(tmp_path, sim.base_url, policy=MANUAL)

        first = run_cli("reconcile", cwd=tmp_path)
        plan = run_cli("plan", "--json", cwd=tmp_path)

        assert first.returncode == 0, first.stdout + first.stderr
        assert registered(sim) == {"1", "2", "3", "4"}
        assert started(sim) == set()
        assert '"awaiting_approval": 4' in first.stdout or "awaiting approval" in first.stdout
        assert "awaiting approval" in plan.stdout

        approve = run_cli("start", "2", "3", cwd=tmp_path)

        assert approve.returncode == 0, approve.stdout + approve.stderr
        assert started(sim) == {"2", "3"}
        again = run_cli("reconcile", cwd=tmp_path)
        assert again.returncode == 0
        assert started(sim) == {"2", "3"}

        everything = run_cli("start", "--all", cwd=tmp_path)

        assert everything.returncode == 0, everything.stdout + everything.stderr
        assert started(sim) == {"1", "2", "3", "4"}

    def test_start_all_with_nothing_awaiting_fails(self, sim: Sim, tmp_path: Path) -> None:
        """`start --all` when no case awaits approval approves nothing: exit 1, and says so."""
        write_invoices(tmp_path / "invoices", range(1, 2), pdf_every=0)
        write_config(tmp_path, sim.base_url)
        run_cli("reconcile", cwd=tmp_path)

        result = run_cli("start", "--all", cwd=tmp_path)

        assert result.returncode == 1, result.stdout + result.stderr
        assert "no case is awaiting approval" in result.stderr

    def test_start_refuses_what_is_not_awaiting(self, sim: Sim, tmp_path: Path) -> None:
        write_invoices(tmp_path / "invoices", range(1, 2), pdf_every=0)
        write_config(tmp_path, sim.base_url)
        run_cli("reconcile", cwd=tmp_path)

        result = run_cli("start", "1", "404", cwd=tmp_path)

        assert result.returncode == 1
        assert "1 is started, not awaiting approval" in result.stderr
        assert "404: no such case" in result.stderr
