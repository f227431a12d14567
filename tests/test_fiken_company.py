"""A whole Fiken company end to end, over real HTTP: the Fiken simulator into the Kravia one.

The company has an invoice of every kind a creditor's books hold: settled, not yet due, too
young for collection, overdue, partly paid, credited in full and in part, written off and
deleted, for business and private customers. Exactly the right ones reach Kravia, once each;
then credit notes and payments made afterwards reach it once each, as what they are.

Fiken does not document whether a credit note lowers its invoice's `outstandingBalance`: every
test runs under both answers (the simulator's `credit_reduces_balance`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support import Sim, run_pass, write_config

from kravia_sync.state.store import StateStore
from kravia_sync.testing.fiken import FikenCompany, FikenSimulator, RunningFiken, demo_company
from kravia_sync.testing.simulator import Faults

FIKEN_TOKEN = "fiken-pat-company-7Tq2"
SLUG = "bokholderiet-as"
FAST = 200.0
# demo_company's kinds by index % 10: 0 settled, 1 not due, 2 five days overdue (too young),
# 3 to 9 overdue, 5 (and 15) a third paid. Below: 3 credited in full and 4 in part before the first
# pass, 6 written off, 7 deleted.
FULLY_CREDITED, PARTLY_CREDITED, PARTLY_PAID, WRITTEN_OFF, DELETED = 3, 4, 5, 6, 7
PART_CREDIT = 10_000  # øre
REGISTERED = [4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19]


@pytest.fixture(autouse=True)
def fiken_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIKEN_TOKEN", FIKEN_TOKEN)


@pytest.fixture(params=[True, False], ids=["credit-lowers-balance", "credit-only-listed"])
def company(request: pytest.FixtureRequest) -> FikenCompany:
    today = datetime.now(ZoneInfo("Europe/Oslo")).date()
    data = demo_company(invoices=20, customers=4, slug=SLUG, pdf_every=0, today=today)
    data.credit_reduces_balance = bool(request.param)
    data.credit(data.invoices[FULLY_CREDITED]["invoiceId"], on=today - timedelta(days=3))
    data.credit(
        data.invoices[PARTLY_CREDITED]["invoiceId"], PART_CREDIT, on=today - timedelta(days=3)
    )
    data.invoices[WRITTEN_OFF]["sale"]["writeOff"] = True
    data.invoices[DELETED]["sale"]["deleted"] = True
    return data


@pytest.fixture
def fiken(company: FikenCompany) -> Iterator[FikenSimulator]:
    simulator = FikenSimulator(company, token=FIKEN_TOKEN, requests_per_second=FAST, burst=20)
    with RunningFiken(simulator):
        yield simulator


def config_for(tmp_path: Path, sim: Sim, fiken: FikenSimulator) -> Path:
    config = write_config(tmp_path, sim.base_url)
    head = config.read_text(encoding="utf-8").split("[[sources]]")[0]
    config.write_text(
        head
        + f"""
[[sources]]
name = "fiken"
connector = "fiken"
[sources.settings]
company_slug = "{SLUG}"
credit_notes_since = 2000-01-01
token_env = "FIKEN_TOKEN"
base_url = "{fiken.base_url}"
page_size = 7
requests_per_second = {FAST}
""",
        encoding="utf-8",
    )
    return config


def cases_by_id(sim: Sim) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for case in sim.cases():
        aid = str(case["body"]["accountingInvoiceId"])
        assert aid not in found, f"two Kravia cases for invoice {aid}"
        found[aid] = case
    return found


def money(sim: Sim) -> list[dict[str, Any]]:
    """Payments and credit notes Kravia accepted, in order."""
    return [p for p in sim.simulator.payments() if p["accountingPaymentId"] is not None]


def kroner(ore: int) -> Decimal:
    return Decimal(ore) / 100


def payment_phases(tmp_path: Path) -> dict[str, str]:
    with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
        return {p.payment_id: p.phase.value for p in store.all_payments()}


class TestTheCompanyIntoKravia:
    def test_exactly_the_collectable_invoices_are_registered_once_at_what_is_owed(
        self, sim: Sim, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """Overdue, partly paid and partly credited invoices are registered at what is still
        owed; settled, not-yet-due, too-young, fully credited, written-off and deleted ones
        never; businesses with their organisation number, private people as private; a
        second pass calls Kravia not once."""
        config = config_for(tmp_path, sim, fiken)

        first = run_pass(config)

        assert first.status == "done", first.as_dict()
        cases = cases_by_id(sim)
        invoices = company.invoices
        assert sorted(cases) == sorted(str(invoices[i]["invoiceId"]) for i in REGISTERED)
        for index in REGISTERED:
            invoice = invoices[index]
            owed = invoice["gross"]
            if index == PARTLY_CREDITED:
                owed -= PART_CREDIT
            if index % 10 == PARTLY_PAID:
                owed -= invoice["gross"] // 3
            body = cases[str(invoice["invoiceId"])]["body"]
            assert Decimal(str(body["originalAmount"])) == kroner(owed), index
            contact = company.contacts[invoice["customer"]["contactId"]]
            private = str(body["isPrivateIndividual"]).lower() == "true"
            if contact["organizationNumber"]:
                assert not private
                assert body["organizationNumber"] == contact["organizationNumber"]
            else:
                assert private
                assert not body.get("organizationNumber")
        assert {
            bool(company.contacts[i["customer"]["contactId"]]["organizationNumber"])
            for i in (invoices[n] for n in REGISTERED)
        } == {True, False}
        assert money(sim) == []  # the credit note made before registration is netted
        assert set(payment_phases(tmp_path).values()) <= {"new", "netted"}
        calls = sim.calls_total()

        second = run_pass(config)

        assert second.status == "done", second.as_dict()
        assert sim.calls_total() == calls
        assert len(sim.cases()) == len(REGISTERED)


class TestMoneyAfterRegistration:
    def test_a_credit_note_reaches_kravia_once_as_a_credit_note(
        self, sim: Sim, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """A partial credit note made after registration is sent once, as a credit note with
        Fiken's creditNoteId; the drop it causes in what is owed is not sent again as a
        payment; a full credit note closes the case's capital; later passes send nothing."""
        config = config_for(tmp_path, sim, fiken)
        run_pass(config)
        partly, fully = company.invoices[9], company.invoices[14]
        before = {aid: Decimal(str(c["remainingAmount"])) for aid, c in cases_by_id(sim).items()}

        partial = fiken.credit(partly["invoiceId"], 30_000)
        full = fiken.credit(fully["invoiceId"])
        third = run_pass(config)

        assert third.status in {"done", "attention"}, third.as_dict()
        sent = money(sim)
        assert sorted((p["type"], p["accountingPaymentId"]) for p in sent) == sorted(
            [
                ("CreditNote", str(partial["creditNoteId"])),
                ("CreditNote", str(full["creditNoteId"])),
            ]
        )
        by_note = {p["accountingPaymentId"]: p for p in sent}
        assert abs(Decimal(str(by_note[str(partial["creditNoteId"])]["amount"]))) == Decimal(300)
        after = cases_by_id(sim)
        partly_id, fully_id = str(partly["invoiceId"]), str(fully["invoiceId"])
        assert Decimal(str(after[partly_id]["remainingAmount"])) == before[partly_id] - 300
        assert Decimal(str(after[fully_id]["remainingAmount"])) == 0
        phases = payment_phases(tmp_path)
        assert phases[str(partial["creditNoteId"])] == "sent"
        assert phases[str(full["creditNoteId"])] == "sent"
        assert all(phase == "netted" for pid, phase in phases.items() if pid.startswith("ks-drop-"))

        run_pass(config)
        run_pass(config)

        assert money(sim) == sent

    def test_a_payment_reaches_kravia_once_as_a_payment(
        self, sim: Sim, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """A payment after registration is sent once as a payment; a payment and a credit note
        on one invoice in the same pass are sent once each, for their own amounts."""
        config = config_for(tmp_path, sim, fiken)
        run_pass(config)
        paid, both = company.invoices[13], company.invoices[16]
        before = {aid: Decimal(str(c["remainingAmount"])) for aid, c in cases_by_id(sim).items()}

        fiken.pay(paid["invoiceId"], 20_000)
        fiken.pay(both["invoiceId"], 25_000)
        note = fiken.credit(both["invoiceId"], 15_000)
        run_pass(config)

        sent = money(sim)
        payments = [p for p in sent if p["type"] == "Payment"]
        notes = [p for p in sent if p["type"] == "CreditNote"]
        assert sorted(Decimal(str(p["amount"])) for p in payments) == [Decimal(200), Decimal(250)]
        assert [(p["accountingPaymentId"], abs(Decimal(str(p["amount"])))) for p in notes] == [
            (str(note["creditNoteId"]), Decimal(150))
        ]
        after = cases_by_id(sim)
        paid_id, both_id = str(paid["invoiceId"]), str(both["invoiceId"])
        assert Decimal(str(after[paid_id]["remainingAmount"])) == before[paid_id] - 200
        assert Decimal(str(after[both_id]["remainingAmount"])) == before[both_id] - 400

        run_pass(config)

        assert money(sim) == sent

    def test_a_drop_waits_while_its_credit_note_cannot_be_sent(
        self, sim: Sim, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """While Kravia fails the credit note, the drop in what is owed that the credit note
        caused is not sent as a payment in its place; once the credit note is through, the
        drop is netted: the money reaches Kravia once, as a credit note."""
        config = config_for(tmp_path, sim, fiken)
        run_pass(config)
        invoice = company.invoices[17]
        aid = str(invoice["invoiceId"])
        before = Decimal(str(cases_by_id(sim)[aid]["remainingAmount"]))
        note = fiken.credit(invoice["invoiceId"], 30_000)
        # Refused outright (429: nothing applied), so the credit note stays to be sent.
        sim.simulator.faults = Faults(rate_limit_429=1.0, operations=("creditnote",))

        failing = run_pass(config)

        assert money(sim) == []
        assert failing.counts["payments_waiting_for_credit_note"] == 1
        sim.simulator.faults = Faults()
        for _ in range(20):  # until the credit note's back-off (Kravia's Retry-After) is over
            if money(sim):
                break
            assert payment_phases(tmp_path)[str(note["creditNoteId"])] == "new"
            time.sleep(0.5)
            run_pass(config)
        run_pass(config)  # and once more: nothing else is sent

        sent = money(sim)
        assert [(p["type"], p["accountingPaymentId"]) for p in sent] == [
            ("CreditNote", str(note["creditNoteId"]))
        ]
        assert Decimal(str(cases_by_id(sim)[aid]["remainingAmount"])) == before - 300
        phases = payment_phases(tmp_path)
        assert phases[str(note["creditNoteId"])] == "sent"
        assert [p for pid, p in phases.items() if pid.startswith("ks-drop-")] == ["netted"]
