"""`kravia-sync resolve`: a person settles what the engine parked, journaled with a reason,
carried out by the next pass."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from support import Sim, load, run_cli, run_pass, write_config, write_invoices

from kravia_sync.lifecycle import Phase
from kravia_sync.payments import PaymentPhase
from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import Faults


def park(config: Path, aid: str, **changes: object) -> None:
    """Put a stored case into a parked phase, as the engine would."""
    with StateStore(load(config).state_path) as store:
        (case,) = store.find_cases(aid)
        store.write_batch([replace(case, **changes)], [])  # type: ignore[arg-type]


class TestResolveCases:
    def test_a_rejected_case_resolved_as_new_is_registered_by_the_next_pass(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Kravia refused the register (a 400); once the cause is fixed in Kravia, `resolve
        --as new` sends it again at the next pass; the journal keeps who and why."""
        write_invoices(tmp_path / "invoices", [1], pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        park(config, "1", phase=Phase.REJECTED, kravia_id=None, last_error="400: creditor closed")
        sim.simulator.reset()

        resolved = run_cli(
            "resolve", "1", "--as", "new", "--reason", "creditor reopened", cwd=tmp_path
        )
        run_pass(config)

        assert resolved.returncode == 0, resolved.stderr
        assert "registered by the next pass" in resolved.stdout
        (case,) = sim.cases()
        assert case["started"]
        with StateStore(load(config).state_path) as store:
            entries = [e for e in store.journal_for("1") if e["operation"] == "resolve"]
        assert len(entries) == 1
        assert "creditor reopened" in entries[0]["message"]
        assert entries[0]["kind"] == "operator"

    def test_resolving_as_new_a_case_that_is_in_kravia_is_refused(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A parked case Kravia already has cannot be sent again (a second case): refused,
        naming the way to continue it."""
        write_invoices(tmp_path / "invoices", [2], pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        park(config, "2", phase=Phase.NEEDS_REVIEW, last_error="upload refused")

        refused = run_cli("resolve", "2", "--as", "new", "--reason", "x", cwd=tmp_path)

        assert refused.returncode == 1
        assert "second case" in refused.stderr
        assert "--as kravia:" in refused.stderr

    def test_only_parked_cases_and_real_decisions_are_taken(self, sim: Sim, tmp_path: Path) -> None:
        """A started case, an unknown decision or a missing reason are refused with why."""
        write_invoices(tmp_path / "invoices", [3], pdf_every=0)
        write_config(tmp_path, sim.base_url)
        run_cli("reconcile", cwd=tmp_path)

        started = run_cli("resolve", "3", "--as", "new", "--reason", "x", cwd=tmp_path)
        garbage = run_cli("resolve", "3", "--as", "maybe", "--reason", "x", cwd=tmp_path)
        no_reason = run_cli("resolve", "3", "--as", "new", cwd=tmp_path)

        assert started.returncode == 1
        assert "only rejected or needs_review" in started.stderr
        assert garbage.returncode == 1
        assert "--as new or --as kravia:<id>" in garbage.stderr
        assert no_reason.returncode == 1
        assert "reason" in no_reason.stderr


class TestResolvePayments:
    def test_a_payment_that_needs_review_is_settled_as_sent_or_sent_again(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A payment whose arrival could not be told: `--as sent` closes it with nothing
        sent; `--as new` has the next pass send it, once."""
        write_invoices(tmp_path / "invoices", [4, 5], pdf_every=0)
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        lines = ["payment_id;date;amount;invoice_number", "P-4;2026-11-20;10.00;4"]
        lines.append("P-5;2026-11-20;20.00;5")
        (tmp_path / "invoices" / "payments.csv").write_text("\n".join(lines) + "\n")
        sim.simulator.faults = Faults(rate_limit_429=1.0, operations=("payment",))
        run_pass(config)  # not sent: Kravia is busy
        sim.simulator.faults = Faults()
        received = len(sim.simulator.payments())
        with StateStore(load(config).state_path) as store:
            for payment in store.all_payments():
                store.write_payments([replace(payment, phase=PaymentPhase.NEEDS_REVIEW)])

        as_sent = run_cli(
            "resolve", "--payment", "P-4", "--as", "sent", "--reason", "seen", cwd=tmp_path
        )
        as_new = run_cli(
            "resolve", "--payment", "P-5", "--as", "new", "--reason", "absent", cwd=tmp_path
        )
        run_pass(config)

        assert as_sent.returncode == 0, as_sent.stderr
        assert as_new.returncode == 0, as_new.stderr
        ids = [p["accountingPaymentId"] for p in sim.simulator.payments()[received:]]
        assert ids == ["P-5"]
        with StateStore(load(config).state_path) as store:
            phases = {p.payment_id: p.phase for p in store.all_payments()}
        assert phases == {"P-4": PaymentPhase.SENT, "P-5": PaymentPhase.SENT}
