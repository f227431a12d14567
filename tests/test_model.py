"""Tests of the canonical invoice model (`kravia_sync.model`): the flat record format."""

from __future__ import annotations

import io
import os
import tracemalloc
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from file_support import MIB, sparse_file, within
from stdnum.no import fodselsnummer

from kravia_sync import documents
from kravia_sync.documents import MAX_DOCUMENT_BYTES, CallableDocument, FileDocument
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import REQUIRED_FIELDS, DebtorKind, Invoice, parse_amount, parse_date
from kravia_sync.testing import minimal_pdf

PRIVATE: dict[str, Any] = {
    "invoice_number": "20003",
    "invoice_date": "2025-01-01",
    "due_date": "2025-02-01",
    "amount": "2250",
    "description": "Invoice XYZ to collection",
    "debtor_name": "John Doe",
    "debtor_number": "10001",
    "debtor_email": "kevcaballero@gmail.com",
    "address_line1": "Karl Johan Gate",
    "postal_code": "1000",
    "city": "Oslo",
}
BUSINESS: dict[str, Any] = {
    **PRIVATE,
    "debtor_name": "Blåbær AS",
    "debtor_type": "business",
    "organization_number": "923609016",
}
VALID_ORGNR = "923609016"  # MOD11-valid
INVALID_ORGNR = "923609017"  # last digit off by one


def _fodselsnummer(birth: str, *, d_number: bool = False) -> str:
    """A valid fødselsnummer (or D-number) for a DDMMYY birth date: first valid individual no."""
    if d_number:
        birth = str(int(birth[0]) + 4) + birth[1:]
    for individual in range(100, 500):
        digits = [int(c) for c in f"{birth}{individual:03d}"]
        k1 = 11 - sum(w * d for w, d in zip((3, 7, 6, 1, 8, 9, 4, 5, 2), digits, strict=True)) % 11
        k1 = 0 if k1 == 11 else k1
        if k1 == 10:
            continue
        digits.append(k1)
        k2 = (
            11
            - sum(w * d for w, d in zip((5, 4, 3, 2, 7, 6, 5, 4, 3, 2), digits, strict=True)) % 11
        )
        k2 = 0 if k2 == 11 else k2
        if k2 == 10:
            continue
        return "".join(map(str, [*digits, k2]))
    raise AssertionError("no valid number found")  # pragma: no cover


ABSENT = object()
VALID_FNR = _fodselsnummer("151086")
VALID_DNR = _fodselsnummer("151086", d_number=True)


def record(**changes: Any) -> dict[str, Any]:
    """The private example record with `changes` applied; a value of None removes the field."""
    result = {**PRIVATE, **changes}
    return {key: value for key, value in result.items() if value is not None}


class TestHelpers:
    def test_generated_numbers_are_valid(self):
        """The test's fødselsnummer and D-number are valid by python-stdnum's own check."""
        assert fodselsnummer.is_valid(VALID_FNR)
        assert fodselsnummer.is_valid(VALID_DNR)
        assert int(VALID_DNR[0]) >= 4


class TestValidRecords:
    def test_private_debtor(self):
        """A complete private record becomes an invoice with every field in canonical form."""
        invoice = Invoice.from_record(PRIVATE)

        assert invoice.invoice_number == "20003"
        assert invoice.accounting_invoice_id == "20003"
        assert invoice.invoice_date == date(2025, 1, 1)
        assert invoice.due_date == date(2025, 2, 1)
        assert invoice.amount == Decimal(2250)
        assert invoice.currency == "NOK"
        assert invoice.description == "Invoice XYZ to collection"
        assert invoice.debtor.kind is DebtorKind.PRIVATE
        assert invoice.debtor.name == "John Doe"
        assert invoice.debtor.customer_number == "10001"
        assert invoice.debtor.email == "kevcaballero@gmail.com"
        assert invoice.debtor.organization_number is None
        assert invoice.debtor.ssn is None
        assert invoice.debtor.address.line1 == "Karl Johan Gate"
        assert invoice.debtor.address.line2 is None
        assert invoice.debtor.address.postal_code == "1000"
        assert invoice.debtor.address.city == "Oslo"
        assert invoice.debtor.address.country == "NO"
        assert invoice.document is None

    def test_business_debtor(self):
        """A business record with a valid organisation number is a business debtor."""
        invoice = Invoice.from_record(BUSINESS)

        assert invoice.debtor.kind is DebtorKind.BUSINESS
        assert invoice.debtor.organization_number == VALID_ORGNR

    def test_organization_number_implies_business(self):
        """Without debtor_type, a record carrying an organisation number is a business debtor."""
        invoice = Invoice.from_record(record(organization_number=VALID_ORGNR))

        assert invoice.debtor.kind is DebtorKind.BUSINESS

    @pytest.mark.parametrize("kind", ["Private", " PRIVATE ", DebtorKind.PRIVATE])
    def test_debtor_type_case_insensitive(self, kind):
        """debtor_type is matched case-insensitively and around whitespace."""
        assert Invoice.from_record(record(debtor_type=kind)).debtor.kind is DebtorKind.PRIVATE

    @pytest.mark.parametrize(
        "given", ["923 609 016", "923.609.016", "923-609-016", " 923609016 ", 923609016]
    )
    def test_organization_number_normalised(self, given):
        """Spaces, dots and dashes in an organisation number are dropped; ints become text."""
        invoice = Invoice.from_record({**BUSINESS, "organization_number": given})

        assert invoice.debtor.organization_number == VALID_ORGNR

    def test_numeric_invoice_number_becomes_text(self):
        """An integer invoice number (as a database gives it) becomes text, also in the id."""
        invoice = Invoice.from_record(record(invoice_number=20003))

        assert invoice.invoice_number == "20003"
        assert invoice.accounting_invoice_id == "20003"

    def test_optional_blank_fields_become_none(self):
        """Blank optional fields (as CSV gives them) are absent, not empty strings."""
        invoice = Invoice.from_record(
            record(description="  ", debtor_email="", address_line2=" ", ssn="")
        )

        assert invoice.description is None
        assert invoice.debtor.email is None
        assert invoice.debtor.address.line2 is None
        assert invoice.debtor.ssn is None


class TestAmounts:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("1 234,50", "1234.50"),
            ("1.234,50", "1234.50"),
            ("1,234.50", "1234.50"),
            ("1234.50", "1234.50"),
            ("1234,5", "1234.50"),
            ("1\u00a0234,50", "1234.50"),
            ("1\u202f234,50", "1234.50"),
            ("NOK 1 234,50", "1234.50"),
            ("kr 990", "990.00"),
            ("0,01", "0.01"),
            (Decimal("1234.50"), "1234.50"),
            (2250, "2250.00"),
            ("12345678901234567,89", "12345678901234567.89"),
        ],
    )
    def test_exact_decimal(self, given, expected):
        """Amounts in Norwegian, English and typed forms become the exact Decimal, in øre."""
        amount = Invoice.from_record(record(amount=given)).amount

        assert isinstance(amount, Decimal)
        assert str(amount) == expected

    @pytest.mark.parametrize(
        "given",
        [
            2250.0,
            True,
            "-100",
            Decimal("-0.01"),
            "12,345",
            "1.234.567",
            "12.345",
            Decimal("1.005"),
            "abc",
            "1 2 3,4,5",
            Decimal("NaN"),
            Decimal("Infinity"),
            [2250],
            Decimal("1E+26"),
            Decimal("-1E+40"),
            10**30,
        ],
    )
    def test_refused(self, given):
        """Floats, booleans, negative amounts, >2 decimals, amounts no invoice has (beyond
        exact arithmetic) and garbage name `amount`."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(amount=given))

        assert info.value.field == "amount"

    @pytest.mark.parametrize("given", ["0", "0,00", 0, Decimal("0.00")])
    def test_nothing_outstanding_is_valid(self, given):
        """0 is a valid outstanding amount: the invoice is paid (the policy keeps it out of
        collection; one already in Kravia has its payment forwarded)."""
        assert Invoice.from_record(record(amount=given)).amount == Decimal("0.00")

    @pytest.mark.parametrize(
        ("field", "value"), [("due_date", "9999-12-31"), ("invoice_date", "0001-01-01")]
    )
    def test_dates_outside_any_invoice_are_refused(self, field, value):
        """A date no invoice has (date arithmetic on it would overflow) names its field."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(**{field: value}))

        assert info.value.field == field
        assert "plausible" in info.value.reason

    @pytest.mark.parametrize("given", [Decimal("2250.0000"), Decimal("1234.5000")])
    def test_typed_trailing_zeros_accepted(self, given):
        """A typed Decimal whose digits past the second decimal are zeros is accepted."""
        assert Invoice.from_record(record(amount=given)).amount == given

    def test_text_with_three_decimals_refused(self):
        """Text with three decimals stays refused: "234,500" may mean 234500 in English."""
        with pytest.raises(InvalidRecordError, match="more than two decimals"):
            Invoice.from_record(record(amount="234,500"))

    def test_float_reason_says_why(self):
        """A float is refused with a reason that tells how to give the amount instead."""
        with pytest.raises(InvalidRecordError, match="float"):
            Invoice.from_record(record(amount=12.5))

    def test_parse_amount_is_exact_beyond_float_precision(self):
        """parse_amount never passes through float: 17 significant digits survive."""
        assert parse_amount("98 765 432 109 876,54") == Decimal("98765432109876.54")


class TestDates:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("2025-01-31", date(2025, 1, 31)),
            ("31.01.2025", date(2025, 1, 31)),
            ("1.2.2025", date(2025, 2, 1)),
            (" 2025-01-31 ", date(2025, 1, 31)),
            ("2025-01-31T10:15:00", date(2025, 1, 31)),
            (date(2025, 1, 31), date(2025, 1, 31)),
            (datetime(2025, 1, 31, 23, 59, tzinfo=UTC), date(2025, 1, 31)),
        ],
    )
    def test_accepted_forms(self, given, expected):
        """ISO, Norwegian dotted, datetime text and typed dates all parse to the calendar date."""
        assert parse_date(given) == expected
        invoice = Invoice.from_record(record(invoice_date=given, due_date="2025-03-01"))
        assert invoice.invoice_date == expected

    @pytest.mark.parametrize("field", ["invoice_date", "due_date"])
    @pytest.mark.parametrize(
        "given", ["2025-02-30", "30.02.2025", "2025-13-01", "tomorrow", 20250101]
    )
    def test_impossible_date_names_field(self, field, given):
        """An impossible or unparseable date is refused naming the field it was in."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(**{field: given}))

        assert info.value.field == field

    def test_impossible_date_reason_quotes_value(self):
        """The reason for an impossible date quotes the value given."""
        with pytest.raises(InvalidRecordError, match="2025-02-30"):
            Invoice.from_record(record(due_date="2025-02-30"))

    def test_due_before_invoice_date(self):
        """A due date before the invoice date is refused, naming due_date."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(invoice_date="2025-02-02", due_date="2025-02-01"))

        assert info.value.field == "due_date"
        assert "before invoice_date" in info.value.reason

    def test_due_on_invoice_date(self):
        """An invoice due the day it was issued is valid."""
        invoice = Invoice.from_record(record(invoice_date="2025-02-01", due_date="01.02.2025"))

        assert invoice.due_date == invoice.invoice_date


class TestCurrencyAndCountry:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [(None, "NOK"), ("", "NOK"), ("NOK", "NOK"), ("nok", "NOK"), (" eur ", "EUR")],
    )
    def test_currency(self, given, expected):
        """The currency defaults to NOK and is an upper-cased ISO 4217 code."""
        assert Invoice.from_record(record(currency=given)).currency == expected

    @pytest.mark.parametrize("given", ["XYZ", "NO", "NOKK", "kroner", 578])
    def test_unknown_currency(self, given):
        """A currency that is not an ISO 4217 code is refused, naming currency."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(currency=given))

        assert info.value.field == "currency"

    @pytest.mark.parametrize(
        ("given", "expected"), [(None, "NO"), ("", "NO"), ("no", "NO"), (" se ", "SE")]
    )
    def test_country(self, given, expected):
        """The country defaults to NO and is an upper-cased ISO 3166 alpha-2 code."""
        invoice = Invoice.from_record(record(country=given, postal_code="1000"))

        assert invoice.debtor.address.country == expected

    @pytest.mark.parametrize("given", ["XX", "NOR", "Norway", 47])
    def test_unknown_country(self, given):
        """A country that is not an ISO 3166 alpha-2 code is refused, naming country."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(country=given))

        assert info.value.field == "country"


class TestPostalCode:
    @pytest.mark.parametrize(("given", "expected"), [("0150", "0150"), (1000, "1000")])
    def test_norwegian(self, given, expected):
        """A Norwegian postal code is four digits; an int is turned into text."""
        assert Invoice.from_record(record(postal_code=given)).debtor.address.postal_code == expected

    @pytest.mark.parametrize("given", ["150", "01500", "O150", "N-0150", 150])
    def test_norwegian_wrong_shape(self, given):
        """A Norwegian postal code that is not four digits is refused naming postal_code."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(postal_code=given))

        assert info.value.field == "postal_code"

    @pytest.mark.parametrize(
        ("country", "code"), [("GB", "SW1A 1AA"), ("SE", "114 55"), ("DE", "10115")]
    )
    def test_foreign_free_form(self, country, code):
        """A foreign postal code is free-form."""
        invoice = Invoice.from_record(record(country=country, postal_code=code))

        assert invoice.debtor.address.postal_code == code


class TestIdentityNumbers:
    def test_business_without_organization_number(self):
        """A business debtor without an organisation number names organization_number."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record({**BUSINESS, "organization_number": None})

        assert info.value.field == "organization_number"
        assert "required" in info.value.reason

    @pytest.mark.parametrize("given", [INVALID_ORGNR, "92360901", "9236090160", "ABCDEFGHI"])
    def test_business_invalid_organization_number(self, given):
        """An organisation number failing the 9-digit MOD11 check names organization_number."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record({**BUSINESS, "organization_number": given})

        assert info.value.field == "organization_number"
        assert "MOD11" in info.value.reason

    @pytest.mark.parametrize("given", [VALID_FNR, VALID_DNR])
    def test_valid_ssn(self, given):
        """A valid fødselsnummer or D-number is kept as the debtor's ssn."""
        assert Invoice.from_record(record(ssn=given)).debtor.ssn == given

    def test_ssn_separators_dropped(self):
        """Spaces in an ssn are dropped before it is checked."""
        spaced = f"{VALID_FNR[:6]} {VALID_FNR[6:]}"

        assert Invoice.from_record(record(ssn=spaced)).debtor.ssn == VALID_FNR

    @pytest.mark.parametrize(
        "given",
        [
            VALID_FNR[:-1] + str((int(VALID_FNR[-1]) + 1) % 10),
            "12345678901",
            "1510861234",
            "32138612345",
        ],
    )
    def test_invalid_ssn(self, given):
        """An ssn that is not a valid fødselsnummer/D-number is refused naming ssn."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(ssn=given))

        assert info.value.field == "ssn"

    def test_invalid_ssn_reason_does_not_echo_it(self):
        """The reason for a bad ssn does not repeat the personal number."""
        bad = "12345678901"
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(ssn=bad))

        assert bad not in str(info.value)

    @pytest.mark.parametrize("given", ["a@b.no", "ola.nordmann+x@firma.example.no"])
    def test_email_accepted(self, given):
        """Addresses of the shape local@domain.tld are accepted."""
        assert Invoice.from_record(record(debtor_email=given)).debtor.email == given

    @pytest.mark.parametrize("given", ["not-an-email", "a@b", "a b@c.no", "@c.no", "a@@c.no"])
    def test_email_refused(self, given):
        """An e-mail that is not of the shape local@domain.tld names debtor_email."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(debtor_email=given))

        assert info.value.field == "debtor_email"


class TestErrorsNameTheRecordField:
    @pytest.mark.parametrize("field", REQUIRED_FIELDS)
    @pytest.mark.parametrize("value", [ABSENT, None, "", "   "])
    def test_required_missing(self, field, value):
        """A required field that is absent, None or blank names that field."""
        given = {**PRIVATE, field: value}
        if value is ABSENT:
            del given[field]
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(given)

        assert info.value.field == field
        assert info.value.reason == "required field is missing or empty"

    def test_unknown_field(self):
        """A field outside the record format is refused, naming it."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(colour="blue"))

        assert info.value.field == "colour"
        assert "unknown field" in info.value.reason

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"amount": "-1"}, "amount"),
            ({"invoice_date": "2025-02-30"}, "invoice_date"),
            ({"due_date": "2024-12-31"}, "due_date"),
            ({"currency": "XYZ"}, "currency"),
            ({"country": "XX"}, "country"),
            ({"postal_code": "12"}, "postal_code"),
            ({"debtor_type": "company"}, "debtor_type"),
            ({"debtor_type": "business"}, "organization_number"),
            ({"organization_number": INVALID_ORGNR}, "organization_number"),
            ({"ssn": "12345678901"}, "ssn"),
            ({"debtor_email": "nope"}, "debtor_email"),
            ({"debtor_name": "   "}, "debtor_name"),
            ({"address_line1": ""}, "address_line1"),
            ({"city": None}, "city"),
            ({"colour": "blue"}, "colour"),
        ],
    )
    def test_field_names(self, changes, field):
        """Every refusal names the flat record field, not the nested model path."""
        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(record(**changes))

        assert info.value.field == field
        assert str(info.value).startswith(f"{field}: ")


class TestIdentifiers:
    def test_accounting_id_defaults_to_invoice_number(self):
        """Without accounting_invoice_id, the invoice number is the accountingInvoiceId."""
        assert Invoice.from_record(PRIVATE).accounting_invoice_id == "20003"

    def test_accounting_id_given(self):
        """An explicit accounting_invoice_id is used as is."""
        invoice = Invoice.from_record(record(accounting_invoice_id="ERP-77"))

        assert invoice.accounting_invoice_id == "ERP-77"
        assert invoice.invoice_number == "20003"

    @pytest.mark.parametrize(
        ("accounting_invoice_id", "expected"), [(None, "A-20003"), ("ERP-77", "A-ERP-77")]
    )
    def test_id_prefix(self, accounting_invoice_id, expected):
        """The source's id_prefix goes in front of the accountingInvoiceId, not the number."""
        invoice = Invoice.from_record(
            record(accounting_invoice_id=accounting_invoice_id), id_prefix="A-"
        )

        assert invoice.accounting_invoice_id == expected
        assert invoice.invoice_number == "20003"


class TestFingerprint:
    def test_stable_for_equal_invoices(self):
        """Two invoices made from the same record have the same fingerprint."""
        first = Invoice.from_record(PRIVATE)
        second = Invoice.from_record(dict(PRIVATE))

        assert first == second
        assert first.fingerprint() == second.fingerprint()
        assert len(first.fingerprint()) == 32

    def test_stable_across_input_forms(self):
        """The same invoice given in other textual forms has the same fingerprint."""
        typed = record(
            invoice_number=20003,
            invoice_date=date(2025, 1, 1),
            due_date="01.02.2025",
            amount=Decimal(2250),
            currency="nok",
            country="no",
        )

        assert (
            Invoice.from_record(typed).fingerprint() == Invoice.from_record(PRIVATE).fingerprint()
        )

    def test_stable_across_trailing_zeros(self):
        """Equal invoices whose amounts differ only in trailing zeros share a fingerprint."""
        plain = Invoice.from_record(record(amount="2250"))
        padded = Invoice.from_record(record(amount="2250,00"))

        assert plain == padded
        assert plain.fingerprint() == padded.fingerprint()

    @pytest.mark.parametrize(
        "changes",
        [
            {"amount": "2250,01"},
            {"due_date": "2025-02-02"},
            {"debtor_name": "Jane Doe"},
            {"address_line2": "c/o Hansen"},
            {"accounting_invoice_id": "other"},
        ],
    )
    def test_changes_with_content(self, changes):
        """A change to what would be sent changes the fingerprint."""
        assert (
            Invoice.from_record(record(**changes)).fingerprint()
            != Invoice.from_record(PRIVATE).fingerprint()
        )

    def test_changes_with_document_presence(self):
        """Attaching a copy of the invoice changes the fingerprint; its content does not."""
        bare = Invoice.from_record(PRIVATE)
        one = Invoice.from_record(
            PRIVATE, document=CallableDocument("a.pdf", lambda: minimal_pdf("a"))
        )
        other = Invoice.from_record(
            PRIVATE, document=CallableDocument("b.pdf", lambda: minimal_pdf("b"))
        )

        assert one.fingerprint() != bare.fingerprint()
        assert one.fingerprint() == other.fingerprint()

    def test_fingerprint_does_not_load_document(self):
        """Fingerprinting never reads the (lazily loaded) document."""
        loads: list[int] = []

        def loader() -> bytes:
            loads.append(1)
            return minimal_pdf()

        Invoice.from_record(PRIVATE, document=CallableDocument("x.pdf", loader)).fingerprint()

        assert loads == []


class TestDocument:
    def test_excluded_from_dump(self):
        """The document is kept on the invoice but left out of model_dump."""
        document = CallableDocument("x.pdf", minimal_pdf)
        invoice = Invoice.from_record(PRIVATE, document=document)

        assert invoice.document is document
        assert "document" not in invoice.model_dump()
        assert "document" not in invoice.model_dump(mode="json")

    def test_invoice_is_frozen(self):
        """An invoice cannot be changed after validation."""
        invoice = Invoice.from_record(PRIVATE)

        with pytest.raises(ValueError, match="frozen"):
            invoice.amount = Decimal(1)  # type: ignore[misc]


def refused(document: FileDocument) -> str:
    """The reason `document.load()` gives (within two seconds) for not loading."""
    with pytest.raises(InvalidRecordError) as caught:
        within(2, document.load)
    assert caught.value.field == "document"
    return caught.value.reason


class TestFileDocument:
    def test_a_regular_file_loads(self, tmp_path: Path) -> None:
        """The file's bytes, under its own name; the path may be given positionally, as before."""
        pdf = minimal_pdf("copy")
        (tmp_path / "7.pdf").write_bytes(pdf)
        document = FileDocument(tmp_path / "7.pdf")
        assert document.name == "7.pdf"
        assert document.max_bytes == MAX_DOCUMENT_BYTES == 20 * MIB
        assert document.load() == pdf
        assert FileDocument(str(tmp_path / "7.pdf"), max_bytes=len(pdf)).load() == pdf

    def test_a_huge_file_is_refused_from_its_size_and_not_read(self, tmp_path: Path) -> None:
        """A 100 MiB file: the reason names its size and the limit; memory stays small."""
        document = FileDocument(sparse_file(tmp_path / "7.pdf", 100 * MIB))
        tracemalloc.start()
        try:
            reason = refused(document)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert reason == (
            "7.pdf has 104857600 bytes, more than the limit of 20971520; it was not read"
        )
        assert peak < MIB

    def test_max_bytes_is_the_limit(self, tmp_path: Path) -> None:
        """One byte over `max_bytes` is refused."""
        (tmp_path / "7.pdf").write_bytes(b"%PDF-" + b"x" * 95)
        assert "has 100 bytes, more than the limit of 99" in refused(
            FileDocument(tmp_path / "7.pdf", max_bytes=99)
        )

    def test_max_bytes_must_be_positive(self, tmp_path: Path) -> None:
        """A limit of zero is a mistake, said at once."""
        with pytest.raises(ValueError, match="max_bytes must be positive"):
            FileDocument(tmp_path / "7.pdf", max_bytes=0)

    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
    def test_a_named_pipe_is_refused_without_blocking(self, tmp_path: Path) -> None:
        """Opening a FIFO for reading would wait for a writer forever: it is refused at once."""
        os.mkfifo(tmp_path / "7.pdf")
        assert refused(FileDocument(tmp_path / "7.pdf")) == (
            "7.pdf is not a regular file (a named pipe)"
        )

    @pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
    def test_a_link_to_a_device_is_refused(self, tmp_path: Path) -> None:
        """`7.pdf` → /dev/zero is followed, found to be a device, and not read."""
        (tmp_path / "7.pdf").symlink_to("/dev/zero")
        assert refused(FileDocument(tmp_path / "7.pdf")) == "7.pdf is not a regular file (a device)"

    def test_a_directory_is_refused(self, tmp_path: Path) -> None:
        """A directory named like a PDF is not a copy."""
        (tmp_path / "7.pdf").mkdir()
        assert refused(FileDocument(tmp_path / "7.pdf")) == (
            "7.pdf is not a regular file (a directory)"
        )

    def test_a_missing_file_names_the_cause(self, tmp_path: Path) -> None:
        """A file that cannot be opened: the operating system's reason."""
        assert refused(FileDocument(tmp_path / "7.pdf")) == (
            "7.pdf cannot be read: No such file or directory"
        )

    def test_reading_stops_one_byte_past_the_limit(self) -> None:
        """A file that grew after it was measured is read no further than limit + 1 bytes."""
        grown = io.BytesIO(b"x" * 1000)
        assert documents._read_at_most(grown, 100, expected=10) == b"x" * 101
        assert grown.tell() == 101
        assert documents._read_at_most(io.BytesIO(b"abc"), 100, expected=3) == b"abc"
