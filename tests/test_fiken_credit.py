"""What a Fiken invoice owes after its credit notes, and the credit notes' payment records
(`connectors.fiken_credit` and the connector's read): either way Fiken may count a credit note
in `outstandingBalance`, the amount is what is owed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.fiken import FikenConnector
from connectors.fiken_credit import (
    CreditNote,
    InvoiceFigures,
    credit_note_record,
    owed_after_credits,
    parse_credit_note,
)
from kravia_sync.connector import ConnectorError, PaymentRecord, RecordError, SourceRecord
from kravia_sync.testing.fiken import FikenCompany, FikenSimulator, RunningFiken, demo_company

TOKEN = "fiken-credit-token-2b9"
SLUG = "kreditt-as"
ON = date(2026, 11, 2)


def note(
    credit_note_id: int, gross: int, invoice: int | None = 1, currency: str = "NOK"
) -> CreditNote:
    return CreditNote(credit_note_id, 90_000 + credit_note_id, invoice, gross, currency, ON)


def owed(figures: InvoiceFigures, *notes: CreditNote) -> int | str:
    by_id = {n.credit_note_id: n for n in notes}
    return owed_after_credits(figures, by_id, [n for n in notes if n.invoice_id == 1])


class TestOwed:
    def test_without_credit_notes_the_balance_is_what_is_owed(self) -> None:
        assert owed(InvoiceFigures(1, 70_000, None, None)) == 70_000

    def test_a_balance_that_already_counts_the_credit_note_is_taken(self) -> None:
        """gross 1000 = 400 outstanding + 300 paid + 300 credited: the balance leaves it out."""
        assert owed(InvoiceFigures(1, 40_000, 30_000, 100_000), note(7, 30_000)) == 40_000

    def test_a_balance_that_does_not_count_it_has_it_taken_off(self) -> None:
        """gross 1000 = 700 outstanding + 300 paid: the 300 credited still comes off."""
        assert owed(InvoiceFigures(1, 70_000, 30_000, 100_000), note(7, 30_000)) == 40_000

    def test_credited_in_full_either_way_nothing_is_owed(self) -> None:
        assert owed(InvoiceFigures(1, 0, 0, 100_000, (7,)), note(7, 100_000)) == 0
        assert owed(InvoiceFigures(1, 100_000, 0, 100_000, (7,)), note(7, 100_000)) == 0

    def test_a_credit_note_named_only_by_the_invoice_counts(self) -> None:
        """associatedCreditNotes is enough: the credit note need not name the invoice."""
        figures = InvoiceFigures(1, 100_000, 0, 100_000, (7,))
        assert owed(figures, note(7, 25_000, invoice=None)) == 75_000

    def test_figures_that_add_up_neither_way_are_not_guessed(self) -> None:
        reason = owed(InvoiceFigures(1, 50_000, 30_000, 100_000), note(7, 30_000))
        assert isinstance(reason, str)
        assert "do not add up" in reason

    def test_a_named_credit_note_missing_from_the_list_is_not_guessed(self) -> None:
        reason = owed(InvoiceFigures(1, 70_000, 0, 100_000, (8,)))
        assert isinstance(reason, str)
        assert "credit note 8" in reason

    def test_a_credit_note_in_another_currency_is_not_guessed(self) -> None:
        reason = owed(InvoiceFigures(1, 70_000, 0, 100_000), note(7, 30_000, currency="EUR"))
        assert isinstance(reason, str)
        assert "not in NOK" in reason


class TestParse:
    def test_a_credit_note_result_is_read(self) -> None:
        raw = {
            "creditNoteId": 7,
            "creditNoteNumber": 90_007,
            "associatedInvoiceId": 1,
            "gross": 30_000,
            "currency": "NOK",
            "issueDate": "2026-11-02",
            "creditNoteText": "Feil pris",
        }
        parsed = parse_credit_note(raw, "credit note 1")
        assert parsed == CreditNote(7, 90_007, 1, 30_000, "NOK", ON, "Feil pris")

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"creditNoteId": "7"}, "creditNoteId"),
            ({"gross": 300.5}, "gross"),
            ({"issueDate": "02.11.2026"}, "issueDate"),
            ({"associatedInvoiceId": "x"}, "associatedInvoiceId"),
        ],
    )
    def test_a_bad_field_is_named(self, change: dict[str, object], field: str) -> None:
        raw = {"creditNoteId": 7, "gross": 30_000, "issueDate": "2026-11-02", **change}
        parsed = parse_credit_note(raw, "credit note 1")
        assert isinstance(parsed, RecordError)
        assert parsed.field == field

    def test_the_record_carries_the_credit_note_id_and_kroner(self) -> None:
        record = credit_note_record(note(7, 30_050))
        assert record.fields["payment_id"] == "7"
        assert record.fields["kind"] == "credit_note"
        assert record.fields["amount"] == Decimal("300.50")
        assert record.fields["accounting_invoice_id"] == "1"
        assert record.fields["date"] == ON


@pytest.fixture
def company() -> FikenCompany:
    data = demo_company(invoices=10, customers=2, slug=SLUG, pdf_every=0)
    data.credit(data.invoices[3]["invoiceId"], 10_000, on=date(2020, 1, 1))
    data.credit(data.invoices[4]["invoiceId"], 20_000, on=ON)
    return data


@pytest.fixture
def fiken(company: FikenCompany, monkeypatch: pytest.MonkeyPatch) -> Iterator[FikenSimulator]:
    monkeypatch.setenv("FIKEN_TOKEN", TOKEN)
    simulator = FikenSimulator(company, token=TOKEN, requests_per_second=500, burst=50)
    with RunningFiken(simulator):
        yield simulator


def read(fiken: FikenSimulator, tmp_path: Path, **settings: object) -> list[object]:
    connector = FikenConnector.from_settings(
        {
            "company_slug": SLUG,
            "credit_notes_since": "2000-01-01",
            "token_env": "FIKEN_TOKEN",
            "base_url": fiken.base_url,
            "requests_per_second": 500,
            **settings,
        },
        base_dir=tmp_path,
    )
    return list(connector.read())


class TestTheRead:
    def test_credit_notes_come_after_the_invoices_as_records(
        self, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        items = read(fiken, tmp_path)
        kinds = [type(item).__name__ for item in items]
        assert kinds.index("PaymentRecord") > max(
            i for i, kind in enumerate(kinds) if kind == "SourceRecord"
        )
        records = [i for i in items if isinstance(i, PaymentRecord)]
        assert sorted(r.fields["payment_id"] for r in records) == sorted(
            str(n["creditNoteId"]) for n in company.credit_notes
        )

    def test_credit_notes_before_the_cut_off_count_but_are_not_sent(
        self, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        items = read(fiken, tmp_path, credit_notes_since="2026-01-01")
        records = [i for i in items if isinstance(i, PaymentRecord)]
        assert [r.fields["payment_id"] for r in records] == [
            str(company.credit_notes[1]["creditNoteId"])
        ]
        old = str(company.invoices[3]["invoiceId"])
        (invoice,) = [
            i
            for i in items
            if isinstance(i, SourceRecord) and i.fields["accounting_invoice_id"] == old
        ]
        assert invoice.fields["amount"] == Decimal(company.owed(company.invoices[3])) / 100

    @pytest.mark.parametrize("lowers", [True, False])
    def test_the_amount_is_what_is_owed_either_way(
        self, company: FikenCompany, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lowers: bool
    ) -> None:
        company.credit_reduces_balance = lowers
        company.credit(company.invoices[5]["invoiceId"], 40_000, on=ON)
        with_credit = company.invoices[5]
        monkeypatch.setenv("FIKEN_TOKEN", TOKEN)
        simulator = FikenSimulator(company, token=TOKEN, requests_per_second=500, burst=50)
        with RunningFiken(simulator):
            items = read(simulator, tmp_path)
        amounts = {
            i.fields["accounting_invoice_id"]: i.fields["amount"]
            for i in items
            if isinstance(i, SourceRecord)
        }
        expected = Decimal(with_credit["gross"] - with_credit["gross"] // 3 - 40_000) / 100
        assert amounts[str(with_credit["invoiceId"])] == expected

    def test_without_credit_notes_nothing_more_is_read(
        self, fiken: FikenSimulator, tmp_path: Path
    ) -> None:
        items = read(fiken, tmp_path, credit_notes=False)
        assert not any(isinstance(i, PaymentRecord) for i in items)
        assert "credit_notes" not in fiken.calls()

    def test_a_credit_note_made_during_the_read_fails_it(
        self, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """The invoices read may or may not count it: nothing of the read is taken."""
        connector = FikenConnector.from_settings(
            {
                "company_slug": SLUG,
                "credit_notes_since": "2000-01-01",
                "token_env": "FIKEN_TOKEN",
                "base_url": fiken.base_url,
                "requests_per_second": 500,
                "page_size": 2,
            },
            base_dir=tmp_path,
        )
        items = connector.read()
        next(items)  # the credit notes are read, the invoices under way
        made = fiken.credit(company.invoices[8]["invoiceId"], 5_000)

        with pytest.raises(ConnectorError, match=f"credit note {made['creditNoteId']}"):
            list(items)
        again = [i for i in read(fiken, tmp_path) if isinstance(i, PaymentRecord)]
        assert str(made["creditNoteId"]) in {r.fields["payment_id"] for r in again}
