"""Build EHF 3.0 (PEPPOL BIS Billing 3.0, UBL 2.1) invoices and credit notes for tests.

The documents follow the shape of OpenPEPPOL's examples with a Norwegian buyer: organisation
number in scheme 0192, NOK, an optional embedded PDF. Every part can be changed or left out.
"""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

NAMESPACES = (
    'xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2" '
    'xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"'
)
ORGNR = "923609016"  # a valid Norwegian organisation number (MOD11)
SELLER_ORGNR = "974760673"
MIB = 1024 * 1024

# Hostile documents: an external entity reading a local file, and entity expansion.
XXE_TEMPLATE = """<?xml version="1.0"?>
<!DOCTYPE Invoice [<!ENTITY secret SYSTEM "file://{path}">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
<cbc:ID>&secret;</cbc:ID></Invoice>
"""
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE Invoice [\n<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">\n'
        for n in range(1, 10)
    )
    + ']>\n<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">&lol9;</Invoice>\n'
)


def today_in_oslo() -> date:
    return datetime.now(ZoneInfo("Europe/Oslo")).date()


def overdue_dates(days_overdue: int = 30) -> tuple[date, date]:
    """(issue date, due date) for an invoice due `days_overdue` days ago."""
    due = today_in_oslo() - timedelta(days=days_overdue)
    return due - timedelta(days=14), due


def buyer_party(
    *,
    name: str = "Fjordlys Eiendom AS",
    orgnr: str | None = ORGNR,
    orgnr_scheme: str | None = "0192",
    endpoint: tuple[str, str] | None = ("0192", ORGNR),
    customer_number: str | None = "K-1001",
    email: str | None = "faktura@fjordlys.example",
    street: str | None = "Strandkaien 12",
    additional: str | None = "2. etasje",
    postal_code: str | None = "5013",
    city: str | None = "Bergen",
    country: str | None = "NO",
    extra: str = "",
) -> str:
    """The `cac:AccountingCustomerParty` element of a Norwegian business buyer."""
    parts: list[str] = []
    if endpoint is not None:
        parts.append(
            f"<cbc:EndpointID schemeID={quoteattr(endpoint[0])}>{endpoint[1]}</cbc:EndpointID>"
        )
    if customer_number is not None:
        parts.append(
            f"<cac:PartyIdentification><cbc:ID>{escape(customer_number)}</cbc:ID></cac:PartyIdentification>"
        )
    parts.append(f"<cac:PartyName><cbc:Name>{escape(name)}</cbc:Name></cac:PartyName>")
    address = [
        f"<cbc:StreetName>{escape(street)}</cbc:StreetName>" if street else "",
        f"<cbc:AdditionalStreetName>{escape(additional)}</cbc:AdditionalStreetName>"
        if additional
        else "",
        f"<cbc:CityName>{escape(city)}</cbc:CityName>" if city else "",
        f"<cbc:PostalZone>{escape(postal_code)}</cbc:PostalZone>" if postal_code else "",
        f"<cac:Country><cbc:IdentificationCode>{country}</cbc:IdentificationCode></cac:Country>"
        if country
        else "",
    ]
    parts.append(f"<cac:PostalAddress>{''.join(address)}</cac:PostalAddress>")
    legal = f"<cbc:RegistrationName>{escape(name)}</cbc:RegistrationName>"
    if orgnr is not None:
        scheme = "" if orgnr_scheme is None else f" schemeID={quoteattr(orgnr_scheme)}"
        legal += f"<cbc:CompanyID{scheme}>{escape(orgnr)}</cbc:CompanyID>"
    parts.append(f"<cac:PartyLegalEntity>{legal}</cac:PartyLegalEntity>")
    if email is not None:
        parts.append(
            f"<cac:Contact><cbc:Name>Regnskap</cbc:Name>"
            f"<cbc:ElectronicMail>{escape(email)}</cbc:ElectronicMail></cac:Contact>"
        )
    parts.append(extra)
    return (
        "<cac:AccountingCustomerParty><cac:Party>"
        + "".join(parts)
        + "</cac:Party></cac:AccountingCustomerParty>"
    )


SELLER = (
    "<cac:AccountingSupplierParty><cac:Party>"
    f'<cbc:EndpointID schemeID="0192">{SELLER_ORGNR}</cbc:EndpointID>'
    "<cac:PartyIdentification><cbc:ID>SELGER-1</cbc:ID></cac:PartyIdentification>"
    "<cac:PartyName><cbc:Name>Kreditor Eksempel AS</cbc:Name></cac:PartyName>"
    "<cac:PostalAddress><cbc:StreetName>Karl Johans gate 1</cbc:StreetName>"
    "<cbc:CityName>Oslo</cbc:CityName><cbc:PostalZone>0154</cbc:PostalZone>"
    "<cac:Country><cbc:IdentificationCode>NO</cbc:IdentificationCode></cac:Country>"
    "</cac:PostalAddress>"
    f"<cac:PartyTaxScheme><cbc:CompanyID>NO{SELLER_ORGNR}MVA</cbc:CompanyID>"
    "<cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme></cac:PartyTaxScheme>"
    "<cac:PartyLegalEntity><cbc:RegistrationName>Kreditor Eksempel AS</cbc:RegistrationName>"
    f'<cbc:CompanyID schemeID="0192">{SELLER_ORGNR}</cbc:CompanyID></cac:PartyLegalEntity>'
    "</cac:Party></cac:AccountingSupplierParty>"
)


def attachment(
    content: bytes, *, mime: str = "application/pdf", filename: str = "faktura.pdf"
) -> str:
    """An `AdditionalDocumentReference` embedding `content` in base64 (wrapped like real files)."""
    encoded = base64.encodebytes(content).decode("ascii")
    return (
        "<cac:AdditionalDocumentReference><cbc:ID>1</cbc:ID>"
        "<cbc:DocumentDescription>Faktura</cbc:DocumentDescription><cac:Attachment>"
        f"<cbc:EmbeddedDocumentBinaryObject mimeCode={quoteattr(mime)} filename={quoteattr(filename)}>"
        f"{encoded}</cbc:EmbeddedDocumentBinaryObject></cac:Attachment>"
        "</cac:AdditionalDocumentReference>"
    )


def totals(amount: str, currency: str = "NOK", *, prepaid: str | None = None) -> str:
    prepaid_element = (
        f'<cbc:PrepaidAmount currencyID="{currency}">{prepaid}</cbc:PrepaidAmount>'
        if prepaid
        else ""
    )
    return (
        f'<cac:TaxTotal><cbc:TaxAmount currencyID="{currency}">0.00</cbc:TaxAmount></cac:TaxTotal>'
        "<cac:LegalMonetaryTotal>"
        f'<cbc:TaxInclusiveAmount currencyID="{currency}">{amount}</cbc:TaxInclusiveAmount>'
        f"{prepaid_element}"
        f'<cbc:PayableAmount currencyID="{currency}">{amount}</cbc:PayableAmount>'
        "</cac:LegalMonetaryTotal>"
    )


def ehf_invoice(
    number: str = "10001",
    *,
    issue_date: date | str | None = None,
    due_date: date | str | None = None,
    payment_due_date: date | str | None = None,
    amount: str = "12500.00",
    currency: str = "NOK",
    buyer: str | None = None,
    pdf: bytes | None = None,
    attachments: str = "",
    billing_reference: str | None = None,
    payable: str | None = None,
) -> bytes:
    """An EHF invoice; by default due 30 days ago, to a Norwegian business, without a PDF."""
    default_issue, default_due = overdue_dates()
    issue = default_issue if issue_date is None else issue_date
    due = default_due if due_date is None and payment_due_date is None else due_date
    due_element = f"<cbc:DueDate>{due}</cbc:DueDate>" if due else ""  # "": no due date
    payment_due = (
        ""
        if payment_due_date is None
        else f"<cbc:PaymentDueDate>{payment_due_date}</cbc:PaymentDueDate>"
    )
    reference = (
        ""
        if billing_reference is None
        else "<cac:BillingReference><cac:InvoiceDocumentReference>"
        f"<cbc:ID>{escape(billing_reference)}</cbc:ID></cac:InvoiceDocumentReference></cac:BillingReference>"
    )
    embedded = (attachment(pdf) if pdf is not None else "") + attachments
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2" {NAMESPACES}>
<cbc:CustomizationID>urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0</cbc:CustomizationID>
<cbc:ProfileID>urn:fdc:peppol.eu:2017:poacc:billing:01:1.0</cbc:ProfileID>
<cbc:ID>{escape(number)}</cbc:ID>
<cbc:IssueDate>{issue}</cbc:IssueDate>
{due_element}
<cbc:InvoiceTypeCode>380</cbc:InvoiceTypeCode>
<cbc:DocumentCurrencyCode>{currency}</cbc:DocumentCurrencyCode>
<cbc:BuyerReference>Ref 42</cbc:BuyerReference>
{reference}
{embedded}
{SELLER}
{buyer_party() if buyer is None else buyer}
<cac:PaymentMeans><cbc:PaymentMeansCode>30</cbc:PaymentMeansCode>{payment_due}
<cbc:PaymentID>1000012345678</cbc:PaymentID>
<cac:PayeeFinancialAccount><cbc:ID>15030100001</cbc:ID></cac:PayeeFinancialAccount></cac:PaymentMeans>
{totals(amount if payable is None else payable, currency)}
<cac:InvoiceLine><cbc:ID>1</cbc:ID><cbc:InvoicedQuantity unitCode="EA">1</cbc:InvoicedQuantity>
<cbc:LineExtensionAmount currencyID="{currency}">{amount}</cbc:LineExtensionAmount>
<cac:Item><cbc:Name>Konsulenttimer</cbc:Name></cac:Item>
<cac:Price><cbc:PriceAmount currencyID="{currency}">{amount}</cbc:PriceAmount></cac:Price></cac:InvoiceLine>
</Invoice>
"""
    return document.encode("utf-8")


def ehf_credit_note(
    number: str,
    invoices: str | list[str] | None,
    *,
    amount: str = "2500.00",
    currency: str = "NOK",
    issue_date: date | None = None,
) -> bytes:
    """An EHF credit note of `amount` against the invoice number(s) `invoices` (None: none named)."""
    numbers = [] if invoices is None else [invoices] if isinstance(invoices, str) else invoices
    references = "".join(
        "<cac:BillingReference><cac:InvoiceDocumentReference>"
        f"<cbc:ID>{escape(n)}</cbc:ID></cac:InvoiceDocumentReference></cac:BillingReference>"
        for n in numbers
    )
    issue = today_in_oslo() if issue_date is None else issue_date
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<CreditNote xmlns="urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2" {NAMESPACES}>
<cbc:CustomizationID>urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0</cbc:CustomizationID>
<cbc:ProfileID>urn:fdc:peppol.eu:2017:poacc:billing:01:1.0</cbc:ProfileID>
<cbc:ID>{escape(number)}</cbc:ID>
<cbc:IssueDate>{issue}</cbc:IssueDate>
<cbc:CreditNoteTypeCode>381</cbc:CreditNoteTypeCode>
<cbc:DocumentCurrencyCode>{currency}</cbc:DocumentCurrencyCode>
<cbc:BuyerReference>Ref 42</cbc:BuyerReference>
{references}
{SELLER}
{buyer_party()}
{totals(amount, currency)}
<cac:CreditNoteLine><cbc:ID>1</cbc:ID><cbc:CreditedQuantity unitCode="EA">1</cbc:CreditedQuantity>
<cbc:LineExtensionAmount currencyID="{currency}">{amount}</cbc:LineExtensionAmount>
<cac:Item><cbc:Name>Kreditert</cbc:Name></cac:Item>
<cac:Price><cbc:PriceAmount currencyID="{currency}">{amount}</cbc:PriceAmount></cac:Price></cac:CreditNoteLine>
</CreditNote>
"""
    return document.encode("utf-8")


def write(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path
