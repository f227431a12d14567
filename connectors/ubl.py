# (the project has no copyright header convention; every module trips CPY001)
"""UBL 2.1 invoices and credit notes (EHF 3.0 / PEPPOL BIS Billing 3.0) as flat canonical records.

Pure: bytes in, values out. No file or network access happens here; the folder connector reads
the files and decides what becomes a record.

* `parse(data, source=...)` reads one document safely (defusedxml: no DTD, so no entity
  expansion and no external entity; ElementTree never fetches anything) and maps it with
  namespaced paths: an `Invoice` becomes a `UblInvoice` with the canonical record fields; a
  `CreditNote`, or an `Invoice` with a negative amount due that names the invoice it corrects,
  becomes a `Credit`. What cannot be used raises `UblError` naming the field and the element.
* `apply_credits(invoices, credits)` nets each credit against the invoice it names.
* `embedded_pdf(data, index)` decodes an embedded PDF attachment when it is needed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import fromstring

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "Credit",
    "EmbeddedPdf",
    "Problem",
    "UblError",
    "UblInvoice",
    "apply_credits",
    "embedded_pdf",
    "parse",
]

_UBL = "urn:oasis:names:specification:ubl:schema:xsd:"
NS = {"cbc": f"{_UBL}CommonBasicComponents-2", "cac": f"{_UBL}CommonAggregateComponents-2"}
INVOICE = f"{{{_UBL}Invoice-2}}Invoice"
CREDIT_NOTE = f"{{{_UBL}CreditNote-2}}CreditNote"
NORWEGIAN_ORGNR = "0192"  # the PEPPOL identifier scheme of the Norwegian organisation number
PDF_MIME = "application/pdf"

_BUYER = "cac:AccountingCustomerParty/cac:Party"
_ADDRESS = f"{_BUYER}/cac:PostalAddress"
_PAYABLE = "cac:LegalMonetaryTotal/cbc:PayableAmount"
_ADDRESS_LINES = "cac:PostalAddress/cac:AddressLine/cbc:Line"
_BILLING_REFERENCE = "cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID"
_ATTACHMENTS = "cac:AdditionalDocumentReference/cac:Attachment/cbc:EmbeddedDocumentBinaryObject"
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")  # xs:decimal (a value, not XML)
_XS_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:Z|[+-]\d{2}:\d{2})?")  # xs:date, optional zone

# Where each required canonical field comes from, for the reason when it is missing.
_SOURCES = {
    "invoice_number": "cbc:ID",
    "invoice_date": "cbc:IssueDate",
    "amount": _PAYABLE,
    "debtor_name": f"{_BUYER}/cac:PartyLegalEntity/cbc:RegistrationName or cac:PartyName/cbc:Name",
    "address_line1": f"{_ADDRESS}/cbc:StreetName",
    "postal_code": f"{_ADDRESS}/cbc:PostalZone",
    "city": f"{_ADDRESS}/cbc:CityName",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a document, or the invoice a credit points at, cannot be used: field and reason."""

    field: str
    reason: str


class UblError(ValueError):
    """A document that cannot be read as a UBL invoice or credit note."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.problem = Problem(field, reason)


@dataclass(frozen=True, slots=True)
class EmbeddedPdf:
    """The `index`-th embedded PDF attachment of a document (0 is the first), not decoded."""

    index: int
    filename: str | None


@dataclass(frozen=True, slots=True)
class UblInvoice:
    """An invoice: its canonical record fields (`amount` is the amount due, `PayableAmount`)."""

    number: str
    fields: Mapping[str, object]
    amount: Decimal
    currency: str
    pdf: EmbeddedPdf | None
    source: str = ""  # a name for messages (the file)


@dataclass(frozen=True, slots=True)
class Credit:
    """A credit note, or a corrective invoice with a negative amount due, against invoices.

    `amount` is what it takes off, positive for a real credit (a credit note's `PayableAmount`,
    or minus a corrective invoice's)."""

    kind: str  # "credit note" or "corrective invoice"
    number: str
    invoices: tuple[str, ...]
    amount: Decimal
    currency: str
    source: str = ""
    issued: date | None = None

    @property
    def label(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"{self.kind} {self.number}{where}"


# -- parsing -------------------------------------------------------------------------------


def parse(data: bytes, *, source: str = "") -> UblInvoice | Credit:
    """Read one UBL document; raise `UblError` for anything that cannot be used."""
    root = _safe_root(data)
    if root.tag == INVOICE:
        return _invoice(root, source)
    if root.tag == CREDIT_NOTE:
        return _credit_note(root, source)
    raise UblError(
        "file",
        f"not a UBL 2.1 Invoice or CreditNote (EHF / PEPPOL BIS Billing 3.0): the root "
        f"element is {_readable_tag(root.tag)}",
    )


def embedded_pdf(data: bytes, index: int) -> bytes:
    """The decoded bytes of the `index`-th embedded PDF attachment of the document `data`."""
    attachments = _pdf_attachments(_safe_root(data))
    if index >= len(attachments):
        raise UblError("document", "the embedded PDF is no longer in the file")
    text = "".join((attachments[index].text or "").split())
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UblError("document", "the embedded PDF is not valid base64") from None


def _safe_root(data: bytes) -> Element:
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden:
        reason = (
            "refused: the XML has a document type declaration (<!DOCTYPE …>), which EHF "
            "documents never have; it can define entities that read local files or expand "
            "without limit"
        )
    except (EntitiesForbidden, ExternalReferenceForbidden):  # only reachable without a DTD ban
        reason = "refused: the XML declares entities or external references"
    except ParseError as exc:
        reason = f"not well-formed XML: {exc}"
    raise UblError("file", reason)


def _readable_tag(tag: str) -> str:
    namespace, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return f"<{local}> in namespace {namespace}" if namespace else f"<{local}> (no namespace)"


def _invoice(root: Element, source: str) -> UblInvoice | Credit:
    number = _number(root)
    amount, currency = _amount_due(root)
    references = _billing_references(root)
    if amount < 0 and references:
        issued = _date(root, "cbc:IssueDate", "invoice_date")
        return Credit("corrective invoice", number, references, -amount, currency, source, issued)
    fields: dict[str, object] = {
        "invoice_number": number,
        "invoice_date": _date(root, "cbc:IssueDate", "invoice_date"),
        "due_date": _due_date(root),
        "amount": amount,
        "currency": currency,
        **_buyer(root),
    }
    missing = [name for name in _SOURCES if fields.get(name) is None]
    if missing:
        where = "; ".join(f"{name} ({_SOURCES[name]})" for name in missing)
        raise UblError(missing[0], f"missing in the document: {where}")
    pdfs = _pdf_attachments(root)
    pdf = EmbeddedPdf(0, _safe_filename(pdfs[0].get("filename"))) if pdfs else None
    return UblInvoice(number, fields, amount, currency, pdf, source)


def _credit_note(root: Element, source: str) -> Credit:
    number = _number(root)
    amount, currency = _amount_due(root)
    issued = _date(root, "cbc:IssueDate", "invoice_date")
    references = _billing_references(root)
    return Credit("credit note", number, references, amount, currency, source, issued)


def _number(root: Element) -> str:
    number = _text(root, "cbc:ID")
    if number is None:
        raise UblError("invoice_number", "missing in the document: the document number (cbc:ID)")
    return number


def _amount_due(root: Element) -> tuple[Decimal, str]:
    """`PayableAmount` (the total less what was paid in advance) and its currency."""
    element = root.find(_PAYABLE, NS)
    text = _clean(element.text if element is not None else None)
    if element is None or text is None:
        raise UblError("amount", f"missing in the document: the amount due ({_PAYABLE})")
    if not _DECIMAL.fullmatch(text):
        raise UblError("amount", f"{_PAYABLE} {text!r} is not a decimal number")
    try:
        amount = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern guards this
        raise UblError("amount", f"{_PAYABLE} {text!r} is not a decimal number") from None
    currency = _clean(element.get("currencyID"))
    document_currency = _text(root, "cbc:DocumentCurrencyCode")
    if currency and document_currency and currency.upper() != document_currency.upper():
        reason = (
            f"the amount due is in {currency} but the document currency "
            f"(cbc:DocumentCurrencyCode) is {document_currency}"
        )
        raise UblError("currency", reason)
    currency = currency or document_currency
    if currency is None:
        reason = f"no currency: neither {_PAYABLE}/@currencyID nor cbc:DocumentCurrencyCode"
        raise UblError("currency", reason)
    return amount, currency


def _billing_references(root: Element) -> tuple[str, ...]:
    found = (_clean(element.text) for element in root.findall(_BILLING_REFERENCE, NS))
    return tuple(dict.fromkeys(number for number in found if number))  # unique, in order


def _due_date(root: Element) -> date:
    """`cbc:DueDate`, else the first `cac:PaymentMeans/cbc:PaymentDueDate` (EHF 2 put it there)."""
    due = _date(root, "cbc:DueDate", "due_date")
    if due is None:
        for means in root.findall("cac:PaymentMeans", NS):
            due = _date(means, "cbc:PaymentDueDate", "due_date", "cac:PaymentMeans/")
            if due is not None:
                break
    if due is None:
        reason = (
            "the invoice has no due date: neither cbc:DueDate nor "
            "cac:PaymentMeans/cbc:PaymentDueDate is given"
        )
        raise UblError("due_date", reason)
    return due


def _date(parent: Element, path: str, field: str, prefix: str = "") -> date | None:
    """The xs:date at `path` (a time zone suffix is dropped), None if absent."""
    text = _text(parent, path)
    if text is None:
        return None
    match = _XS_DATE.fullmatch(text)
    parsed = None
    if match is not None:
        with contextlib.suppress(ValueError):  # 2025-02-30
            parsed = date.fromisoformat(match.group(1))
    if parsed is None:
        raise UblError(field, f"{prefix}{path} {text!r} is not a date (YYYY-MM-DD)")
    return parsed


def _buyer(root: Element) -> dict[str, object]:
    """The buyer's canonical fields; those the document does not give are left out."""
    customer = root.find("cac:AccountingCustomerParty", NS)
    party = customer.find("cac:Party", NS) if customer is not None else None
    if customer is None or party is None:
        raise UblError("debtor_name", f"missing in the document: the buyer ({_BUYER})")
    organization_number, registered = _organization_number(party)
    found = [
        _text(party, "cac:PostalAddress/cbc:StreetName"),
        _text(party, "cac:PostalAddress/cbc:AdditionalStreetName"),
        *(_clean(line.text) for line in party.findall(_ADDRESS_LINES, NS)),
    ]
    lines = [line for line in found if line]
    fields: dict[str, object | None] = {
        "debtor_name": _text(party, "cac:PartyLegalEntity/cbc:RegistrationName")
        or _text(party, "cac:PartyName/cbc:Name"),
        "debtor_type": "business" if registered else "private",
        "organization_number": organization_number,
        "debtor_number": _customer_number(customer, party),
        "debtor_email": _text(party, "cac:Contact/cbc:ElectronicMail"),
        "address_line1": lines[0] if lines else None,
        "address_line2": ", ".join(lines[1:]) or None,
        "postal_code": _text(party, "cac:PostalAddress/cbc:PostalZone"),
        "city": _text(party, "cac:PostalAddress/cbc:CityName"),
        "country": _text(party, "cac:PostalAddress/cac:Country/cbc:IdentificationCode"),
    }
    return {name: value for name, value in fields.items() if value is not None}


def _organization_number(party: Element) -> tuple[str | None, bool]:
    """The buyer's Norwegian organisation number, and whether the buyer is a registered
    business at all (a legal registration, Norwegian or not, or a Norwegian number).

    In order: the legal registration (`cac:PartyLegalEntity/cbc:CompanyID`) in scheme 0192 or
    without a scheme; the electronic address or a party identifier in scheme 0192; a Norwegian
    VAT number `NO<9 digits>MVA`.
    """
    registrations = party.findall("cac:PartyLegalEntity/cbc:CompanyID", NS)
    for element in registrations:
        scheme = _clean(element.get("schemeID"))
        if scheme in {None, NORWEGIAN_ORGNR} and (value := _clean(element.text)):
            return value, True
    for path in ("cbc:EndpointID", "cac:PartyIdentification/cbc:ID"):
        for element in party.findall(path, NS):
            value = _clean(element.text)
            if value and _clean(element.get("schemeID")) == NORWEGIAN_ORGNR:
                return value, True
    for element in party.findall("cac:PartyTaxScheme/cbc:CompanyID", NS):
        vat = (_clean(element.text) or "").upper().replace(" ", "")
        digits = vat.removeprefix("NO").removesuffix("MVA")
        if vat == f"NO{digits}MVA" and len(digits) == 9 and digits.isdigit():
            return digits, True
    return None, any(_clean(element.text) for element in registrations)


def _customer_number(customer: Element, party: Element) -> str | None:
    """The seller's customer number for the buyer: `cbc:SupplierAssignedAccountID`, else a
    buyer identifier without a scheme (identifiers with one are registry numbers)."""
    assigned = _text(customer, "cbc:SupplierAssignedAccountID")
    if assigned is not None:
        return assigned
    for element in party.findall("cac:PartyIdentification/cbc:ID", NS):
        if element.get("schemeID") is None and (value := _clean(element.text)):
            return value
    return None


def _pdf_attachments(root: Element) -> list[Element]:
    return [
        element
        for element in root.findall(_ATTACHMENTS, NS)
        if (element.get("mimeCode") or "").strip().lower() == PDF_MIME
    ]


def _safe_filename(name: str | None) -> str | None:
    """The attachment's file name without any directory part, or None."""
    cleaned = _clean(name)
    if cleaned is None:
        return None
    base = cleaned.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return base if base not in {"", ".", ".."} else None


def _text(parent: Element, path: str) -> str | None:
    element = parent.find(path, NS)
    return None if element is None else _clean(element.text)


def _clean(text: str | None) -> str | None:
    """Text with runs of white space made one space; None when nothing is left."""
    if text is None:
        return None
    cleaned = " ".join(text.split())
    return cleaned or None


# -- netting credits -----------------------------------------------------------------------


@dataclass(slots=True)
class _Ledger:
    invoice: UblInvoice
    credits: list[Credit] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


def apply_credits(
    invoices: Sequence[UblInvoice], credit_documents: Sequence[Credit]
) -> tuple[list[Mapping[str, object] | Problem], list[Problem | None]]:
    """Net each credit against the invoice it names (by invoice number).

    Returns, in the order given: per invoice, its record fields (the amount less its credits,
    the description saying so) or the problem that keeps it from being sent; per credit, None
    when it was netted, else why not. An invoice is never sent for more than is owed: one that
    a credit names but cannot be netted against (another currency, several invoices in one
    credit) is held back with the reason; one credited in full is not sent.
    """
    ledgers = [_Ledger(invoice) for invoice in invoices]
    by_number: dict[str, list[_Ledger]] = {}
    for ledger in ledgers:
        by_number.setdefault(ledger.invoice.number, []).append(ledger)
    outcomes = [_apply(credit, by_number) for credit in credit_documents]
    return [_netted(ledger) for ledger in ledgers], outcomes


def _apply(credit: Credit, by_number: Mapping[str, list[_Ledger]]) -> Problem | None:
    if not credit.invoices:
        reason = f"the {credit.kind} does not name the invoice it credits ({_BILLING_REFERENCE})"
        return Problem("credit_note", reason)
    present = [number for number in credit.invoices if number in by_number]
    if len(credit.invoices) > 1:
        for number in present:
            for ledger in by_number[number]:
                ledger.blocked.append(
                    f"{credit.label} credits it together with other invoices "
                    f"({', '.join(credit.invoices)}): how much of it applies here is not known"
                )
        reason = (
            f"the {credit.kind} credits several invoices ({', '.join(credit.invoices)}): how much "
            "applies to each is not known; net it in the accounting system"
        )
        return Problem("credit_note", reason)
    if not present:
        reason = (
            f"credits invoice {credit.invoices[0]}, which is not among the EHF invoices read from "
            "the folder; it was not netted against anything"
        )
        return Problem("credit_note", reason)
    if credit.amount <= 0:
        reason = f"the {credit.kind} credits {credit.amount} {credit.currency}: nothing to net"
        return Problem("amount", reason)
    for ledger in by_number[present[0]]:
        if credit.currency.upper() != ledger.invoice.currency.upper():
            ledger.blocked.append(
                f"{credit.label} is in {credit.currency} but the invoice is in "
                f"{ledger.invoice.currency}: they cannot be netted"
            )
        else:
            ledger.credits.append(credit)
    return None


def _netted(ledger: _Ledger) -> Mapping[str, object] | Problem:
    invoice = ledger.invoice
    if ledger.blocked:
        return Problem("amount", "; ".join(ledger.blocked))
    if not ledger.credits:
        return invoice.fields
    left = invoice.amount - sum((credit.amount for credit in ledger.credits), Decimal(0))
    if left <= 0:  # for a person: which files
        summary = _summary(invoice, ledger.credits, left, files=True)
        return Problem("amount", f"credited in full, nothing to collect: {summary}")
    description = _summary(invoice, ledger.credits, left, files=False)  # sent to Kravia
    return {**invoice.fields, "amount": left, "description": description}


def _summary(invoice: UblInvoice, credits_: Sequence[Credit], left: Decimal, *, files: bool) -> str:
    """`1000.00 NOK less credit note K1 (250.00) = 750.00 NOK`, with the files if asked."""
    less = ", ".join(
        f"{credit.kind} {credit.number} "
        + (f"({credit.amount}, in {credit.source})" if files else f"({credit.amount})")
        for credit in credits_
    )
    return f"{invoice.amount} {invoice.currency} less {less} = {left} {invoice.currency}"
