"""End to end over real HTTP: EHF files in the folder source into the Kravia simulator."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from ehf_support import (
    BILLION_LAUGHS,
    MIB,
    ORGNR,
    XXE_TEMPLATE,
    ehf_credit_note,
    ehf_invoice,
    write,
)
from support import Sim, load, run_cli, run_pass, write_config

from kravia_sync.lifecycle import Phase
from kravia_sync.state.store import StateStore
from kravia_sync.testing import minimal_pdf


def _case_row(config: Path, aid: str) -> dict[str, object]:
    store = StateStore(load(config).state_path)
    try:
        (case,) = store.find_cases(aid)
        return {"phase": case.phase, "changed_at": case.changed_at}
    finally:
        store.close()


class TestEhfIntoKravia:
    def test_embedded_pdf_is_uploaded_byte_for_byte(self, sim: Sim, tmp_path: Path) -> None:
        """An EHF invoice with an embedded PDF ends as one started case carrying exactly it."""
        pdf = minimal_pdf("Faktura 10001 Fjordlys Eiendom AS")
        write(tmp_path / "invoices", "10001.xml", ehf_invoice("10001", pdf=pdf))
        config = write_config(tmp_path, sim.base_url)

        summary = run_pass(config)

        assert summary.status == "done", summary.as_dict()
        (case,) = sim.cases()
        assert case["started"]
        assert case["accountingInvoiceId"] == "10001"
        (document,) = case["documents"]
        assert document["fileName"] == "faktura.pdf"
        assert sim.simulator.document_bytes(case["id"], 0) == pdf
        body = case["body"]
        assert body["invoiceNo"] == "10001"
        assert Decimal(str(body["originalAmount"])) == Decimal("12500.00")
        assert body["currencyCode"] == "NOK"
        assert body["organizationNumber"] == ORGNR
        assert body["isPrivateIndividual"] == "false"
        assert body["debtorName"] == "Fjordlys Eiendom AS"
        assert body["debtorNumber"] == "K-1001"
        assert body["email"] == "faktura@fjordlys.example"
        assert body["postalAddress"]["addressPostalCode"] == "5013"
        assert body["postalAddress"]["addressCity"] == "Bergen"
        assert _case_row(config, "10001")["phase"] is Phase.STARTED

    def test_credit_note_before_registration_lowers_what_is_registered(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Invoice and credit note in the folder: Kravia gets the amount left, once."""
        folder = tmp_path / "invoices"
        write(folder, "10001.xml", ehf_invoice("10001", amount="12500.00"))
        write(folder, "K-1.xml", ehf_credit_note("K-1", "10001", amount="2500.00"))
        config = write_config(tmp_path, sim.base_url)

        summary = run_pass(config)

        assert summary.status == "done", summary.as_dict()
        (case,) = sim.cases()
        assert Decimal(str(case["body"]["originalAmount"])) == Decimal("10000.00")
        assert case["body"]["description"] == (
            "12500.00 NOK less credit note K-1 (2500.00) = 10000.00 NOK"
        )

    def test_credit_note_after_registration_is_forwarded_once(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A credit note for an invoice already in Kravia goes to Kravia as a credit note,
        under its own number, exactly once; the lower amount in the source is recorded as a
        change, not registered again; plan says what a pass would do first."""
        folder = tmp_path / "invoices"
        write(folder, "10001.xml", ehf_invoice("10001", amount="12500.00", pdf=minimal_pdf()))
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        assert _case_row(config, "10001")["changed_at"] is None

        write(folder, "K-1.xml", ehf_credit_note("K-1", "10001", amount="2500.00"))
        plan_json = run_cli("plan", "--json", cwd=tmp_path)
        summary = run_pass(config)

        assert json.loads(plan_json.stdout)["counts"]["changed"] == 1
        assert json.loads(plan_json.stdout)["counts"]["payments_to_forward"] == 1
        assert summary.counts["changed"] == 1
        assert summary.counts["payments_sent"] == 1
        assert summary.problems == []
        (sent,) = [p for p in sim.simulator.payments() if p["accountingPaymentId"]]
        assert (sent["type"], sent["accountingPaymentId"]) == ("CreditNote", "K-1")
        (case,) = sim.cases()
        assert Decimal(str(case["originalAmount"])) == Decimal("12500.00")
        assert Decimal(str(case["remainingAmount"])) == Decimal("10000.00")
        row = _case_row(config, "10001")
        assert row["phase"] is Phase.STARTED
        assert row["changed_at"] is not None

        calls_before = sim.calls_total()
        again = run_pass(config)  # forwarded once: the next pass sees nothing new
        assert again.counts.get("changed", 0) == 0
        assert again.counts["unchanged"] == 1
        assert sim.calls_total() == calls_before

    def test_full_credit_after_registration_closes_the_case(self, sim: Sim, tmp_path: Path) -> None:
        """Credited in full after it was sent: the credit note goes to Kravia (which closes
        the case), and the invoice, with nothing left to collect, is quarantined."""
        folder = tmp_path / "invoices"
        write(folder, "10001.xml", ehf_invoice("10001", amount="12500.00"))
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)

        write(folder, "K-1.xml", ehf_credit_note("K-1", "10001", amount="12500.00"))
        summary = run_pass(config)

        assert summary.status == "attention"
        (problem,) = summary.problems
        assert problem["record"] == "10001.xml:10001"
        assert problem["reason"].startswith("credited in full, nothing to collect")
        (case,) = sim.cases()
        assert Decimal(str(case["remainingAmount"])) == 0
        assert case["status"] == "Closed"
        assert _case_row(config, "10001")["phase"] is Phase.STARTED

    def test_hostile_files_are_quarantined_and_valid_ones_registered(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """XXE, billion laughs, 50 MB, not UBL, no due date: each quarantined with its reason;
        the valid EHF invoices beside them become cases."""
        secret = tmp_path / "secret.txt"
        secret.write_text("TOP-SECRET-PASSWORD", encoding="utf-8")
        folder = tmp_path / "invoices"
        write(folder, "1.xml", ehf_invoice("1", pdf=minimal_pdf("one")))
        write(folder, "2-xxe.xml", XXE_TEMPLATE.format(path=secret).encode())
        write(folder, "3-laughs.xml", BILLION_LAUGHS.encode())
        with (folder / "4-big.xml").open("wb") as handle:
            handle.write(ehf_invoice("4")[: -len(b"</Invoice>\n")])
            handle.write(b"<!--" + b"x" * (50 * MIB) + b"-->\n</Invoice>\n")
        write(folder, "5-other.xml", b'<?xml version="1.0"?><order><id>5</id></order>')
        write(folder, "6-no-due.xml", ehf_invoice("6", due_date=""))
        write(folder, "7.xml", ehf_invoice("7"))
        config = write_config(tmp_path, sim.base_url)

        summary = run_pass(config)

        assert sorted(case["accountingInvoiceId"] for case in sim.cases()) == ["1", "7"]
        assert all(case["started"] for case in sim.cases())
        reasons = {p["record"]: (p["field"], p["reason"]) for p in summary.problems}
        assert sorted(reasons) == [
            "2-xxe.xml",
            "3-laughs.xml",
            "4-big.xml",
            "5-other.xml",
            "6-no-due.xml",
        ]
        assert "document type declaration" in reasons["2-xxe.xml"][1]
        assert "document type declaration" in reasons["3-laughs.xml"][1]
        assert "more than max_file_bytes" in reasons["4-big.xml"][1]
        assert "not a UBL 2.1 Invoice or CreditNote" in reasons["5-other.xml"][1]
        assert reasons["6-no-due.xml"][0] == "due_date"
        assert "TOP-SECRET" not in json.dumps(summary.as_dict())
        status = run_cli("status", cwd=tmp_path)
        assert "6-no-due.xml" in status.stdout
        assert "TOP-SECRET" not in status.stdout
