"""The command line as a user runs it: real processes, real HTTP, the real state file."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from support import (
    TOKEN,
    Sim,
    cli_command,
    cli_env,
    invoice_record,
    load,
    run_cli,
    write_config,
    write_invoices,
)

from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import Faults

EXIT_ATTENTION = 3


def _write_bad_folder(folder: Path) -> dict[str, str]:
    """A folder with every kind of bad input beside valid invoices; bad record → field."""
    folder.mkdir(parents=True)
    valid = [invoice_record(n) for n in (1, 2, 3)]
    (folder / "good.json").write_text(json.dumps(valid), encoding="utf-8")
    (folder / "broken.json").write_text('{"invoice_number": "9", ', encoding="utf-8")
    (folder / "nodue.csv").write_text(
        "invoice_number,invoice_date,amount,debtor_name,address_line1,postal_code,city\n"
        "50,2025-01-01,100,Ola,Gate 1,0150,Oslo\n",
        encoding="utf-8",
    )
    bad = [
        invoice_record(10, due_date="2025-02-30"),
        invoice_record(11, amount="-250,00"),
        invoice_record(12, debtor_type="business"),
        invoice_record(13, debtor_type="business", organization_number="123456789"),
        invoice_record(14, currency="XYZ"),
        invoice_record(15),
        invoice_record(16, days_overdue=3),
    ]
    (folder / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    (folder / "15.pdf").write_bytes(b"<html>this is not a PDF</html>")
    return {
        "broken.json": "file",
        "nodue.csv": "due_date",
        "bad.json:10": "due_date",
        "bad.json:11": "amount",
        "bad.json:12": "organization_number",
        "bad.json:13": "organization_number",
        "bad.json:14": "currency",
        "bad.json:15": "document",
    }


class TestBadInput:
    def test_bad_records_are_named_and_the_valid_ones_still_registered(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Every bad record is quarantined with its field; every valid one becomes a case."""
        expected = _write_bad_folder(tmp_path / "invoices")
        write_config(tmp_path, sim.base_url)

        result = run_cli("reconcile", "--json", cwd=tmp_path)

        assert result.returncode == EXIT_ATTENTION, result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "attention"
        problems = {p["record"]: p["field"] for p in summary["problems"]}
        assert problems == expected
        registered = sorted(case["invoiceNo"] for case in sim.cases())
        assert registered == ["1", "2", "3"], "only the valid overdue invoices are sent"
        assert all(case["started"] for case in sim.cases())

        status = run_cli("status", cwd=tmp_path)

        assert status.returncode == 0, status.stderr
        for record, field in expected.items():
            assert record in status.stdout
            assert field in status.stdout
        for reason in (
            "invalid JSON",
            "missing required column 'due_date'",
            "is not a real date",
            "must not be negative",
            "required for a business debtor",
            "not a valid Norwegian organisation number",
            "not an ISO 4217 currency code",
            "15.pdf is not a PDF",
            "collection may start 14 days after the due date",
        ):
            assert reason in status.stdout, reason

    def test_a_fixed_record_leaves_quarantine_on_the_next_pass(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Quarantine is retried: once the source is corrected the invoice is sent."""
        folder = tmp_path / "invoices"
        folder.mkdir()
        record = invoice_record(5, currency="XYZ")
        (folder / "a.json").write_text(json.dumps(record), encoding="utf-8")
        write_config(tmp_path, sim.base_url)
        assert run_cli("reconcile", cwd=tmp_path).returncode == EXIT_ATTENTION
        record["currency"] = "NOK"
        (folder / "a.json").write_text(json.dumps(record), encoding="utf-8")

        result = run_cli("reconcile", cwd=tmp_path)

        assert result.returncode == 0, result.stdout + result.stderr
        assert [case["invoiceNo"] for case in sim.cases()] == ["5"]
        store = StateStore(load(tmp_path / "kravia-sync.toml").state_path)
        try:
            assert store.quarantined("invalid") == []
        finally:
            store.close()


class TestExitCodes:
    def test_plan_exits_2_with_changes_and_0_without(self, sim: Sim, tmp_path: Path) -> None:
        """`plan` tells pending changes apart from nothing to do, and changes nothing."""
        write_invoices(tmp_path / "invoices", range(1, 4))
        write_config(tmp_path, sim.base_url)

        pending = run_cli("plan", cwd=tmp_path)
        applied = run_cli("reconcile", cwd=tmp_path)
        nothing = run_cli("plan", cwd=tmp_path)

        assert pending.returncode == 2, pending.stderr
        assert "register" in pending.stdout
        assert applied.returncode == 0, applied.stderr
        assert nothing.returncode == 0, nothing.stderr
        assert sim.simulator.calls()["processed"]["register"] == 3

    def test_plan_exits_2_when_only_a_start_is_left(self, sim: Sim, tmp_path: Path) -> None:
        """Cases registered and documented whose Start Kravia turned away (429: not applied)
        are work left: `plan` lists the start and exits 2 once its wait is over."""
        write_invoices(tmp_path / "invoices", range(1, 3), pdf_every=1)
        write_config(
            tmp_path,
            sim.base_url,
            retry="backoff_base_seconds = 0.05\nmax_inline_wait_seconds = 0\nretries_per_pass = 0",
        )
        sim.simulator.faults = Faults(rate_limit_429=1.0, operations=("action",))
        turned_away = run_cli("reconcile", cwd=tmp_path)
        sim.simulator.faults = Faults()

        deadline = time.monotonic() + 10
        while True:
            pending = run_cli("plan", "--json", cwd=tmp_path)
            steps = {action["step"] for action in json.loads(pending.stdout)["actions"]}
            if steps or time.monotonic() > deadline:
                break
            time.sleep(0.2)

        assert turned_away.returncode in {0, 3}, turned_away.stderr
        assert sim.simulator.calls()["processed"].get("register") == 2
        assert steps == {"start"}, pending.stdout
        assert pending.returncode == 2, pending.stderr

    def test_a_config_error_names_file_and_key_and_exits_1(self, tmp_path: Path) -> None:
        """A wrong value is reported with the file and the dotted key."""
        config = write_config(tmp_path, "http://127.0.0.1:9/api/v2/")
        config.write_text(config.read_text().replace("creditor_id = 10759", 'creditor_id = "x"'))

        result = run_cli("reconcile", cwd=tmp_path)

        assert result.returncode == 1
        assert "kravia-sync.toml: kravia.creditor_id" in result.stderr

    def test_an_unreadable_source_fails_the_run(self, sim: Sim, tmp_path: Path) -> None:
        """A missing folder is a failed read (exit 1), never an empty one."""
        write_config(tmp_path, sim.base_url, invoices="nowhere")

        result = run_cli("reconcile", "--json", cwd=tmp_path)

        assert result.returncode == 1
        summary = json.loads(result.stdout)
        assert summary["sources"][0]["status"] == "failed"
        assert "nowhere" in summary["sources"][0]["error"]

    def test_a_refused_token_fails_the_run(self, sim: Sim, tmp_path: Path) -> None:
        """401 from Kravia stops the pass (exit 1) instead of quarantining every invoice."""
        write_invoices(tmp_path / "invoices", range(1, 4))
        write_config(tmp_path, sim.base_url)

        wrong = cli_env(KRAVIA_TOKEN="wrong-token-123")  # noqa: S106 - wrong on purpose

        result = run_cli("reconcile", "--json", cwd=tmp_path, env=wrong)

        assert result.returncode == 1
        assert "refused the token" in json.loads(result.stdout)["error"]
        assert "wrong-token-123" not in result.stdout + result.stderr


class TestLease:
    def test_a_second_reconcile_is_refused_naming_the_holder(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """While one pass runs, another exits 1 and says which process holds the lease."""
        write_invoices(tmp_path / "invoices", range(1, 9), pdf_every=0)
        config = write_config(tmp_path, sim.base_url, kravia="")
        config.write_text(config.read_text().replace("max_in_flight = 8", "max_in_flight = 1"))
        sim.simulator.faults = Faults(latency_ms=400)
        first = subprocess.Popen(
            cli_command("reconcile"),
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            state = load(config).state_path
            deadline = time.monotonic() + 30
            lease = None
            while lease is None and time.monotonic() < deadline:
                time.sleep(0.1)
                if state.exists():
                    store = StateStore(state)
                    lease = store.current_lease()
                    store.close()
            assert lease is not None, "the first run never took the lease"

            second = run_cli("reconcile", cwd=tmp_path)

            assert second.returncode == 1
            assert f"pid {first.pid} on" in second.stderr
            assert "unlock --force" in second.stderr
        finally:
            first.communicate(timeout=60)
        assert first.returncode == 0
        assert len(sim.cases()) == 8


class TestSecrets:
    def test_the_token_appears_in_no_output_log_or_state(self, sim: Sim, tmp_path: Path) -> None:
        """With faults making every code path log, the token is nowhere to be read."""
        write_invoices(tmp_path / "invoices", range(1, 21))
        write_config(tmp_path, sim.base_url)
        sim.simulator.faults = Faults(
            error_5xx=0.3, rate_limit_429=0.05, drop_after_commit=0.1, seed=3
        )
        outputs = []
        for args in (
            ("check",),
            ("plan",),
            ("reconcile",),
            ("reconcile", "--json"),
            ("status",),
            ("cases", "1"),
        ):
            result = run_cli(*args, cwd=tmp_path, env=cli_env(KRAVIA_SYNC_LOG__LEVEL="debug"))
            outputs.append(result.stdout + result.stderr)

        text = "\n".join(outputs)
        assert "call failed" in text or "lookup" in text, "the faults produced no log lines"
        assert TOKEN not in text
        state = tmp_path / "state"
        for path in state.iterdir():
            assert TOKEN.encode() not in path.read_bytes(), path.name

    def test_check_accepts_the_token_and_refuses_a_wrong_one(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """`check` validates the file, the source and tries the token against Kravia."""
        write_invoices(tmp_path / "invoices", range(1, 2))
        write_config(tmp_path, sim.base_url)

        good = run_cli("check", cwd=tmp_path)
        wrong = cli_env(KRAVIA_TOKEN="nope-nope-nope")  # noqa: S106 - wrong on purpose
        bad = run_cli("check", cwd=tmp_path, env=wrong)

        assert good.returncode == 0, good.stdout + good.stderr
        assert "accepts the token" in good.stdout
        assert bad.returncode == 1
        assert "refused the token" in bad.stderr
        assert "nope-nope-nope" not in bad.stdout + bad.stderr


class TestInit:
    def test_init_writes_a_config_that_check_accepts_up_to_the_token(self, tmp_path: Path) -> None:
        """The example configuration is valid as written."""
        result = run_cli("init", cwd=tmp_path)
        (tmp_path / "invoices").mkdir()

        checked = run_cli("check", cwd=tmp_path, env=cli_env(KRAVIA_TOKEN=""))

        assert result.returncode == 0
        assert (tmp_path / "kravia-sync.toml").exists()
        assert "ok" in checked.stdout
        assert "source invoices (folder)" in checked.stdout
        assert "no Kravia token" in checked.stderr

    def test_demo_runs_twice_and_the_second_pass_has_nothing_to_do(self, tmp_path: Path) -> None:
        """The newcomer's command: a pass into the bundled simulator, then nothing to do."""
        first = run_cli("demo", cwd=tmp_path, env=cli_env(KRAVIA_TOKEN=""))
        second = run_cli("demo", cwd=tmp_path, env=cli_env(KRAVIA_TOKEN=""))

        assert first.returncode == 0, first.stdout + first.stderr
        assert "collection started" in first.stdout
        assert second.returncode == 0, second.stdout + second.stderr
        assert "Nothing to do" in second.stdout
