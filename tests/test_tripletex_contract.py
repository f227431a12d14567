"""The Tripletex simulator against the facts of Tripletex's published description.

The spec: repository `valuetechdev/tripletex-go`, path `api/openapi.json` (Tripletex's own
`openapi.json`). The fixtures below restate what it says, in our words, section by section;
the simulator's answers are checked against them so that it cannot drift from the API the
connector will meet.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kravia_sync.testing._tripletex_data import oslo_today
from kravia_sync.testing.tripletex import (
    RunningTripletex,
    TripletexCompany,
    TripletexSimulator,
    demo_company,
)

CONSUMER = "consumer-Tq8Rw2"
EMPLOYEE = "employee-Lm5Zx9"
CONNECTOR_FIELDS = (
    "*,currency(code),customer(*,postalAddress(*,country(*)))"  # the brief's own form
)

# info.description, "Response envelope": a list answers these five members; fullResultSize
# is "[DEPRECATED]" and (ListResponse* schemas) "Note: The value is not exact"; versionDigest
# is a "Hash of full result, null if no result".
LIST_ENVELOPE = {
    "fullResultSize": int,
    "from": int,
    "count": int,
    "versionDigest": (str, type(None)),
    "values": list,
}
# info.description, "Error/warning envelope": the members of every error answer.
ERROR_ENVELOPE = {
    "status",
    "code",
    "message",
    "link",
    "developerMessage",
    "validationMessages",
    "requestId",
}
# components.schemas.Invoice: the members the connector reads and their JSON types. Required:
# invoiceDate, invoiceDueDate, orders. invoiceNumber is an integer; creditedInvoice an integer
# ("The id of the original invoice if this is a credit note"); the amounts are numbers
# ("amount": "In the company's currency, typically NOK"; amountOutstanding "excluding reminders
# and any existing remits"); currency and customer are references ($ref Currency, Customer).
INVOICE_TYPES: dict[str, Any] = {
    "id": int,
    "invoiceNumber": int,
    "invoiceDate": str,
    "invoiceDueDate": str,
    "kid": str,
    "amount": (int, float),
    "amountCurrency": (int, float),
    "amountOutstanding": (int, float),
    "amountCurrencyOutstanding": (int, float),
    "amountOutstandingTotal": (int, float),
    "isCreditNote": bool,
    "isCredited": bool,
    "creditedInvoice": (int, type(None)),
    "orders": list,
}
INVOICE_REQUIRED = ("invoiceDate", "invoiceDueDate", "orders")
INVOICE_REFERENCES = ("customer", "currency", "voucher")
# components.schemas.Customer (the members read): organizationNumber is a string,
# customerNumber an integer, isPrivateIndividual a boolean; postalAddress is $ref Address.
CUSTOMER_TYPES: dict[str, Any] = {
    "name": str,
    "organizationNumber": str,
    "customerNumber": int,
    "isPrivateIndividual": bool,
    "email": str,
    "invoiceEmail": str,
    "overdueNoticeEmail": str,
    "postalAddress": dict,
}
# components.schemas.Address: four strings and $ref Country; Country: isoAlpha2Code, "The ISO
# 3166-1 Alpha2 code of the country (2 letters)".
ADDRESS_TYPES = {"addressLine1": str, "addressLine2": str, "postalCode": str, "city": str}
# info.description, "Rate limiting": the three headers of every answer.
RATE_HEADERS = ("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset")


def basic(token: str, user: str = "0") -> dict[str, str]:
    """info.description, "Authentication": Basic, `<company id or 0>:<session token>`."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


@pytest.fixture
def company() -> TripletexCompany:
    return demo_company(invoices=60, customers=12)


@pytest.fixture
def server(company: TripletexCompany) -> Iterator[tuple[TripletexSimulator, httpx.Client]]:
    simulator = TripletexSimulator(
        company, consumer_token=CONSUMER, employee_token=EMPLOYEE, limit=10_000
    )
    with (
        RunningTripletex(simulator) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        yield simulator, client


def session(client: httpx.Client, days: int = 1) -> str:
    expires = (oslo_today() + timedelta(days=days)).isoformat()
    answer = client.put(
        "token/session/:create",
        params={"consumerToken": CONSUMER, "employeeToken": EMPLOYEE, "expirationDate": expires},
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["value"]["token"]
    assert isinstance(token, str)
    assert token
    return str(token)


def window(company: TripletexCompany) -> dict[str, str]:
    dates = [date.fromisoformat(i["invoiceDate"]) for i in company.invoices]
    return {
        "invoiceDateFrom": min(dates).isoformat(),
        "invoiceDateTo": (max(dates) + timedelta(days=1)).isoformat(),
    }


def decimals(response: httpx.Response) -> Any:
    return json.loads(response.content, parse_float=Decimal)


class TestSessions:
    def test_a_session_is_created_without_an_auth_header_and_used_as_basic_password(
        self, server: tuple[TripletexSimulator, httpx.Client]
    ) -> None:
        """ "sessionToken is the token from /token/session/:create which requires a
        consumerToken and an employeeToken … but not an authentication header"."""
        simulator, client = server
        token = session(client)
        assert simulator.session_requests[-1]["authorization"] == ""

        assert client.get("invoice/3000001", headers=basic(token)).status_code == 200
        assert client.get("invoice/3000001", headers=basic(token, "")).status_code == 200
        assert client.get("invoice/3000001").status_code == 401
        assert client.get("invoice/3000001", headers=basic("not-a-session")).status_code == 401
        assert client.get("invoice/3000001", headers=basic(token, "999")).status_code == 401

    def test_wrong_tokens_and_dates_are_refused(
        self, server: tuple[TripletexSimulator, httpx.Client]
    ) -> None:
        _simulator, client = server
        tomorrow = (oslo_today() + timedelta(days=1)).isoformat()
        wrong = client.put(
            "token/session/:create",
            params={"consumerToken": CONSUMER, "employeeToken": "x", "expirationDate": tomorrow},
        )
        no_date = client.put(
            "token/session/:create",
            params={"consumerToken": CONSUMER, "employeeToken": EMPLOYEE},
        )
        assert wrong.status_code == 403
        assert no_date.status_code == 400
        assert set(wrong.json()) == ERROR_ENVELOPE

    def test_an_ended_session_is_refused(
        self, server: tuple[TripletexSimulator, httpx.Client]
    ) -> None:
        simulator, client = server
        token = session(client)
        simulator.expire_sessions(after=1)
        assert client.get("invoice/3000001", headers=basic(token)).status_code == 200
        assert client.get("invoice/3000001", headers=basic(token)).status_code == 401
        assert client.get("invoice/3000001", headers=basic(session(client))).status_code == 200


class TestInvoiceList:
    def test_the_date_window_is_required_and_unknown_parameters_are_refused(
        self, server: tuple[TripletexSimulator, httpx.Client], company: TripletexCompany
    ) -> None:
        """GET /invoice: invoiceDateFrom and invoiceDateTo are `required: true`."""
        _simulator, client = server
        auth = basic(session(client))
        whole = window(company)
        for missing in ("invoiceDateFrom", "invoiceDateTo"):
            params = {k: v for k, v in whole.items() if k != missing}
            answer = client.get("invoice", params=params, headers=auth)
            assert answer.status_code == 400
            assert set(answer.json()) == ERROR_ENVELOPE
            assert missing in answer.json()["message"]
        unknown = client.get("invoice", params={**whole, "settled": "false"}, headers=auth)
        assert unknown.status_code == 400
        assert "settled" in unknown.json()["message"]
        bad = client.get("invoice", params={**whole, "invoiceDateTo": "31.12.2024"}, headers=auth)
        assert bad.status_code == 400

    def test_the_list_envelope_and_paging_with_from_and_count(
        self, server: tuple[TripletexSimulator, httpx.Client], company: TripletexCompany
    ) -> None:
        """`from` is the offset, `count` the page size; pages add up to the whole list."""
        _simulator, client = server
        auth = basic(session(client))
        seen: list[int] = []
        digests: set[object] = set()
        start = 0
        while True:
            answer = client.get(
                "invoice", params={**window(company), "from": start, "count": 25}, headers=auth
            )
            body = answer.json()
            assert set(body) == set(LIST_ENVELOPE)
            for name, kind in LIST_ENVELOPE.items():
                assert isinstance(body[name], kind), name
            assert body["from"] == start
            assert body["count"] == len(body["values"]) <= 25
            digests.add(body["versionDigest"])
            seen.extend(value["id"] for value in body["values"])
            if body["count"] < 25:
                break
            start += body["count"]
        assert seen == sorted(i["id"] for i in company.invoices)
        assert len(digests) == 1  # the list did not change

    def test_invoice_date_from_is_inclusive_and_to_exclusive(
        self, server: tuple[TripletexSimulator, httpx.Client], company: TripletexCompany
    ) -> None:
        _simulator, client = server
        auth = basic(session(client))
        day = company.invoices[5]["invoiceDate"]
        after = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        on_day = {i["id"] for i in company.invoices if i["invoiceDate"] == day}

        inside = client.get(
            "invoice", params={"invoiceDateFrom": day, "invoiceDateTo": after}, headers=auth
        ).json()
        empty = client.get(
            "invoice", params={"invoiceDateFrom": day, "invoiceDateTo": day}, headers=auth
        ).json()

        assert {v["id"] for v in inside["values"]} == on_day
        assert empty["values"] == []
        assert empty["versionDigest"] is None

    def test_without_fields_every_referenced_object_is_id_and_url(
        self, server: tuple[TripletexSimulator, httpx.Client], company: TripletexCompany
    ) -> None:
        """The Fields section: "just `project` returns "project": {"id": …, "url": …}"."""
        _simulator, client = server
        answer = client.get("invoice", params=window(company), headers=basic(session(client)))
        for value in answer.json()["values"]:
            for name in INVOICE_REFERENCES:
                assert set(value[name]) == {"id", "url"}, name
            assert all(set(order) == {"id", "url"} for order in value["orders"])
            for name in INVOICE_REQUIRED:
                assert value[name] is not None

    def test_the_connectors_fields_expression_brings_the_customer_level_by_level(
        self, server: tuple[TripletexSimulator, httpx.Client], company: TripletexCompany
    ) -> None:
        """`customer(*,postalAddress(*,country(*)))`: each named level expanded; what is not
        named (the customer's own currency, the invoice's voucher) stays {id, url};
        `currency(code)` brings the code alone."""
        _simulator, client = server
        params = {**window(company), "fields": CONNECTOR_FIELDS}
        answer = client.get("invoice", params=params, headers=basic(session(client)))
        values = answer.json()["values"]
        assert values
        for value in values:
            for name, kind in INVOICE_TYPES.items():
                assert isinstance(value[name], kind), name
            assert set(value["currency"]) == {"code"}
            assert set(value["voucher"]) == {"id", "url"}
            customer = value["customer"]
            for name, kind in CUSTOMER_TYPES.items():
                assert isinstance(customer[name], kind), name
            assert set(customer["currency"]) == {"id", "url"}
            address = customer["postalAddress"]
            for name, kind in ADDRESS_TYPES.items():
                assert isinstance(address[name], kind), name
            country = address["country"]
            assert isinstance(country["isoAlpha2Code"], str)
            assert len(country["isoAlpha2Code"]) == 2
            date.fromisoformat(value["invoiceDate"])  # "Date … the format YYYY-MM-DD"
            date.fromisoformat(value["invoiceDueDate"])

    def test_a_named_sub_field_list_brings_only_those(
        self, server: tuple[TripletexSimulator, httpx.Client], company: TripletexCompany
    ) -> None:
        """ "`project(name)` returns "project": {"name": …}"; an unknown field is refused."""
        _simulator, client = server
        auth = basic(session(client))
        params = {**window(company), "fields": "id,customer(name)"}
        values = client.get("invoice", params=params, headers=auth).json()["values"]
        assert all(set(v) == {"id", "customer"} and set(v["customer"]) == {"name"} for v in values)
        params = {**window(company), "fields": "id,noSuchField"}
        assert client.get("invoice", params=params, headers=auth).status_code == 400

    def test_amounts_are_decimal_kroner_not_ore(
        self, server: tuple[TripletexSimulator, httpx.Client], company: TripletexCompany
    ) -> None:
        """The amounts are `type: number` in the currency (not whole øre, unlike Fiken)."""
        _simulator, client = server
        answer = client.get("invoice", params=window(company), headers=basic(session(client)))
        by_id = {i["id"]: i for i in company.invoices}
        fractional = 0
        for value in decimals(answer)["values"]:
            amount = Decimal(value["amount"])
            assert amount == by_id[value["id"]]["amount"]
            assert -amount.as_tuple().exponent <= 2  # at most two decimals: kroner and øre
            fractional += amount != amount.to_integral_value()
            outstanding = Decimal(value["amountOutstanding"])
            assert outstanding <= abs(amount)
        assert fractional > 0

    def test_a_credit_note_names_the_invoice_it_credits(
        self, server: tuple[TripletexSimulator, httpx.Client], company: TripletexCompany
    ) -> None:
        _simulator, client = server
        answer = client.get("invoice", params=window(company), headers=basic(session(client)))
        values = {v["id"]: v for v in decimals(answer)["values"]}
        notes = [v for v in values.values() if v["isCreditNote"]]
        assert notes
        for note in notes:
            original = values[note["creditedInvoice"]]
            assert original["isCredited"] is True
            assert not original["isCreditNote"]
            assert note["amount"] < 0


class TestOneInvoiceAndItsPdf:
    def test_a_single_value_envelope_and_the_pdf(
        self, server: tuple[TripletexSimulator, httpx.Client], company: TripletexCompany
    ) -> None:
        """ "Single value": {"value": {…}}; GET /invoice/{invoiceId}/pdf."""
        _simulator, client = server
        auth = basic(session(client))
        invoice_id = company.invoices[0]["id"]
        single = client.get(f"invoice/{invoice_id}", headers=auth).json()
        pdf = client.get(f"invoice/{invoice_id}/pdf", headers=auth)
        assert set(single) == {"value"}
        assert single["value"]["id"] == invoice_id
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF")
        assert client.get("invoice/1/pdf", headers=auth).status_code == 404


class TestRateLimit:
    def test_the_headers_count_down_and_past_the_limit_every_call_is_429(
        self, company: TripletexCompany
    ) -> None:
        """ "Once the rate limit is hit, all requests will return HTTP status code 429 for the
        remainder of the current period." Reset: "The number of seconds left"."""
        simulator = TripletexSimulator(
            company, consumer_token=CONSUMER, employee_token=EMPLOYEE, limit=4, period_seconds=1
        )
        with (
            RunningTripletex(simulator) as running,
            httpx.Client(base_url=running.base_url) as client,
        ):
            time.sleep(0.05)
            auth = basic(session(client))
            answers = [client.get("invoice/3000001", headers=auth) for _ in range(5)]
            for answer in answers:
                for name in RATE_HEADERS:
                    assert name in answer.headers
            statuses = [a.status_code for a in answers]
            remaining = [int(a.headers["X-Rate-Limit-Remaining"]) for a in answers]
            reset = int(answers[-1].headers["X-Rate-Limit-Reset"])
            time.sleep(1.05)
            after = client.get("invoice/3000001", headers=auth)

        assert statuses == [200, 200, 200, 429, 429]
        assert remaining == [2, 1, 0, 0, 0]  # the session create used the first
        assert answers[0].headers["X-Rate-Limit-Limit"] == "4"
        assert 0 <= reset <= 1
        assert after.status_code == 200
