"""What an operator sees after a pass, end to end: the exit code a monitor alerts on, the
notes a person reads on a case, and the money the summary shows."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from support import Sim, cli_env, invoice_record, run_cli, run_pass, write_config

from kravia_sync.lifecycle import CaseState
from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import Faults

EXIT_DONE = 0
EXIT_ATTENTION = 3
EVERY_PASS = "status_every_seconds = 0"

# `kravia-sync reconcile` that SIGKILLs itself when it comes to clear cases' notes: `before`
# the write, or right `after` it (argv[1]).
KILLED_AT_THE_CLEARING = (
    "import os, signal, sys\n"
    "moment = sys.argv[1]\n"
    "from kravia_sync.state.store import StateStore\n"
    "write = StateStore.clear_case_notes\n"
    "def clear_then_die(self, clearings, *, now):\n"
    "    if moment == 'after':\n"
    "        write(self, clearings, now=now)\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
    "StateStore.clear_case_notes = clear_then_die\n"
    "from kravia_sync.cli.app import main\n"
    "sys.argv = ['kravia-sync', 'reconcile']\n"
    "main()\n"
)


def write_invoices(folder: Path, numbers: list[int]) -> dict[str, Decimal]:
    """The invoices as one JSON file; each invoice number's amount."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [invoice_record(n) for n in numbers]
    (folder / "invoices.json").write_text(json.dumps(records), encoding="utf-8")
    return {record["invoice_number"]: Decimal(record["amount"]) for record in records}


def write_payments(folder: Path, rows: list[dict[str, str]]) -> None:
    columns = ["payment_id", "kind", "date", "amount", "invoice_number"]
    with (folder / "payments.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in columns})


def payment(
    payment_id: str, invoice: str, amount: Decimal, kind: str = "payment"
) -> dict[str, str]:
    return {
        "payment_id": payment_id,
        "kind": kind,
        "date": "2026-11-20",
        "amount": str(amount),
        "invoice_number": invoice,
    }


def case_of(tmp_path: Path, invoice: str) -> CaseState:
    with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
        (case,) = store.find_cases(invoice)
        return case


def journal_of(tmp_path: Path, invoice: str) -> list[dict[str, Any]]:
    with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
        return store.journal_for(case_of(tmp_path, invoice).accounting_invoice_id)


def kravia_id(sim: Sim, invoice: str) -> int:
    return next(int(case["id"]) for case in sim.cases() if case["invoiceNo"] == invoice)


def log_event(stderr: str, event: str) -> dict[str, Any]:
    """The JSON log line of `event` a CLI run wrote."""
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return next(line for line in lines if line.get("event") == event)


class TestPendingWorkEndsTheRunWithAttention:
    def test_a_payment_that_cannot_be_sent_this_pass_exits_3_until_it_is_sent(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Kravia's case cannot be read, so the payment waits for a later pass: the pass is
        done with pending work (exit 3, status attention, the payment named as pending), and
        the pass that sends it is simply done."""
        folder = tmp_path / "invoices"
        write_invoices(folder, [1])
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE
        write_payments(folder, [payment("P-1", "1", Decimal("100.00"))])
        sim.simulator.faults = Faults(error_5xx=1.0, operations=("details",))

        deferred = run_cli("reconcile", "--json", cwd=tmp_path)

        assert deferred.returncode == EXIT_ATTENTION, deferred.stdout + deferred.stderr
        summary = json.loads(deferred.stdout)
        assert summary["status"] == "attention"
        assert summary["counts"]["payments_deferred"] == 1
        assert summary["attention"] == {"payments_deferred": 1}
        sim.simulator.faults = Faults()

        sent = run_cli("reconcile", "--json", cwd=tmp_path)

        assert sent.returncode == EXIT_DONE, sent.stdout + sent.stderr
        assert json.loads(sent.stdout)["attention"] == {}

    def test_plan_reports_the_pending_work_it_sees_with_its_status(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """`plan --json` judges what it read the same way: a quarantined record makes it
        `attention` and is named as pending; its exit code still says what a pass would do."""
        folder = tmp_path / "invoices"
        write_invoices(folder, [1])
        bad = [invoice_record(2, currency="XYZ")]
        (folder / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
        write_config(tmp_path, sim.base_url)

        planned = run_cli("plan", "--json", cwd=tmp_path)

        assert planned.returncode == 2, planned.stdout + planned.stderr  # invoice 1 to send
        shown = json.loads(planned.stdout)
        assert shown["status"] == "attention"
        assert shown["attention"] == {"invalid": 1}


def gone_noted(sim: Sim, tmp_path: Path) -> Path:
    """Invoices 1 and 2 registered, then 1 gone from the source with nothing forwarded
    (noted, exit 3); the folder of invoices."""
    folder = tmp_path / "invoices"
    write_invoices(folder, [1, 2])
    write_config(tmp_path, sim.base_url)
    assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE
    write_invoices(folder, [2])
    assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_ATTENTION
    assert "Kravia still collects" in (case_of(tmp_path, "1").attention or "")
    return folder


def gone_noted_then_back(sim: Sim, tmp_path: Path) -> int:
    """As `gone_noted`, then 1 back in the source unchanged (not yet read again); Kravia's
    calls so far."""
    folder = gone_noted(sim, tmp_path)
    calls = sim.calls_total()
    write_invoices(folder, [1, 2])
    return calls


class TestGoneNotesClearThemselves:
    def test_an_invoice_that_leaves_with_a_payment_covering_it_needs_no_one(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Paid in full and gone from the source in one read: the payment forwarded in that
        pass covers what Kravia had, so no note, and the pass is done, before any status
        pull-back."""
        folder = tmp_path / "invoices"
        amounts = write_invoices(folder, [1, 2])
        write_config(tmp_path, sim.base_url)  # the default: no pull-back in the next passes
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE
        write_invoices(folder, [2])
        write_payments(folder, [payment("P-1", "1", amounts["1"])])

        result = run_cli("reconcile", "--json", cwd=tmp_path)

        assert result.returncode == EXIT_DONE, result.stdout + result.stderr
        summary = json.loads(result.stdout)
        assert summary["counts"]["payments_sent"] == 1
        assert summary["counts"]["gone_settled"] == 1
        assert "gone_unexplained" not in summary["counts"]
        assert case_of(tmp_path, "1").attention is None
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE

    def test_kravia_closing_the_case_clears_the_note_in_the_next_pass(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Gone with nothing forwarded: noted for a person (exit 3). Once Kravia reports the
        case closed with nothing left, the note is cleared, journaled once, and passes are
        done again."""
        folder = tmp_path / "invoices"
        amounts = write_invoices(folder, [1, 2])
        config = write_config(tmp_path, sim.base_url, kravia=EVERY_PASS)
        run_pass(config)
        write_invoices(folder, [2])
        noted = run_pass(config)
        assert noted.status == "attention"
        assert "Kravia still collects" in (case_of(tmp_path, "1").attention or "")
        sim.simulator.payout([(kravia_id(sim, "1"), amounts["1"])])  # Kravia collected it all

        cleared = run_pass(config)
        again = run_pass(config)

        case = case_of(tmp_path, "1")
        assert case.attention is None
        assert case.kravia_status == "Closed"
        assert cleared.status == "done", cleared.as_dict()
        assert cleared.counts["gone_notes_cleared"] == 1
        assert again.status == "done"
        assert "gone_notes_cleared" not in again.counts
        clearings = [e for e in journal_of(tmp_path, "1") if e["operation"] == "note_cleared"]
        assert len(clearings) == 1
        assert clearings[0]["kind"] == "decision"
        assert "Kravia still collects" in clearings[0]["message"]

    def test_an_invoice_back_in_the_source_has_its_note_cleared(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Gone with nothing forwarded (noted, exit 3), then back in the source unchanged: the
        note asking whether it was paid no longer holds. It is cleared in that pass, journaled
        once with why, `status` stops listing it and the passes are done; nothing is sent."""
        calls_before = gone_noted_then_back(sim, tmp_path)

        back = run_cli("reconcile", "--json", cwd=tmp_path)

        assert back.returncode == EXIT_DONE, back.stdout + back.stderr
        assert json.loads(back.stdout)["counts"]["gone_notes_cleared"] == 1
        assert case_of(tmp_path, "1").attention is None
        clearings = [e for e in journal_of(tmp_path, "1") if e["operation"] == "note_cleared"]
        assert len(clearings) == 1
        assert clearings[0]["message"].startswith("its invoice is back in the source")
        assert "Kravia still collects" not in run_cli("status", cwd=tmp_path).stdout
        again = run_cli("reconcile", "--json", cwd=tmp_path)
        assert again.returncode == EXIT_DONE
        assert "gone_notes_cleared" not in json.loads(again.stdout)["counts"]
        assert sim.calls_total() == calls_before
        assert len(sim.cases()) == 2

    @pytest.mark.parametrize("moment", ["before", "after"])
    def test_a_kill_at_the_clearing_leaves_it_whole_for_the_next_pass(
        self, sim: Sim, tmp_path: Path, moment: str
    ) -> None:
        """The process is SIGKILLed just before, or just after, it writes the clearing of a
        returned invoice's note. Either the note is still there or it is cleared and journaled;
        the next pass ends with it cleared, journaled exactly once, and nothing sent."""
        calls_before = gone_noted_then_back(sim, tmp_path)

        killed = subprocess.run(
            [sys.executable, "-c", KILLED_AT_THE_CLEARING, moment],
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert killed.returncode == -signal.SIGKILL, killed.stderr
        clearings = [e for e in journal_of(tmp_path, "1") if e["operation"] == "note_cleared"]
        if moment == "before":
            assert "Kravia still collects" in (case_of(tmp_path, "1").attention or "")
            assert clearings == []
        else:
            assert case_of(tmp_path, "1").attention is None
            assert len(clearings) == 1
        after = run_cli("reconcile", "--json", cwd=tmp_path)
        assert after.returncode == EXIT_DONE, after.stdout + after.stderr
        assert case_of(tmp_path, "1").attention is None
        clearings = [e for e in journal_of(tmp_path, "1") if e["operation"] == "note_cleared"]
        assert len(clearings) == 1
        assert clearings[0]["message"].startswith("its invoice is back in the source")
        assert sim.calls_total() == calls_before
        assert len(sim.cases()) == 2

    def test_another_invoice_given_the_gone_invoices_id_does_not_clear_its_note(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Invoice 1 leaves (noted), and a new invoice, 9, arrives with 1's id: that is not 1
        back (invoices keep their numbers). 9 is quarantined naming both, and 1's note stays."""
        folder = tmp_path / "invoices"
        folder.mkdir()
        first, second = invoice_record(1), invoice_record(2)
        (folder / "invoices.json").write_text(json.dumps([first, second]), encoding="utf-8")
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE
        (folder / "invoices.json").write_text(json.dumps([second]), encoding="utf-8")
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_ATTENTION
        aid = case_of(tmp_path, "1").accounting_invoice_id
        stranger = invoice_record(9, accounting_invoice_id=aid)
        (folder / "invoices.json").write_text(json.dumps([second, stranger]), encoding="utf-8")

        result = run_cli("reconcile", "--json", cwd=tmp_path)

        assert result.returncode == EXIT_ATTENTION, result.stdout + result.stderr
        summary = json.loads(result.stdout)
        assert "gone_notes_cleared" not in summary["counts"]
        assert any(problem["field"] == "accounting_invoice_id" for problem in summary["problems"])
        assert "Kravia still collects" in (case_of(tmp_path, "1").attention or "")
        assert not [e for e in journal_of(tmp_path, "1") if e["operation"] == "note_cleared"]
        assert len(sim.cases()) == 2

    @pytest.mark.parametrize(
        "invalid", [{"due_date": "not a date"}, {"amount": "-5.00"}], ids=["bad-date", "negative"]
    )
    def test_an_invalid_record_with_the_gone_invoices_id_does_not_clear_its_note(
        self, sim: Sim, tmp_path: Path, invalid: dict[str, str]
    ) -> None:
        """Invoice 1 leaves (noted), and an invalid record of another invoice, 9, carries 1's
        id: quarantined before its number could show it is not 1, it proves nothing about 1,
        whose note stays (and stays in the passes after)."""
        folder = tmp_path / "invoices"
        folder.mkdir()
        second = invoice_record(2)
        (folder / "invoices.json").write_text(
            json.dumps([invoice_record(1), second]), encoding="utf-8"
        )
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE
        (folder / "invoices.json").write_text(json.dumps([second]), encoding="utf-8")
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_ATTENTION
        stranger = invoice_record(
            9, accounting_invoice_id=case_of(tmp_path, "1").accounting_invoice_id, **invalid
        )
        (folder / "invoices.json").write_text(json.dumps([second, stranger]), encoding="utf-8")

        for _ in range(2):
            result = run_cli("reconcile", "--json", cwd=tmp_path)
            assert result.returncode == EXIT_ATTENTION, result.stdout + result.stderr
            assert "gone_notes_cleared" not in json.loads(result.stdout)["counts"]
            assert "Kravia still collects" in (case_of(tmp_path, "1").attention or "")

    def test_an_invoice_back_under_a_new_id_has_its_note_cleared(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Invoice 1 leaves (noted) and comes back with a new id, as after an ERP migration:
        its case adopts the id, the note clears, and nothing is registered again."""
        folder = gone_noted(sim, tmp_path)
        renamed = invoice_record(1, accounting_invoice_id="NEW-1")
        (folder / "invoices.json").write_text(
            json.dumps([renamed, invoice_record(2)]), encoding="utf-8"
        )

        result = run_cli("reconcile", "--json", cwd=tmp_path)

        assert result.returncode == EXIT_DONE, result.stdout + result.stderr
        counts = json.loads(result.stdout)["counts"]
        assert counts["ids_adopted"] == 1
        assert counts["gone_notes_cleared"] == 1
        assert case_of(tmp_path, "1").attention is None
        assert len(sim.cases()) == 2

    def test_a_note_that_is_not_a_gone_note_stays_when_its_invoice_is_read(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Only the gone note clears on the invoice's return: a note a person must act on for
        another reason stays."""
        folder = tmp_path / "invoices"
        write_invoices(folder, [1, 2])
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE
        with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
            aid = case_of(tmp_path, "1").accounting_invoice_id
            store.set_case_notes([(aid, {"attention": "checked by hand: keep"})])

        assert run_cli("reconcile", cwd=tmp_path).returncode in {EXIT_DONE, EXIT_ATTENTION}

        assert case_of(tmp_path, "1").attention == "checked by hand: keep"

    def test_refresh_clears_the_note_of_a_case_kravia_closed(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """`kravia-sync refresh` reads the case closed and clears its note at once; `status`
        no longer lists it, and the next pass is done."""
        folder = tmp_path / "invoices"
        amounts = write_invoices(folder, [1, 2])
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE
        write_invoices(folder, [2])
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_ATTENTION
        sim.simulator.payout([(kravia_id(sim, "1"), amounts["1"])])

        refreshed = run_cli("refresh", cwd=tmp_path)

        assert refreshed.returncode == EXIT_DONE, refreshed.stdout + refreshed.stderr
        assert case_of(tmp_path, "1").attention is None
        assert "Kravia still collects" not in run_cli("status", cwd=tmp_path).stdout
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE


def _money_pass(sim: Sim, tmp_path: Path, *args: str) -> tuple[Any, dict[str, Decimal]]:
    """Four cases, then a pass forwarding: a payment, a credit note, a payment above the
    capital left (clamped), and a payment on a case Kravia has closed (nothing left)."""
    folder = tmp_path / "invoices"
    amounts = write_invoices(folder, [1, 2, 3, 4])
    write_config(tmp_path, sim.base_url)
    assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_DONE
    sim.simulator.payout([(kravia_id(sim, "4"), amounts["4"])])
    write_payments(
        folder,
        [
            payment("P-1", "1", Decimal("300.00")),
            payment("CN-1", "2", Decimal("200.00"), kind="credit_note"),
            payment("P-3", "3", amounts["3"] + 500),
            payment("P-4", "4", Decimal("50.00")),
        ],
    )
    return run_cli("reconcile", *args, cwd=tmp_path), amounts


class TestTheSummaryShowsMoney:
    def test_json_and_the_run_finished_line_carry_the_sums_as_decimal_strings(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Sent payments and credit notes, the clamp (asked and sent) and what Kravia had
        nothing left for, each with its count and its sum in NOK."""
        result, amounts = _money_pass(sim, tmp_path, "--json")

        assert result.returncode == EXIT_DONE, result.stdout + result.stderr
        money = json.loads(result.stdout)["money"]
        clamped_to = str(amounts["3"])
        assert money["payments_sent"] == {
            "count": 2,
            "asked": str(amounts["3"] + 800),
            "sent": str(amounts["3"] + 300),
        }
        assert money["credit_notes_sent"] == {"count": 1, "asked": "200.00", "sent": "200.00"}
        assert money["clamped"] == {
            "count": 2,
            "asked": str(amounts["3"] + 550),
            "sent": clamped_to,
        }
        assert money["nothing_left"] == {"count": 1, "asked": "50.00", "sent": "0.00"}
        assert money["deferred"] == {"count": 0, "asked": "0.00", "sent": "0.00"}
        finished = log_event(result.stderr, "run finished")
        assert finished["payments_sent_nok"] == str(amounts["3"] + 300)
        assert finished["credit_notes_sent_nok"] == "200.00"
        assert finished["nothing_left_asked_nok"] == "50.00"

    def test_the_table_shows_each_sum_as_money(self, sim: Sim, tmp_path: Path) -> None:
        """The table a person reads: a NOK column beside the counts, each sum as money."""
        result, amounts = _money_pass(sim, tmp_path)

        assert result.returncode == EXIT_DONE, result.stdout + result.stderr

        def row(label: str) -> str:
            return next(line for line in result.stdout.splitlines() if label in line)

        assert "NOK" in row("count")
        assert f"{amounts['3'] + 300:,.2f}" in row("payments sent to Kravia")
        assert "200.00" in row("credit notes sent to Kravia")
        clamped = row("clamped to the capital Kravia had left")
        assert f"{amounts['3']:,.2f} of {amounts['3'] + 550:,.2f} asked" in clamped
        assert "50.00" in row("not sent: Kravia had nothing left")
