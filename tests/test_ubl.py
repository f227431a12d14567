"""Tests of the UBL reader (`connectors.ubl`): official PEPPOL examples, the mapping, netting."""

from __future__ import annotations

import socket
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ehf_support import ORGNR, attachment, buyer_party, ehf_credit_note, ehf_invoice

from connectors import ubl
from kravia_sync.documents import check_pdf
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import DebtorKind, Invoice
from kravia_sync.testing import minimal_pdf

PEPPOL = Path(__file__).parent / "data" / "peppol"


def official(name: str) -> bytes:
    return (PEPPOL / name).read_bytes()


def parsed_invoice(data: bytes) -> ubl.UblInvoice:
    document = ubl.parse(data, source="test.xml")
    assert isinstance(document, ubl.UblInvoice)
    return document


def parse_error(data: bytes) -> ubl.Problem:
    with pytest.raises(ubl.UblError) as caught:
        ubl.parse(data)
    return caught.value.problem


def swap(data: bytes, old: str, new: str) -> bytes:
    text = data.decode()
    assert old in text, old
    return text.replace(old, new).encode()


class TestOfficialExamples:
    def test_base_example_maps_field_by_field(self) -> None:
        """base-example.xml: every canonical field from its UBL element, nothing invented."""
        invoice = parsed_invoice(official("base-example.xml"))
        assert invoice.number == "Snippet1"
        assert invoice.fields == {
            "invoice_number": "Snippet1",
            "invoice_date": date(2017, 11, 13),
            "due_date": date(2017, 12, 1),
            "amount": Decimal("1656.25"),
            "currency": "EUR",
            "debtor_name": "Buyer Official Name",  # RegistrationName before the trading name
            "debtor_type": "business",  # a legal registration (scheme 0183, Swiss)
            "debtor_email": "lj@buyer.se",
            "address_line1": "Hovedgatan 32",
            "address_line2": "Po box 878",
            "postal_code": "456 34",
            "city": "Stockholm",
            "country": "SE",
        }
        assert invoice.pdf is None

    def test_base_example_is_a_business_without_norwegian_orgnr(self) -> None:
        """Its buyer is registered abroad: Kravia needs a Norwegian organisation number for B2B."""
        fields = parsed_invoice(official("base-example.xml")).fields
        with pytest.raises(InvalidRecordError) as caught:
            Invoice.from_record(fields)
        assert caught.value.field == "organization_number"
        assert "required for a business debtor" in caught.value.reason

    def test_amounts_are_decimal_never_float(self) -> None:
        """The amount arrives as an exact Decimal."""
        amount = parsed_invoice(official("base-example.xml")).fields["amount"]
        assert type(amount) is Decimal
        assert amount == Decimal("1656.25")

    def test_allowance_example_takes_the_amount_due_after_prepayment(self) -> None:
        """Allowance-example.xml: PayableAmount (7125 less 1000 prepaid) is the amount."""
        invoice = parsed_invoice(official("Allowance-example.xml"))
        assert invoice.fields == {
            "invoice_number": "Snippet1",
            "invoice_date": date(2017, 11, 13),
            "due_date": date(2017, 12, 1),
            "amount": Decimal("6125.00"),
            "currency": "EUR",
            "debtor_name": "Buyer Official Name",
            "debtor_type": "business",
            "debtor_email": "lj@buyer.se",
            "address_line1": "Hovedgatan 32",
            "address_line2": "Po box 878",  # not the delivery address's AddressLine
            "postal_code": "456 34",
            "city": "Stockholm",
            "country": "SE",
        }
        assert invoice.pdf is None  # its attachments are a reference and an external URI

    def test_norwegian_example_maps_field_by_field(self) -> None:
        """Norwegian-example-1.xml: the 0192 organisation number, NOK, prepaid netted."""
        invoice = parsed_invoice(official("Norwegian-example-1.xml"))
        assert invoice.fields == {
            "invoice_number": "TOSL108",
            "invoice_date": date(2013, 6, 30),
            "due_date": date(2013, 7, 20),
            "amount": Decimal("802.00"),
            "currency": "NOK",
            "debtor_name": "Buyercompany ASA",
            "debtor_type": "business",
            "organization_number": "987654325",
            "debtor_email": "john@buyercompany.no",
            "address_line1": "Anystreet 8",
            "address_line2": "Back door",
            "postal_code": "101",
            "city": "Anytown",
            "country": "NO",
        }

    def test_norwegian_example_fails_validation_on_its_postal_code(self) -> None:
        """Its buyer's postal code 101 is not a Norwegian one (4 digits): quarantined."""
        with pytest.raises(InvalidRecordError) as caught:
            Invoice.from_record(parsed_invoice(official("Norwegian-example-1.xml")).fields)
        assert caught.value.field == "postal_code"

    def test_norwegian_example_embedded_attachment_is_not_a_pdf(self) -> None:
        """Declared application/pdf but holding text: found, decoded, and refused as a PDF."""
        data = official("Norwegian-example-1.xml")
        invoice = parsed_invoice(data)
        assert invoice.pdf == ubl.EmbeddedPdf(0, "Hours-spent.csv")
        content = ubl.embedded_pdf(data, 0)
        assert content == b"Test base 64 encoding"
        with pytest.raises(InvalidRecordError, match="not a PDF"):
            check_pdf(content, "Hours-spent.csv")

    def test_vat_category_e_has_no_due_date(self) -> None:
        """vat-category-E.xml has neither cbc:DueDate nor a payment due date: that is the reason."""
        problem = parse_error(official("vat-category-E.xml"))
        assert problem.field == "due_date"
        assert "cbc:DueDate" in problem.reason
        assert "cac:PaymentMeans/cbc:PaymentDueDate" in problem.reason

    def test_credit_note_correction(self) -> None:
        """base-creditnote-correction.xml: a credit note of 1656.25 EUR against Snippet1."""
        credit = ubl.parse(official("base-creditnote-correction.xml"), source="cn.xml")
        assert credit == ubl.Credit(
            kind="credit note",
            number="Snippet1",
            invoices=("Snippet1",),
            amount=Decimal("1656.25"),
            currency="EUR",
            source="cn.xml",
            issued=date(2017, 11, 13),
        )

    def test_negative_invoice_correction_is_a_credit(self) -> None:
        """base-negative-inv-correction.xml: a negative invoice naming Snippet1 credits it."""
        credit = ubl.parse(official("base-negative-inv-correction.xml"))
        assert credit == ubl.Credit(
            kind="corrective invoice",
            number="Correction1",
            invoices=("Snippet1",),
            amount=Decimal("1656.25"),
            currency="EUR",
            issued=date(2017, 11, 13),
        )

    @pytest.mark.parametrize(
        "credit_file", ["base-creditnote-correction.xml", "base-negative-inv-correction.xml"]
    )
    def test_each_correction_credits_the_base_example_in_full(self, credit_file: str) -> None:
        """Netted together, the base invoice has nothing left to collect and is not sent."""
        invoice = parsed_invoice(official("base-example.xml"))
        credit = ubl.parse(official(credit_file))
        assert isinstance(credit, ubl.Credit)
        (outcome,), (credit_outcome,) = ubl.apply_credits([invoice], [credit])
        assert credit_outcome is None
        assert isinstance(outcome, ubl.Problem)
        assert outcome.field == "amount"
        assert outcome.reason.startswith("credited in full, nothing to collect")
        assert "1656.25 EUR less" in outcome.reason


class TestNorwegianInvoice:
    def test_validates_into_the_expected_canonical_invoice(self) -> None:
        """A Norwegian EHF invoice becomes exactly the canonical invoice, field by field."""
        pdf = minimal_pdf("Faktura 10001")
        data = ehf_invoice(
            "10001", issue_date=date(2025, 1, 2), due_date=date(2025, 1, 16), pdf=pdf
        )
        document = parsed_invoice(data)
        invoice = Invoice.from_record(document.fields, id_prefix="ehf-")
        assert invoice.invoice_number == "10001"
        assert invoice.accounting_invoice_id == "ehf-10001"
        assert invoice.invoice_date == date(2025, 1, 2)
        assert invoice.due_date == date(2025, 1, 16)
        assert invoice.amount == Decimal("12500.00")
        assert invoice.currency == "NOK"
        assert invoice.description is None
        debtor = invoice.debtor
        assert debtor.name == "Fjordlys Eiendom AS"
        assert debtor.kind is DebtorKind.BUSINESS
        assert debtor.organization_number == ORGNR
        assert debtor.customer_number == "K-1001"
        assert debtor.email == "faktura@fjordlys.example"
        assert debtor.ssn is None
        assert (debtor.address.line1, debtor.address.line2) == ("Strandkaien 12", "2. etasje")
        assert (debtor.address.postal_code, debtor.address.city) == ("5013", "Bergen")
        assert debtor.address.country == "NO"
        assert document.pdf == ubl.EmbeddedPdf(0, "faktura.pdf")
        assert ubl.embedded_pdf(data, 0) == pdf

    def test_buyer_without_organisation_number_is_private(self) -> None:
        """No legal registration and no 0192 identifier: a private debtor."""
        buyer = buyer_party(name="Kari Nordmann", orgnr=None, endpoint=None, customer_number=None)
        fields = parsed_invoice(ehf_invoice(buyer=buyer)).fields
        assert fields["debtor_type"] == "private"
        assert "organization_number" not in fields
        assert "debtor_number" not in fields
        assert Invoice.from_record(fields).debtor.kind is DebtorKind.PRIVATE

    def test_company_id_without_scheme_is_taken_as_the_organisation_number(self) -> None:
        """EHF often leaves out schemeID on the buyer's legal registration."""
        fields = parsed_invoice(ehf_invoice(buyer=buyer_party(orgnr_scheme=None))).fields
        assert fields["organization_number"] == ORGNR

    @pytest.mark.parametrize(
        ("extra", "endpoint"),
        [
            ("", ("0192", ORGNR)),  # the electronic address
            (
                f"<cac:PartyTaxScheme><cbc:CompanyID>NO {ORGNR} MVA</cbc:CompanyID><cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme></cac:PartyTaxScheme>",
                ("0088", "7080000000001"),
            ),  # the Norwegian VAT number
        ],
    )
    def test_organisation_number_from_other_norwegian_identifiers(
        self, extra: str, endpoint: tuple[str, str]
    ) -> None:
        """Without a legal CompanyID: the 0192 EndpointID, else the NO…MVA VAT number."""
        buyer = buyer_party(orgnr=None, endpoint=endpoint, extra=extra)
        fields = parsed_invoice(ehf_invoice(buyer=buyer)).fields
        assert fields["organization_number"] == ORGNR
        assert fields["debtor_type"] == "business"

    def test_foreign_registration_is_a_business_without_norwegian_number(self) -> None:
        """A CompanyID in another scheme marks a business but is not an organisation number."""
        buyer = buyer_party(orgnr="556036-0793", orgnr_scheme="0007", endpoint=None)
        fields = parsed_invoice(ehf_invoice(buyer=buyer)).fields
        assert fields["debtor_type"] == "business"
        assert "organization_number" not in fields

    def test_invalid_organisation_number_is_left_to_the_model(self) -> None:
        """A bad 0192 number is passed on; validation names the field and the MOD11 rule."""
        fields = parsed_invoice(ehf_invoice(buyer=buyer_party(orgnr="923609017"))).fields
        with pytest.raises(InvalidRecordError) as caught:
            Invoice.from_record(fields)
        assert caught.value.field == "organization_number"
        assert "MOD11" in caught.value.reason

    def test_customer_number_prefers_supplier_assigned_account_id(self) -> None:
        """cbc:SupplierAssignedAccountID is the seller's customer number; scheme ids are not."""
        data = swap(
            ehf_invoice(buyer=buyer_party(customer_number=None)),
            "<cac:AccountingCustomerParty><cac:Party>",
            "<cac:AccountingCustomerParty><cbc:SupplierAssignedAccountID>C-77</cbc:SupplierAssignedAccountID><cac:Party>"
            '<cac:PartyIdentification><cbc:ID schemeID="0088">7080000000001</cbc:ID></cac:PartyIdentification>',
        )
        assert parsed_invoice(data).fields["debtor_number"] == "C-77"

    def test_address_lines_are_joined_into_line2(self) -> None:
        """StreetName is line 1; AdditionalStreetName and AddressLine/Line make line 2."""
        buyer = buyer_party().replace(
            "</cac:PostalAddress>",
            "<cac:AddressLine><cbc:Line>Bygg C</cbc:Line></cac:AddressLine></cac:PostalAddress>",
        )
        fields = parsed_invoice(ehf_invoice(buyer=buyer)).fields
        assert fields["address_line1"] == "Strandkaien 12"
        assert fields["address_line2"] == "2. etasje, Bygg C"

    def test_whitespace_in_values_is_collapsed(self) -> None:
        """Line breaks and indentation inside an element do not reach Kravia."""
        buyer = buyer_party(name="Fjordlys\n        Eiendom   AS")
        assert (
            parsed_invoice(ehf_invoice(buyer=buyer)).fields["debtor_name"] == "Fjordlys Eiendom AS"
        )

    def test_due_date_from_payment_means(self) -> None:
        """Without cbc:DueDate, cac:PaymentMeans/cbc:PaymentDueDate is the due date (EHF 2 style)."""
        data = ehf_invoice(due_date="", payment_due_date=date(2025, 3, 1))
        assert parsed_invoice(data).fields["due_date"] == date(2025, 3, 1)

    def test_missing_due_date(self) -> None:
        """Neither due date: an error on due_date naming both elements."""
        problem = parse_error(ehf_invoice(due_date=""))
        assert problem.field == "due_date"
        assert "neither cbc:DueDate nor cac:PaymentMeans/cbc:PaymentDueDate" in problem.reason

    def test_date_with_time_zone(self) -> None:
        """xs:date may carry a zone; the calendar date is kept."""
        data = ehf_invoice(issue_date="2025-01-02+01:00", due_date="2025-01-16Z")
        fields = parsed_invoice(data).fields
        assert (fields["invoice_date"], fields["due_date"]) == (date(2025, 1, 2), date(2025, 1, 16))

    @pytest.mark.parametrize("bad", ["2025-02-30", "16.01.2025", "20250116", "soon"])
    def test_bad_due_date_is_named(self, bad: str) -> None:
        """An impossible or non-ISO date is an error naming the element and the value."""
        problem = parse_error(ehf_invoice(due_date=bad))
        assert problem.field == "due_date"
        assert f"cbc:DueDate {bad!r} is not a date" in problem.reason

    @pytest.mark.parametrize("bad", ["1e3", "NaN", "1,5", "12 500", ""])
    def test_amount_must_be_a_decimal(self, bad: str) -> None:
        """xs:decimal only: no exponent, NaN, decimal comma or spaces."""
        problem = parse_error(ehf_invoice(payable=bad))
        assert problem.field == "amount"
        assert "PayableAmount" in problem.reason

    def test_amount_currency_must_match_the_document(self) -> None:
        """PayableAmount in another currency than cbc:DocumentCurrencyCode is refused."""
        data = swap(
            ehf_invoice(),
            '<cbc:PayableAmount currencyID="NOK">',
            '<cbc:PayableAmount currencyID="SEK">',
        )
        problem = parse_error(data)
        assert problem.field == "currency"
        assert "SEK" in problem.reason
        assert "NOK" in problem.reason

    def test_missing_required_fields_name_their_elements(self) -> None:
        """A buyer without street and city: the reason says which UBL elements are missing."""
        buyer = buyer_party(street=None, additional=None, city=None)
        problem = parse_error(ehf_invoice(buyer=buyer))
        assert problem.field == "address_line1"
        assert "cac:PostalAddress/cbc:StreetName" in problem.reason
        assert "city (cac:AccountingCustomerParty/cac:Party/cac:PostalAddress/cbc:CityName)" in (
            problem.reason
        )

    def test_missing_buyer(self) -> None:
        """An invoice without cac:AccountingCustomerParty cannot name a debtor."""
        text = ehf_invoice().decode()
        start = text.index("<cac:AccountingCustomerParty>")
        end = text.index("</cac:AccountingCustomerParty>") + len("</cac:AccountingCustomerParty>")
        problem = parse_error((text[:start] + text[end:]).encode())
        assert problem.field == "debtor_name"
        assert "cac:AccountingCustomerParty" in problem.reason

    def test_missing_invoice_number(self) -> None:
        """No cbc:ID: an error on invoice_number."""
        problem = parse_error(swap(ehf_invoice("10001"), "<cbc:ID>10001</cbc:ID>", ""))
        assert problem.field == "invoice_number"

    def test_negative_invoice_without_reference_stays_an_invoice(self) -> None:
        """A negative amount due naming no invoice is not a credit; validation refuses it."""
        fields = parsed_invoice(ehf_invoice(amount="-100.00")).fields
        assert fields["amount"] == Decimal("-100.00")
        with pytest.raises(InvalidRecordError) as caught:
            Invoice.from_record(fields)
        assert caught.value.field == "amount"

    def test_positive_invoice_with_reference_stays_an_invoice(self) -> None:
        """An invoice naming an earlier one but with an amount due is collected as usual."""
        document = ubl.parse(ehf_invoice("2", billing_reference="1"))
        assert isinstance(document, ubl.UblInvoice)

    def test_additional_street_alone_is_line1(self) -> None:
        """Without cbc:StreetName (a PO box in AdditionalStreetName) that line is line 1."""
        fields = parsed_invoice(ehf_invoice(buyer=buyer_party(street=None))).fields
        assert fields["address_line1"] == "2. etasje"
        assert "address_line2" not in fields

    def test_only_pdf_attachments_count(self) -> None:
        """A CSV attachment is not the invoice copy; the PDF after it is (index among PDFs)."""
        pdf = minimal_pdf("copy")
        attachments = attachment(b"a;b\n1;2\n", mime="text/csv", filename="timer.csv") + attachment(
            pdf, mime="Application/PDF", filename="../../etc/faktura 10001.pdf"
        )
        data = ehf_invoice(attachments=attachments)
        invoice = parsed_invoice(data)
        assert invoice.pdf == ubl.EmbeddedPdf(0, "faktura 10001.pdf")  # no directory part
        assert ubl.embedded_pdf(data, 0) == pdf

    def test_embedded_pdf_with_bad_base64(self) -> None:
        """Base64 that does not decode is an error on the document, found when it is loaded."""
        data = swap(
            ehf_invoice(pdf=b"%PDF-1.4 x"),
            "</cbc:EmbeddedDocumentBinaryObject>",
            "!!</cbc:EmbeddedDocumentBinaryObject>",
        )
        assert parsed_invoice(data).pdf is not None
        with pytest.raises(ubl.UblError) as caught:
            ubl.embedded_pdf(data, 0)
        assert caught.value.problem == ubl.Problem(
            "document", "the embedded PDF is not valid base64"
        )

    def test_xml_in_another_encoding(self) -> None:
        """The XML declaration's encoding is honoured (ISO-8859-1 with Norwegian letters)."""
        text = ehf_invoice(buyer=buyer_party(name="Ærlige Øyvind AS")).decode()
        text = text.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
        fields = parsed_invoice(text.encode("iso-8859-1")).fields
        assert fields["debtor_name"] == "Ærlige Øyvind AS"


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Invoice [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"><cbc:ID xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">&secret;</cbc:ID></Invoice>
"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">&lol9;</Invoice>
"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Invoice SYSTEM "http://127.0.0.1:9/evil.dtd">
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"/>
"""


class TestSafety:
    @pytest.mark.parametrize("document", [XXE, LAUGHS, EXTERNAL_DTD], ids=["xxe", "laughs", "dtd"])
    def test_documents_with_a_dtd_are_refused(self, document: bytes) -> None:
        """Any DOCTYPE is refused before an entity is defined, expanded or fetched."""
        problem = parse_error(document)
        assert problem.field == "file"
        assert "document type declaration" in problem.reason

    def test_no_network_access(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Parsing a document with an external DTD opens no connection."""

        def no_connect(*_: Any, **__: Any) -> None:
            raise AssertionError("the parser tried to connect")

        monkeypatch.setattr(socket.socket, "connect", no_connect)
        monkeypatch.setattr(socket, "create_connection", no_connect)
        assert "document type declaration" in parse_error(EXTERNAL_DTD).reason

    def test_undeclared_entity_is_not_well_formed(self) -> None:
        """Without a DTD an entity reference is simply malformed XML."""
        problem = parse_error(swap(ehf_invoice(), "<cbc:ID>10001</cbc:ID>", "<cbc:ID>&x;</cbc:ID>"))
        assert problem.reason.startswith("not well-formed XML: undefined entity")

    @pytest.mark.parametrize(
        ("document", "shown"),
        [
            (b"<html><body/></html>", "<html> (no namespace)"),
            (
                b'<rsm:CrossIndustryInvoice xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"/>',
                "<CrossIndustryInvoice> in namespace urn:un:unece:uncefact",
            ),
            (b"<Invoice/>", "<Invoice> (no namespace)"),
        ],
    )
    def test_other_xml_is_not_ubl(self, document: bytes, shown: str) -> None:
        """XML that is not a UBL 2.1 Invoice or CreditNote says what its root element is."""
        problem = parse_error(document)
        assert problem.field == "file"
        assert problem.reason.startswith("not a UBL 2.1 Invoice or CreditNote")
        assert shown in problem.reason

    @pytest.mark.parametrize("document", [b"", b"not xml at all", b"<Invoice>", b"\xff\xfe<"])
    def test_malformed_xml(self, document: bytes) -> None:
        """Broken XML is an error on the file, with the parser's position."""
        problem = parse_error(document)
        assert problem.field == "file"
        assert problem.reason.startswith("not well-formed XML")


def invoice_of(number: str, amount: str = "1000.00", currency: str = "NOK") -> ubl.UblInvoice:
    return parsed_invoice(ehf_invoice(number, amount=amount, currency=currency))


def credit_of(
    number: str, invoices: str | list[str] | None, amount: str = "250.00", **kw: Any
) -> ubl.Credit:
    credit = ubl.parse(
        ehf_credit_note(number, invoices, amount=amount, **kw), source=f"{number}.xml"
    )
    assert isinstance(credit, ubl.Credit)
    return credit


class TestApplyCredits:
    def test_partial_credit_lowers_the_amount_and_says_so(self) -> None:
        """1000.00 less a 250.00 credit note is 750.00; the description shows the sum."""
        (fields,), (outcome,) = ubl.apply_credits([invoice_of("1")], [credit_of("K1", "1")])
        assert outcome is None
        assert isinstance(fields, dict)
        assert fields["amount"] == Decimal("750.00")
        assert fields["description"] == "1000.00 NOK less credit note K1 (250.00) = 750.00 NOK"

    def test_several_credits_add_up(self) -> None:
        """Two credit notes against one invoice are both taken off, in read order."""
        notes = [credit_of("K1", "1", "100.00"), credit_of("K2", "1", "150.50")]
        (fields,), outcomes = ubl.apply_credits([invoice_of("1")], notes)
        assert outcomes == [None, None]
        assert isinstance(fields, dict)
        assert fields["amount"] == Decimal("749.50")
        assert "credit note K1 (100.00), credit note K2 (150.50)" in str(fields["description"])

    def test_other_invoices_are_untouched(self) -> None:
        """Only the invoice named is credited; the others keep their fields as parsed."""
        other = invoice_of("2")
        (_, fields), _ = ubl.apply_credits([invoice_of("1"), other], [credit_of("K1", "1")])
        assert fields == other.fields

    @pytest.mark.parametrize("amount", ["1000.00", "1200.00"])
    def test_full_or_excess_credit_is_not_sent(self, amount: str) -> None:
        """Nothing (or less than nothing) left: a problem on amount, never a record."""
        (outcome,), (credit,) = ubl.apply_credits([invoice_of("1")], [credit_of("K1", "1", amount)])
        assert credit is None
        assert isinstance(outcome, ubl.Problem)
        assert outcome.field == "amount"
        assert outcome.reason.startswith("credited in full, nothing to collect: 1000.00 NOK less")

    def test_credit_for_an_invoice_not_read(self) -> None:
        """A credit note naming an invoice that is not there is reported on the credit note."""
        (fields,), (problem,) = ubl.apply_credits([invoice_of("1")], [credit_of("K1", "9")])
        assert isinstance(fields, dict)
        assert fields["amount"] == Decimal("1000.00")
        assert problem == ubl.Problem(
            "credit_note",
            "credits invoice 9, which is not among the EHF invoices read from the folder; "
            "it was not netted against anything",
        )

    def test_credit_naming_no_invoice(self) -> None:
        """A credit note without a billing reference cannot be netted."""
        _, (problem,) = ubl.apply_credits([invoice_of("1")], [credit_of("K1", None)])
        assert problem is not None
        assert "does not name the invoice it credits" in problem.reason

    def test_credit_over_several_invoices_holds_them_back(self) -> None:
        """How much of it applies to each is unknown: neither invoice is sent at full amount."""
        outcomes, (problem,) = ubl.apply_credits(
            [invoice_of("1"), invoice_of("2")], [credit_of("K1", ["1", "2"])]
        )
        assert problem is not None
        assert problem.field == "credit_note"
        assert "credits several invoices (1, 2)" in problem.reason
        for outcome in outcomes:
            assert isinstance(outcome, ubl.Problem)
            assert (
                "credit note K1 (K1.xml) credits it together with other invoices" in outcome.reason
            )

    def test_credit_in_another_currency_holds_the_invoice_back(self) -> None:
        """A EUR credit against a NOK invoice cannot be netted: the invoice is not sent."""
        (outcome,), (credit,) = ubl.apply_credits(
            [invoice_of("1")], [credit_of("K1", "1", currency="EUR")]
        )
        assert credit is None
        assert outcome == ubl.Problem(
            "amount",
            "credit note K1 (K1.xml) is in EUR but the invoice is in NOK: they cannot be netted",
        )

    @pytest.mark.parametrize("amount", ["0.00", "-100.00"])
    def test_credit_of_nothing_is_refused(self, amount: str) -> None:
        """A zero or negative credit note is reported and not applied."""
        (fields,), (problem,) = ubl.apply_credits([invoice_of("1")], [credit_of("K1", "1", amount)])
        assert isinstance(fields, dict)
        assert fields["amount"] == Decimal("1000.00")
        assert problem is not None
        assert problem.field == "amount"
