"""`plan` lists everything a pass would do or leave alone, the same in both forms: the work
(cases, pauses of held cases, payments and credit notes to forward) makes exit code 2; held,
not yet eligible and approval-waiting invoices are listed with their reasons, and are not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support import Sim, invoice_record, run_cli, write_config, write_invoices

AMOUNT_DROPS = 'payments = "amount_drops"'


def plan_json(tmp_path: Path) -> tuple[int, dict[str, Any]]:
    shown = run_cli("plan", "--json", cwd=tmp_path)
    assert shown.returncode in {0, 2}, shown.stdout + shown.stderr
    return shown.returncode, json.loads(shown.stdout)


def steps(listed: list[dict[str, str]]) -> dict[str, str]:
    return {row["invoice_number"] or row["accounting_invoice_id"]: row["step"] for row in listed}


class TestHeld:
    def test_a_held_invoice_is_listed_as_held_with_its_reason(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Held before it was ever sent: both forms list it as held, with the reason, and a
        plan with nothing else in it exits 0 (a hold is no work for a pass)."""
        write_invoices(tmp_path / "invoices", range(1, 4), pdf_every=0)
        write_config(tmp_path, sim.base_url)
        run_cli("hold", "2", "--reason", "disputed by the customer", cwd=tmp_path)
        assert run_cli("reconcile", cwd=tmp_path).returncode == 0

        human = run_cli("plan", cwd=tmp_path)
        code, listed = plan_json(tmp_path)

        assert human.returncode == code == 0, human.stdout
        held_lines = [line for line in human.stdout.splitlines() if line.startswith("held ")]
        assert len(held_lines) == 1, human.stdout
        assert " 2" in held_lines[0]
        assert "disputed by the customer" in held_lines[0]
        assert listed["pending"] is False
        (held,) = listed["held"]
        assert (held["invoice_number"], held["step"]) == ("2", "held")
        assert "disputed by the customer" in held["detail"]
        assert listed["actions"] == []

    def test_a_held_case_the_next_pass_pauses_is_work(self, sim: Sim, tmp_path: Path) -> None:
        """With policy.hold_action, a held case in collection is paused by the next pass: plan
        lists that call as work (exit 2) in both forms, and says what it sends."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        write_config(tmp_path, sim.base_url, policy='hold_action = "Pause"')
        assert run_cli("reconcile", cwd=tmp_path).returncode == 0
        run_cli("hold", "1", "--reason", "paid in cash", cwd=tmp_path)

        human = run_cli("plan", cwd=tmp_path)
        code, listed = plan_json(tmp_path)

        assert human.returncode == code == 2, human.stdout
        assert "nothing to do" not in human.stdout
        assert "hold_action" in human.stdout
        assert "'Pause'" in human.stdout
        (action,) = listed["actions"]
        assert (action["invoice_number"], action["step"]) == ("1", "hold_action")
        assert "paid in cash" in action["detail"]

    def test_a_held_case_nothing_pauses_is_listed_not_work(self, sim: Sim, tmp_path: Path) -> None:
        """Without policy.hold_action a held case in collection is for a person to pause:
        listed as held with that, and no work for a pass (exit 0)."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == 0
        run_cli("hold", "1", "--reason", "paid in cash", cwd=tmp_path)

        human = run_cli("plan", cwd=tmp_path)
        code, listed = plan_json(tmp_path)

        assert human.returncode == code == 0, human.stdout
        assert "pause it in Kravia yourself" in human.stdout
        assert steps(listed["held"]) == {"1": "held"}
        assert "quarantined" not in human.stdout


class TestPaymentsToForward:
    def test_a_payment_to_forward_is_work_and_never_nothing_to_do(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Only a payment to forward: plan lists it (both forms), exits 2, and does not say
        there is nothing to do."""
        records = write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        write_config(tmp_path, sim.base_url, source=AMOUNT_DROPS)
        assert run_cli("reconcile", cwd=tmp_path).returncode == 0
        records[0]["amount"] = "400.00"
        (tmp_path / "invoices" / "invoices-1.json").write_text(json.dumps(records), "utf-8")

        human = run_cli("plan", cwd=tmp_path)
        code, listed = plan_json(tmp_path)

        assert human.returncode == code == 2, human.stdout
        assert "nothing to do" not in human.stdout
        assert "send_payment" in human.stdout
        (action,) = listed["actions"]
        assert (action["accounting_invoice_id"], action["step"]) == ("1", "send_payment")
        assert listed["counts"]["payments_to_forward"] == 1


class TestNotYetEligible:
    def test_an_invoice_not_yet_due_is_listed_with_when_it_may_go(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Not overdue enough: listed with the policy's reason in both forms, not work."""
        folder = tmp_path / "invoices"
        folder.mkdir()
        records = [invoice_record(1), invoice_record(2, days_overdue=3)]
        (folder / "a.json").write_text(json.dumps(records), "utf-8")
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == 0

        human = run_cli("plan", cwd=tmp_path)
        code, listed = plan_json(tmp_path)

        assert human.returncode == code == 0, human.stdout
        assert "not yet eligible (1)" in human.stdout
        (waiting,) = listed["not_eligible"]
        assert (waiting["invoice_number"], waiting["step"]) == ("2", "waiting")
        assert "collection may start" in waiting["detail"]
        assert waiting["detail"] in human.stdout

    def test_nothing_to_do_is_said_only_when_there_is_nothing(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Everything sent and nothing kept out: plan says nothing to do, lists nothing, and
        exits 0."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=0)
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == 0

        human = run_cli("plan", cwd=tmp_path)
        code, listed = plan_json(tmp_path)

        assert human.returncode == code == 0
        assert human.stdout.strip() == "plan: nothing to do"
        assert not any(listed[key] for key in ("actions", "held", "not_eligible", "not_now"))


class TestAFailedPlan:
    def test_a_plan_that_failed_says_so_not_nothing_to_do(self, tmp_path: Path) -> None:
        """A source that cannot be read: plan exits 1, names the source and why, and does not
        say there is nothing to do."""
        write_config(tmp_path, "http://127.0.0.1:9/api/v2/", invoices="no-such-folder")

        human = run_cli("plan", cwd=tmp_path)

        assert human.returncode == 1, human.stdout + human.stderr
        assert "nothing to do" not in human.stdout
        assert "plan failed" in human.stdout
        assert "source files failed" in human.stdout
