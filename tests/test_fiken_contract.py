"""The Fiken simulator held to Fiken's published API description, so it cannot drift into a
shape the real API never sends.

The facts below are read from Fiken's OpenAPI description of API v2 (Fiken's `swagger.yaml`,
version 2.0.0; a copy is `api/fiken-openapi.yaml` in the `kradalby/fiken-go` repository) and
restated in our own words, each with the schema or operation it comes from. A check fails when
the simulator leaves out a field the spec requires, gives a field another type (amounts are
whole numbers of øre, never kroner with decimals), writes a date in another form, sends a
write-only field in a read, or answers a list without the paging headers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from kravia_sync.testing.fiken import FikenCompany, FikenSimulator, RunningFiken, demo_company

TOKEN = "contract-token-8f3a"
SLUG = "kontrakt-as"
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def today() -> date:
    return datetime.now(ZoneInfo("Europe/Oslo")).date()


# -- the spec's facts, in our words ------------------------------------------------------------
# Each entry: field → (the JSON type the spec gives it, whether the schema lists it required).
# "int" is a whole number (the spec's integer, int64 for amounts: "in cents"), "date" a string
# "format yyyy-mm-dd", "contact"/"address"/"sale"/"payment" the schemas of those names.

# #/components/schemas/creditNoteResult: id, number, the customer, the six amounts (net, VAT
# and gross, each "(in creditNote currency) in cents" and "in NOK (in cents)"), the address and
# the lines are required; "Id of associated invoice", the issue date ("format yyyy-mm-dd"),
# lastModifiedDate, settled, currency and its own sale are optional.
CREDIT_NOTE_RESULT: dict[str, tuple[str, bool]] = {
    "creditNoteId": ("int", True),
    "creditNoteNumber": ("int", True),
    "customer": ("contact", True),
    "net": ("int", True),
    "vat": ("int", True),
    "gross": ("int", True),
    "netInNok": ("int", True),
    "vatInNok": ("int", True),
    "grossInNok": ("int", True),
    "address": ("address", True),
    "lines": ("list", True),
    "kid": ("str", False),
    "creditNoteText": ("str", False),
    "currency": ("str", False),
    "issueDate": ("date", False),
    "lastModifiedDate": ("date", False),
    "settled": ("bool", False),
    "associatedInvoiceId": ("int", False),
    "sale": ("sale", False),
}

# #/components/schemas/invoiceResult: the invoice's id and number, KID, dates "format
# yyyy-mm-dd", net/VAT/gross "in cents", the ISO 4217 currency, the ids of its credit notes
# (`associatedCreditNotes`, an array of integers), its customer typed as a full contact, and
# its sale.
INVOICE_RESULT: dict[str, tuple[str, bool]] = {
    "invoiceId": ("int", True),
    "invoiceNumber": ("int", True),
    "kid": ("str", False),
    "issueDate": ("date", True),
    "dueDate": ("date", True),
    "originalDueDate": ("date", False),
    "net": ("int", True),
    "vat": ("int", True),
    "gross": ("int", True),
    "currency": ("str", False),
    "invoiceText": ("str", False),
    "associatedCreditNotes": ("ids", False),
    "customer": ("contact", True),
    "sale": ("sale", True),
}

# #/components/schemas/saleResult: settled and deleted are booleans, writeOff is "If a loss
# has been registered for this sale", totalPaid is the "Total amount paid in NOK",
# outstandingBalance an integer, salePayments an array of payments, lastModifiedDate
# "format yyyy-mm-dd".
SALE_RESULT: dict[str, tuple[str, bool]] = {
    "saleId": ("int", False),
    "lastModifiedDate": ("date", False),
    "settled": ("bool", False),
    "writeOff": ("bool", False),
    "totalPaid": ("int", False),
    "outstandingBalance": ("int", False),
    "salePayments": ("payments", False),
    "deleted": ("bool", False),
}

# #/components/schemas/payment: "Payment date, format yyyy-mm-dd", the "Account associated
# with payment" and the amount ("Formatted in cents (34000 = 340.00)") are required; its id,
# amountInNok, currency and fee are optional.
PAYMENT: dict[str, tuple[str, bool]] = {
    "paymentId": ("int", False),
    "date": ("date", True),
    "account": ("str", True),
    "amount": ("int", True),
    "amountInNok": ("int", False),
    "currency": ("str", False),
    "fee": ("int", False),
}

# #/components/schemas/contact and #/components/schemas/address: a contact has its id and a
# name; an address requires its country (the spec's example is the English name "Norway").
# phoneNumber and currency are written on a contact, never read back.
CONTACT: dict[str, tuple[str, bool]] = {
    "contactId": ("int", True),
    "name": ("str", True),
    "email": ("str", False),
    "organizationNumber": ("str", False),
    "customerNumber": ("int", False),
    "address": ("address", False),
}
ADDRESS: dict[str, tuple[str, bool]] = {
    "streetAddress": ("str", False),
    "streetAddressLine2": ("str", False),
    "city": ("str", False),
    "postCode": ("str", False),
    "country": ("str", True),
}
WRITE_ONLY_CONTACT_FIELDS = ("phoneNumber", "currency")

# The list operations (GET .../invoices, GET .../creditNotes) answer these headers, each an
# integer; page and pageSize are the query parameters, pageSize at most 100.
PAGING_HEADERS = (
    "Fiken-Api-Page",
    "Fiken-Api-Page-Size",
    "Fiken-Api-Page-Count",
    "Fiken-Api-Result-Count",
)
# GET /companies/{companySlug}/creditNotes takes page, pageSize, issueDate and lastModified
# (each also with Le, Lt, Ge, Gt), customerId and settled: no dueDate, no invoiceNumber.
CREDIT_NOTE_FILTERS = ("issueDate", "issueDateGe", "lastModifiedLt", "customerId", "settled")


# -- checking a value against those facts ------------------------------------------------------


def problems(value: object, schema: Mapping[str, tuple[str, bool]], where: str) -> list[str]:
    """Every way `value` differs from `schema` (empty: it fits)."""
    if not isinstance(value, dict):
        return [f"{where} is {type(value).__name__}, not an object"]
    found: list[str] = []
    for name, (kind, required) in schema.items():
        if name not in value or value[name] is None:
            if required:
                found.append(f"{where}.{name} is required and missing")
            continue
        found.extend(_typed(value[name], kind, f"{where}.{name}"))
    return found


def _typed(item: object, kind: str, where: str) -> list[str]:  # noqa: PLR0911 - one per kind
    if kind == "int":
        ok = type(item) is int
        return [] if ok else [f"{where} = {item!r} is not a whole number (øre)"]
    if kind == "bool":
        return [] if isinstance(item, bool) else [f"{where} = {item!r} is not a boolean"]
    if kind == "str":
        return [] if isinstance(item, str) else [f"{where} = {item!r} is not text"]
    if kind == "date":
        ok = isinstance(item, str) and DATE.match(item) is not None
        return [] if ok else [f"{where} = {item!r} is not a yyyy-mm-dd date"]
    if kind == "list":
        return [] if isinstance(item, list) else [f"{where} is not an array"]
    if kind == "ids":
        ok = isinstance(item, list) and all(type(i) is int for i in item)
        return [] if ok else [f"{where} = {item!r} is not an array of ids"]
    if kind == "payments":
        if not isinstance(item, list):
            return [f"{where} is not an array"]
        return [p for i, one in enumerate(item) for p in problems(one, PAYMENT, f"{where}[{i}]")]
    nested = {"contact": CONTACT, "address": ADDRESS, "sale": SALE_RESULT}[kind]
    found = problems(item, nested, where)
    if kind == "contact" and isinstance(item, dict):
        found += [f"{where}.{n} is write-only" for n in WRITE_ONLY_CONTACT_FIELDS if n in item]
    return found


# -- the simulator, with every kind of record ----------------------------------------------------


@pytest.fixture(scope="module")
def company() -> FikenCompany:
    """A small company with payments and credit notes in full and in part."""
    data = demo_company(invoices=40, customers=8, slug=SLUG)
    on = today()
    for index in (3, 13):
        data.credit(data.invoices[index]["invoiceId"], on=on)
    data.credit(data.invoices[4]["invoiceId"], 12_345, on=on - timedelta(days=2))
    data.pay(data.invoices[6]["invoiceId"], 50_000, on=on)
    return data


@pytest.fixture(scope="module")
def api(company: FikenCompany) -> Iterator[httpx.Client]:
    simulator = FikenSimulator(company, token=TOKEN, requests_per_second=500, burst=100)
    with (
        RunningFiken(simulator) as running,
        httpx.Client(
            base_url=f"{running.base_url}companies/{SLUG}/",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client,
    ):
        yield client


def every(api: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = 0
    while True:
        answer = api.get(path, params={**params, "page": page, "pageSize": 10})
        assert answer.status_code == 200, answer.text
        found += answer.json()
        if page + 1 >= int(answer.headers["Fiken-Api-Page-Count"]):
            return found
        page += 1


class TestShapes:
    def test_credit_notes_are_credit_note_results(self, api: httpx.Client) -> None:
        """Every listed credit note has the required fields of creditNoteResult, amounts as
        whole øre, dates as yyyy-mm-dd, its customer as a contact and its own sale."""
        notes = every(api, "creditNotes")
        assert len(notes) == 3
        found = [p for n in notes for p in problems(n, CREDIT_NOTE_RESULT, "creditNote")]
        assert found == []

    def test_a_credit_note_is_also_read_by_its_id(self, api: httpx.Client) -> None:
        """GET .../creditNotes/{creditNoteId} answers the same creditNoteResult."""
        listed = every(api, "creditNotes")[0]
        one = api.get(f"creditNotes/{listed['creditNoteId']}")
        assert one.status_code == 200
        assert one.json() == listed
        assert api.get("creditNotes/1").status_code == 404

    def test_invoices_are_invoice_results_with_sale_and_payments(self, api: httpx.Client) -> None:
        """Every invoice fits invoiceResult: its sale a saleResult, each sale payment a
        payment (date, account and amount required), associatedCreditNotes an array of ids."""
        invoices = every(api, "invoices")
        found = [p for i in invoices for p in problems(i, INVOICE_RESULT, "invoice")]
        assert found == []
        assert any(i["sale"]["salePayments"] for i in invoices)

    def test_the_customer_field_is_the_full_contact(
        self, api: httpx.Client, company: FikenCompany
    ) -> None:
        """The invoice's (and credit note's) customer is typed as the full contact: it is the
        contact the contacts endpoint answers, write-only fields left out."""
        invoice = every(api, "invoices")[0]
        contact = api.get(f"contacts/{invoice['customer']['contactId']}").json()
        assert invoice["customer"] == contact
        assert problems(contact, CONTACT, "contact") == []
        assert not set(WRITE_ONLY_CONTACT_FIELDS) & set(contact)
        note = every(api, "creditNotes")[0]
        assert note["customer"] == company.contacts[note["customer"]["contactId"]]

    def test_sale_payments_are_read_from_the_payments_endpoint_too(self, api: httpx.Client) -> None:
        """GET .../sales/{saleId}/payments answers the sale's payments, each a payment."""
        paid = next(i for i in every(api, "invoices") if i["sale"]["salePayments"])
        answer = api.get(f"sales/{paid['sale']['saleId']}/payments")
        assert answer.status_code == 200
        assert answer.json() == paid["sale"]["salePayments"]
        assert [p for x in answer.json() for p in problems(x, PAYMENT, "payment")] == []


class TestCreditNotesAndInvoices:
    def test_credit_notes_and_invoices_name_each_other(self, api: httpx.Client) -> None:
        """An invoice's associatedCreditNotes are exactly the credit notes whose
        associatedInvoiceId is that invoice."""
        invoices = {i["invoiceId"]: i for i in every(api, "invoices")}
        for note in every(api, "creditNotes"):
            invoice = invoices[note["associatedInvoiceId"]]
            assert note["creditNoteId"] in invoice["associatedCreditNotes"]
        named = {n for i in invoices.values() for n in i["associatedCreditNotes"]}
        assert named == {n["creditNoteId"] for n in every(api, "creditNotes")}

    def test_the_sale_figures_stay_consistent(self, company: FikenCompany) -> None:
        """Under the simulator's choice for credit notes (they lower the balance), every
        invoice's gross is what was paid, credited and is still outstanding."""
        for invoice in company.invoices:
            sale = invoice["sale"]
            credited = sum(
                n["gross"]
                for n in company.credit_notes
                if n["associatedInvoiceId"] == invoice["invoiceId"]
            )
            paid = sum(p["amount"] for p in sale["salePayments"])
            assert paid == sale["totalPaid"]
            assert sale["outstandingBalance"] + paid + credited == invoice["gross"]
            assert sale["settled"] == (sale["outstandingBalance"] <= 0)


class TestListsAndFilters:
    @pytest.mark.parametrize("path", ["invoices", "creditNotes"])
    def test_lists_answer_the_paging_headers(self, api: httpx.Client, path: str) -> None:
        """Each list answers Fiken-Api-Page, -Page-Size, -Page-Count and -Result-Count as
        integers that add up."""
        answer = api.get(path, params={"page": 0, "pageSize": 2})
        values = {name: int(answer.headers[name]) for name in PAGING_HEADERS}
        assert values["Fiken-Api-Page"] == 0
        assert values["Fiken-Api-Page-Size"] == 2
        total = values["Fiken-Api-Result-Count"]
        assert values["Fiken-Api-Page-Count"] == math.ceil(total / 2)
        assert len(answer.json()) == min(2, total)

    @pytest.mark.parametrize("name", CREDIT_NOTE_FILTERS)
    def test_the_credit_note_filters_of_the_spec_are_taken(
        self, api: httpx.Client, name: str
    ) -> None:
        """Every filter the spec lists for the credit notes is accepted."""
        value = {"customerId": "5000000", "settled": "true"}.get(name, today().isoformat())
        assert api.get("creditNotes", params={name: value}).status_code == 200

    @pytest.mark.parametrize("name", ["dueDate", "invoiceNumber", "associatedInvoiceId", "sort"])
    def test_a_credit_note_filter_the_spec_does_not_list_is_refused(
        self, api: httpx.Client, name: str
    ) -> None:
        """An unknown parameter is a 400, never ignored in silence."""
        answer = api.get("creditNotes", params={name: "1"})
        assert answer.status_code == 400
        assert name in answer.json()["error"]

    def test_the_credit_note_filters_select(self, api: httpx.Client) -> None:
        """issueDate and lastModified bounds select as the spec describes them."""
        now = today().isoformat()
        assert len(every(api, "creditNotes", issueDateGe=now)) == 2
        assert len(every(api, "creditNotes", lastModifiedLt=now)) == 1
        assert every(api, "creditNotes", settled="false") == []

    def test_a_page_beyond_100_is_refused(self, api: httpx.Client) -> None:
        """pageSize is at most 100."""
        assert api.get("creditNotes", params={"pageSize": 101}).status_code == 400
