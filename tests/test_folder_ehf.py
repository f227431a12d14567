"""The folder connector with EHF files: records, copies, credit notes, hostile files."""

from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ehf_support import BILLION_LAUGHS, MIB, XXE_TEMPLATE, ehf_credit_note, ehf_invoice, write

from connectors import ubl as ubl_module
from connectors.folder import EmbeddedPdfDocument, FolderConnector
from kravia_sync.connector import PaymentRecord, RecordError, SourceRecord
from kravia_sync.documents import FileDocument
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import Invoice
from kravia_sync.testing import minimal_pdf

PEPPOL = Path(__file__).parent / "data" / "peppol"


def read_everything(
    folder: Path, **settings: Any
) -> list[SourceRecord | PaymentRecord | RecordError]:
    made = FolderConnector.from_settings({"path": str(folder), **settings}, base_dir=folder.parent)
    return list(made.read())


def read_all(folder: Path, **settings: Any) -> list[SourceRecord | RecordError]:
    """The invoices and errors of a read (the credit notes' payment records left out)."""
    return [
        item for item in read_everything(folder, **settings) if not isinstance(item, PaymentRecord)
    ]


def by_key(items: list[SourceRecord | RecordError]) -> dict[str, SourceRecord | RecordError]:
    result = {item.key: item for item in items}
    assert len(result) == len(items), "record keys must be unique"
    return result


def record(items: list[SourceRecord | RecordError], key: str) -> SourceRecord:
    item = by_key(items)[key]
    assert isinstance(item, SourceRecord), item
    return item


def error(items: list[SourceRecord | RecordError], key: str) -> RecordError:
    item = by_key(items)[key]
    assert isinstance(item, RecordError), item
    return item


class TestEhfRecords:
    def test_invoice_file_becomes_a_record(self, tmp_path: Path) -> None:
        """An EHF invoice is one record keyed `<file>:<invoice number>` that validates."""
        write(tmp_path, "10001.xml", ehf_invoice("10001"))
        item = record(read_all(tmp_path), "10001.xml:10001")
        assert item.document is None
        assert Invoice.from_record(item.fields).amount == Decimal("12500.00")

    def test_xml_suffix_in_any_case(self, tmp_path: Path) -> None:
        """`.XML` is read like `.xml`."""
        write(tmp_path, "A.XML", ehf_invoice("1"))
        assert [item.key for item in read_all(tmp_path)] == ["A.XML:1"]

    def test_ehf_records_come_after_json_and_csv(self, tmp_path: Path) -> None:
        """EHF records are yielded once the walk is done (credits must be known first)."""
        write(tmp_path, "a.xml", ehf_invoice("1"))
        (tmp_path / "b.json").write_text(
            '{"invoice_number": "2", "invoice_date": "2025-01-01", "due_date": "2025-01-31",'
            ' "amount": "10", "debtor_name": "X", "address_line1": "Y", "postal_code": "0150",'
            ' "city": "Oslo"}',
            encoding="utf-8",
        )
        assert [item.key for item in read_all(tmp_path)] == ["b.json:2", "a.xml:1"]

    def test_subdirectories_when_recursive(self, tmp_path: Path) -> None:
        """With `recursive`, EHF files in subfolders are read and keyed by their path."""
        write(tmp_path / "2025", "1.xml", ehf_invoice("1"))
        assert read_all(tmp_path) == []
        assert [item.key for item in read_all(tmp_path, recursive=True)] == ["2025/1.xml:1"]

    def test_official_examples_side_by_side(self, tmp_path: Path) -> None:
        """The OpenPEPPOL examples in one folder: each becomes a record or a reasoned error."""
        for name in ("Norwegian-example-1.xml", "vat-category-E.xml"):
            shutil.copy(PEPPOL / name, tmp_path / name)
        items = read_all(tmp_path)
        assert record(items, "Norwegian-example-1.xml:TOSL108").fields["amount"] == Decimal(
            "802.00"
        )
        assert error(items, "vat-category-E.xml").field == "due_date"


class TestCopies:
    def test_embedded_pdf_is_the_copy_byte_for_byte(self, tmp_path: Path) -> None:
        """The embedded attachment is decoded to exactly the PDF that was embedded."""
        pdf = minimal_pdf("Faktura 10001")
        write(tmp_path, "10001.xml", ehf_invoice("10001", pdf=pdf))
        document = record(read_all(tmp_path), "10001.xml:10001").document
        assert isinstance(document, EmbeddedPdfDocument)
        assert document.name == "faktura.pdf"
        assert document.load() == pdf

    def test_embedded_pdf_is_decoded_only_when_loaded(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reading the folder decodes no attachment; `load()` does, from the file."""
        calls: list[int] = []
        real = ubl_module.embedded_pdf

        def counting(data: bytes, index: int) -> bytes:
            calls.append(index)
            return real(data, index)

        monkeypatch.setattr(ubl_module, "embedded_pdf", counting)
        write(tmp_path, "1.xml", ehf_invoice("1", pdf=minimal_pdf()))
        document = record(read_all(tmp_path), "1.xml:1").document
        assert calls == []
        assert document is not None
        document.load()
        assert calls == [0]

    def test_file_changed_after_the_read(self, tmp_path: Path) -> None:
        """If the attachment is gone when the copy is loaded, that is a document error."""
        path = write(tmp_path, "1.xml", ehf_invoice("1", pdf=minimal_pdf()))
        document = record(read_all(tmp_path), "1.xml:1").document
        assert document is not None
        path.write_bytes(ehf_invoice("1"))
        with pytest.raises(InvalidRecordError) as caught:
            document.load()
        assert caught.value.field == "document"
        assert "1.xml" in caught.value.reason

    def test_pdf_beside_is_used_when_nothing_is_embedded(self, tmp_path: Path) -> None:
        """`<invoice number>.pdf` beside the file is the copy, as for JSON and CSV."""
        write(tmp_path, "faktura.xml", ehf_invoice("10001"))
        (tmp_path / "10001.pdf").write_bytes(minimal_pdf())
        document = record(read_all(tmp_path), "faktura.xml:10001").document
        assert isinstance(document, FileDocument)
        assert document.name == "10001.pdf"

    def test_pdf_named_like_the_xml_file(self, tmp_path: Path) -> None:
        """`<file stem>.pdf` beside `<file stem>.xml` is paired too."""
        write(tmp_path, "ehf-2025-01.xml", ehf_invoice("10001"))
        (tmp_path / "ehf-2025-01.pdf").write_bytes(minimal_pdf())
        document = record(read_all(tmp_path), "ehf-2025-01.xml:10001").document
        assert isinstance(document, FileDocument)
        assert document.name == "ehf-2025-01.pdf"

    def test_embedded_pdf_wins_over_one_beside(self, tmp_path: Path) -> None:
        """When the EHF file embeds a PDF, a PDF beside it is not used."""
        embedded = minimal_pdf("embedded")
        write(tmp_path, "10001.xml", ehf_invoice("10001", pdf=embedded))
        (tmp_path / "10001.pdf").write_bytes(minimal_pdf("beside"))
        document = record(read_all(tmp_path), "10001.xml:10001").document
        assert document is not None
        assert document.load() == embedded


class TestCreditNotes:
    def test_credit_note_lowers_the_invoice(self, tmp_path: Path) -> None:
        """An EHF credit note beside its invoice: one record, for the amount left."""
        write(tmp_path, "10001.xml", ehf_invoice("10001", amount="12500.00"))
        write(tmp_path, "K-1.xml", ehf_credit_note("K-1", "10001", amount="2500.00"))
        items = read_all(tmp_path)
        assert [item.key for item in items] == ["10001.xml:10001"]
        fields = record(items, "10001.xml:10001").fields
        assert fields["amount"] == Decimal("10000.00")
        assert fields["description"] == (
            "12500.00 NOK less credit note K-1 (2500.00) = 10000.00 NOK"
        )

    def test_a_netted_credit_note_is_also_a_credit_note_record(self, tmp_path: Path) -> None:
        """For an invoice already in Kravia the engine forwards it; for one not yet sent it
        is netted (the amount above already leaves it out)."""
        write(tmp_path, "10001.xml", ehf_invoice("10001", amount="12500.00"))
        write(tmp_path, "K-1.xml", ehf_credit_note("K-1", "10001", amount="2500.00"))

        (credit,) = [i for i in read_everything(tmp_path) if isinstance(i, PaymentRecord)]

        assert credit.key == "K-1.xml:K-1"
        fields = dict(credit.fields)
        assert (fields["payment_id"], fields["kind"], fields["invoice_number"]) == (
            "K-1",
            "credit_note",
            "10001",
        )
        assert fields["amount"] == Decimal("2500.00")
        assert isinstance(fields["date"], date)

    def test_credit_note_read_before_its_invoice(self, tmp_path: Path) -> None:
        """File order does not matter: a credit note sorting first is still netted."""
        write(tmp_path, "a-kreditnota.xml", ehf_credit_note("K-1", "10001", amount="500.00"))
        write(tmp_path, "b-faktura.xml", ehf_invoice("10001", amount="1500.00"))
        fields = record(read_all(tmp_path), "b-faktura.xml:10001").fields
        assert fields["amount"] == Decimal("1000.00")

    def test_credit_note_in_another_subfolder(self, tmp_path: Path) -> None:
        """With `recursive`, credits and invoices meet across subfolders."""
        write(tmp_path / "fakturaer", "1.xml", ehf_invoice("1", amount="300.00"))
        write(tmp_path / "kreditnotaer", "K.xml", ehf_credit_note("K", "1", amount="100.00"))
        fields = record(read_all(tmp_path, recursive=True), "fakturaer/1.xml:1").fields
        assert fields["amount"] == Decimal("200.00")

    def test_full_credit_is_quarantined_not_sent(self, tmp_path: Path) -> None:
        """Credited in full: an error on amount saying so, and no record to register."""
        write(tmp_path, "1.xml", ehf_invoice("1", amount="800.00"))
        write(tmp_path, "K.xml", ehf_credit_note("K", "1", amount="800.00"))
        items = read_all(tmp_path)
        assert len(items) == 1
        problem = error(items, "1.xml:1")
        assert problem.field == "amount"
        assert problem.reason == (
            "credited in full, nothing to collect: 800.00 NOK less credit note K "
            "(800.00, in K.xml) = 0.00 NOK"
        )

    def test_official_correction_credits_the_official_invoice(self, tmp_path: Path) -> None:
        """base-example.xml with its official credit note: nothing is left to register."""
        shutil.copy(PEPPOL / "base-example.xml", tmp_path)
        shutil.copy(PEPPOL / "base-creditnote-correction.xml", tmp_path)
        (item,) = read_all(tmp_path)
        assert isinstance(item, RecordError)
        assert item.key == "base-example.xml:Snippet1"
        assert item.reason == (
            "credited in full, nothing to collect: 1656.25 EUR less credit note Snippet1 "
            "(1656.25, in base-creditnote-correction.xml) = 0.00 EUR"
        )

    def test_credit_note_without_its_invoice_is_reported(self, tmp_path: Path) -> None:
        """The invoice it names is not in the folder: the credit note is quarantined."""
        write(tmp_path, "K.xml", ehf_credit_note("K", "404", amount="100.00"))
        problem = error(read_all(tmp_path), "K.xml:K")
        assert problem.field == "credit_note"
        assert "credits invoice 404, which is not among the EHF invoices" in problem.reason

    def test_json_invoice_is_not_credited(self, tmp_path: Path) -> None:
        """Credit notes net only against EHF invoices; a JSON invoice keeps its amount."""
        (tmp_path / "1.json").write_text(
            '{"invoice_number": "1", "invoice_date": "2025-01-01", "due_date": "2025-01-31",'
            ' "amount": "300", "debtor_name": "X", "address_line1": "Y", "postal_code": "0150",'
            ' "city": "Oslo"}',
            encoding="utf-8",
        )
        write(tmp_path, "K.xml", ehf_credit_note("K", "1", amount="100.00"))
        items = read_all(tmp_path)
        assert record(items, "1.json:1").fields["amount"] == "300"
        assert error(items, "K.xml:K").field == "credit_note"


class TestHostileFiles:
    def test_each_is_quarantined_and_the_valid_files_beside_them_are_read(
        self, tmp_path: Path
    ) -> None:
        """XXE, billion laughs, 50 MB, not UBL, no due date: five reasoned errors, two records."""
        secret = tmp_path / "secret.txt"
        secret.write_text("TOP-SECRET-PASSWORD", encoding="utf-8")
        folder = tmp_path / "inbox"
        write(folder, "a-valid.xml", ehf_invoice("1"))
        write(folder, "b-xxe.xml", XXE_TEMPLATE.format(path=secret).encode())
        write(folder, "c-laughs.xml", BILLION_LAUGHS.encode())
        big = ehf_invoice("3").replace(
            b"<cbc:BuyerReference>", b"<!--" + b" " * (50 * MIB) + b"-->" + b"<cbc:BuyerReference>"
        )
        write(folder, "d-big.xml", big)
        write(folder, "e-html.xml", b"<html><body>not an invoice</body></html>")
        write(folder, "f-no-due-date.xml", ehf_invoice("6", due_date=""))
        write(folder, "g-valid.xml", ehf_invoice("7", pdf=minimal_pdf()))

        items = read_all(folder)

        assert sorted(item.key for item in items if isinstance(item, SourceRecord)) == [
            "a-valid.xml:1",
            "g-valid.xml:7",
        ]
        problems = {item.key: item for item in items if isinstance(item, RecordError)}
        assert sorted(problems) == [
            "b-xxe.xml",
            "c-laughs.xml",
            "d-big.xml",
            "e-html.xml",
            "f-no-due-date.xml",
        ]
        for key in ("b-xxe.xml", "c-laughs.xml"):
            assert problems[key].field == "file"
            assert "document type declaration" in problems[key].reason
        assert problems["d-big.xml"].reason.startswith("the file has 524")
        assert "more than max_file_bytes (20971520)" in problems["d-big.xml"].reason
        assert "not a UBL 2.1 Invoice or CreditNote" in problems["e-html.xml"].reason
        assert problems["f-no-due-date.xml"].field == "due_date"
        assert "TOP-SECRET" not in repr(items)

    def test_big_file_is_not_read(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file over max_file_bytes is refused from its size, before it is opened or parsed."""
        write(tmp_path, "big.xml", ehf_invoice("1") + b" " * 2048)
        parsed: list[bytes] = []
        monkeypatch.setattr(ubl_module, "parse", lambda data, **_: parsed.append(data))
        (item,) = read_all(tmp_path, max_file_bytes=1024)
        assert isinstance(item, RecordError)
        assert "more than max_file_bytes (1024)" in item.reason
        assert parsed == []
