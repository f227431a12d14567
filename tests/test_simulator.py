"""The local Kravia simulator, exercised over real HTTP with httpx."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import inspect
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar, get_args, get_type_hints

import httpx
import pytest

from kravia_sync.cli import setup as cli
from kravia_sync.testing._dropped import ConnectionDroppedError
from kravia_sync.testing.simulator import (
    FIRST_CASE_ID,
    FIRST_SETTLEMENT_ID,
    OPERATIONS,
    DetailsShape,
    Faults,
    RunningSimulator,
    SearchShape,
    Shape,
    Simulator,
)

TOKEN = "sim-secret-token"
CREDITOR = 10759
PDF = b"%PDF-1.4\n" + bytes(range(256)) + b"\n\r\n%%EOF\n"
DOTNET_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}")
TRACE_ID = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00")
JSON_TRUE: Any = True

GUIDE_EXAMPLE: dict[str, Any] = {
    "claimType": "CollectionCase",
    "creditorId": 10759,
    "accountingInvoiceId": None,
    "debtorName": "John Doe",
    "debtorNumber": "10001",
    "email": "kevcaballero@gmail.com",
    "ssn": None,
    "organizationNumber": None,
    "isPrivateIndividual": "true",
    "postalAddress": {
        "addressAddressLine1": "Karl Johan Gate",
        "addressPostalCode": "1000",
        "addressCity": "Oslo",
        "addressCountryCode": "NO",
    },
    "invoiceNo": "20003",
    "invoiceDate": "2025-01-01",
    "dueDate": "2025-02-01",
    "originalAmount": 2250,
    "currencyCode": "NOK",
    "description": "Invoice XYZ to collection",
}


def guide_body(**overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(GUIDE_EXAMPLE)
    body.update(overrides)
    return body


def exact_json(value: Any) -> bytes:
    """JSON with Decimals written as exact numbers (httpx's json= cannot encode them)."""

    def mark(obj: object) -> str:
        if isinstance(obj, Decimal):
            return f"@@{obj}@@"
        raise TypeError(type(obj).__name__)

    return re.sub(r'"@@(-?[0-9.E+-]+)@@"', r"\1", json.dumps(value, default=mark)).encode()


def loads(response: httpx.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal)


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSimulator]:
    with RunningSimulator(Simulator(token=TOKEN, creditor_id=CREDITOR)) as served:
        yield served


@pytest.fixture
def sim(running: RunningSimulator) -> Simulator:
    running.simulator.reset()
    running.simulator.shape = Shape()  # reset keeps the shape: it is configuration
    return running.simulator


@pytest.fixture
def api(running: RunningSimulator, sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.base_url, headers={"Authorization": TOKEN}, timeout=5) as c:
        yield c


@pytest.fixture
def control(running: RunningSimulator, sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.root_url, timeout=5) as c:
        yield c


def register(api: httpx.Client, **overrides: Any) -> int:
    response = api.post(
        "invoice/register",
        content=exact_json(guide_body(**overrides)),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    case_id = response.json()["id"]
    assert isinstance(case_id, int)
    return case_id


def upload(api: httpx.Client, case_id: int, content: bytes = PDF) -> httpx.Response:
    return api.post(
        f"invoice/{case_id}/document",
        params={"type": "Invoice"},
        files={"file": ("invoice-20003.pdf", content, "application/pdf")},
    )


def start(api: httpx.Client, case_id: int, action: str = "Start") -> httpx.Response:
    return api.post(
        f"invoice/{case_id}/action", params={"action": action}, json={"Message": "Go ahead"}
    )


def search(api: httpx.Client, **params: Any) -> dict[str, Any]:
    query = {"byAscending": "True", "orderBy": 11, "skip": 0, "top": 20, **params}
    query = {key: value for key, value in query.items() if value is not None}
    response = api.get("invoice/search", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = loads(response)
    return body


def assert_validation_problem(response: httpx.Response, *keys: str) -> dict[str, list[str]]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == "https://tools.ietf.org/html/rfc9110#section-15.5.1"
    assert body["title"] == "One or more validation errors occurred."
    assert body["status"] == 400
    assert TRACE_ID.fullmatch(body["traceId"])
    errors: dict[str, list[str]] = body["errors"]
    assert set(errors) == set(keys), errors
    assert all(
        isinstance(m, list) and m and all(isinstance(s, str) for s in m) for m in errors.values()
    )
    return errors


def pascal_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key[0].upper() + key[1:]: pascal_keys(item) for key, item in value.items()}
    return value


def _delete(*path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _set(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _b2b(org: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["isPrivateIndividual"] = "false"
        body["organizationNumber"] = org

    return mutate


INVALID_BODIES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("claim-type-missing", _delete("claimType"), "ClaimType"),
    ("claim-type-wrong", _set("Reminder", "claimType"), "ClaimType"),
    ("creditor-missing", _delete("creditorId"), "CreditorId"),
    ("creditor-as-string", _set("10759", "creditorId"), "CreditorId"),
    ("creditor-not-configured", _set(4242, "creditorId"), "CreditorId"),
    ("invoice-no-missing", _delete("invoiceNo"), "InvoiceNo"),
    ("invoice-no-blank", _set("  ", "invoiceNo"), "InvoiceNo"),
    ("invoice-no-number", _set(20003, "invoiceNo"), "InvoiceNo"),
    ("invoice-date-missing", _delete("invoiceDate"), "InvoiceDate"),
    ("invoice-date-norwegian-format", _set("01.01.2025", "invoiceDate"), "InvoiceDate"),
    ("invoice-date-not-in-calendar", _set("2025-02-30", "invoiceDate"), "InvoiceDate"),
    ("due-date-missing", _delete("dueDate"), "DueDate"),
    ("due-date-bad-time", _set("2025-02-01T25:00:00", "dueDate"), "DueDate"),
    ("due-before-invoice-date", _set("2024-12-31", "dueDate"), "DueDate"),
    ("amount-missing", _delete("originalAmount"), "OriginalAmount"),
    ("amount-string", _set("2250", "originalAmount"), "OriginalAmount"),
    ("amount-boolean", _set(JSON_TRUE, "originalAmount"), "OriginalAmount"),
    ("amount-zero", _set(0, "originalAmount"), "OriginalAmount"),
    ("amount-negative", _set(-10.5, "originalAmount"), "OriginalAmount"),
    ("currency-missing", _delete("currencyCode"), "CurrencyCode"),
    ("currency-lowercase", _set("nok", "currencyCode"), "CurrencyCode"),
    ("currency-too-long", _set("NOKK", "currencyCode"), "CurrencyCode"),
    ("debtor-name-empty", _set("", "debtorName"), "DebtorName"),
    ("private-flag-missing", _delete("isPrivateIndividual"), "IsPrivateIndividual"),
    ("private-flag-garbage", _set("yes", "isPrivateIndividual"), "IsPrivateIndividual"),
    ("private-flag-capitalised", _set("True", "isPrivateIndividual"), "IsPrivateIndividual"),
    ("address-missing", _delete("postalAddress"), "PostalAddress"),
    ("address-not-object", _set("Karl Johan Gate 1, Oslo", "postalAddress"), "PostalAddress"),
    (
        "address-line1-empty",
        _set("", "postalAddress", "addressAddressLine1"),
        "PostalAddress.AddressAddressLine1",
    ),
    (
        "postal-code-missing",
        _delete("postalAddress", "addressPostalCode"),
        "PostalAddress.AddressPostalCode",
    ),
    ("city-missing", _delete("postalAddress", "addressCity"), "PostalAddress.AddressCity"),
    (
        "country-alpha3",
        _set("NOR", "postalAddress", "addressCountryCode"),
        "PostalAddress.AddressCountryCode",
    ),
    (
        "address-line2-number",
        _set(5, "postalAddress", "addressAddressLine2"),
        "PostalAddress.AddressAddressLine2",
    ),
    ("b2b-without-org-number", _b2b(None), "OrganizationNumber"),
    ("b2b-org-number-8-digits", _b2b("12345678"), "OrganizationNumber"),
    ("b2b-org-number-with-spaces", _b2b("923 609 016"), "OrganizationNumber"),
    ("email-number", _set(5, "email"), "Email"),
    ("accounting-id-number", _set(42, "accountingInvoiceId"), "AccountingInvoiceId"),
]


class TestRegister:
    def test_guide_example_registers(self, api: httpx.Client, sim: Simulator) -> None:
        """The guide's example body (creditorId 10759) is accepted with an integer id."""
        response = api.post("invoice/register", json=guide_body())
        assert response.status_code == 200
        body = response.json()
        assert isinstance(body["id"], int)
        assert body["id"] >= FIRST_CASE_ID
        assert body == {
            "id": body["id"],
            "invoiceNo": "20003",
            "accountingInvoiceId": None,
            "status": "Registered",
        }
        assert [case["id"] for case in sim.cases()] == [body["id"]]

    def test_ids_increase(self, api: httpx.Client) -> None:
        """Each registration gets a larger integer id than the one before."""
        first = register(api, invoiceNo="1")
        second = register(api, invoiceNo="2")
        assert second > first

    def test_same_accounting_id_twice_makes_two_cases(
        self, api: httpx.Client, sim: Simulator
    ) -> None:
        """Register is not idempotent: the same accountingInvoiceId twice gives two cases."""
        first = register(api, accountingInvoiceId="ACC-1")
        second = register(api, accountingInvoiceId="ACC-1")
        assert first != second
        assert [case["accountingInvoiceId"] for case in sim.cases()] == ["ACC-1", "ACC-1"]

    @pytest.mark.parametrize(
        ("mutate", "key"),
        [pytest.param(mutate, key, id=name) for name, mutate, key in INVALID_BODIES],
    )
    def test_validation_rule(
        self, api: httpx.Client, sim: Simulator, mutate: Callable[[dict[str, Any]], None], key: str
    ) -> None:
        """Each broken rule answers 400 with exactly that PascalCase error key and no case."""
        body = guide_body()
        mutate(body)
        assert_validation_problem(api.post("invoice/register", json=body), key)
        assert sim.cases() == []

    def test_string_amount_message_is_system_text_json(self, api: httpx.Client) -> None:
        """A string amount is refused with System.Text.Json's conversion message."""
        response = api.post("invoice/register", json=guide_body(originalAmount="2250"))
        errors = assert_validation_problem(response, "OriginalAmount")
        assert errors["OriginalAmount"] == [
            "The JSON value could not be converted to System.Decimal."
        ]

    def test_required_message_is_aspnet(self, api: httpx.Client) -> None:
        """A missing invoiceNo reads exactly like ASP.NET's [Required] message."""
        body = guide_body()
        del body["invoiceNo"]
        errors = assert_validation_problem(api.post("invoice/register", json=body), "InvoiceNo")
        assert errors["InvoiceNo"] == ["The InvoiceNo field is required."]

    def test_all_errors_reported_at_once(self, api: httpx.Client) -> None:
        """An empty object reports every required field in one answer."""
        assert_validation_problem(
            api.post("invoice/register", json={}),
            "ClaimType",
            "CreditorId",
            "InvoiceNo",
            "InvoiceDate",
            "DueDate",
            "OriginalAmount",
            "CurrencyCode",
            "DebtorName",
            "IsPrivateIndividual",
            "PostalAddress",
        )

    @pytest.mark.parametrize(
        "content",
        [b'{"claimType": "CollectionCase",', b"", b"[1, 2]", b'{"originalAmount": NaN}'],
        ids=["truncated", "empty", "array", "nan"],
    )
    def test_malformed_json_is_a_problem(self, api: httpx.Client, content: bytes) -> None:
        """Malformed or non-object JSON answers 400 with a problem body keyed `$`."""
        response = api.post(
            "invoice/register", content=content, headers={"Content-Type": "application/json"}
        )
        assert_validation_problem(response, "$")

    def test_non_json_content_type_is_refused(self, api: httpx.Client) -> None:
        """A register body that is not declared as JSON answers 415."""
        response = api.post(
            "invoice/register",
            content=json.dumps(guide_body()).encode(),
            headers={"Content-Type": "text/plain"},
        )
        assert response.status_code == 415
        assert response.json()["status"] == 415

    def test_property_names_case_insensitive(self, api: httpx.Client, sim: Simulator) -> None:
        """PascalCase and upper-case property names are matched like ASP.NET does."""
        register_pascal = api.post("invoice/register", json=pascal_keys(guide_body()))
        assert register_pascal.status_code == 200, register_pascal.text
        upper = {key.upper(): value for key, value in guide_body(invoiceNo="UP").items()}
        register_upper = api.post("invoice/register", json=upper)
        assert register_upper.status_code == 200, register_upper.text
        assert [case["invoiceNo"] for case in sim.cases()] == ["20003", "UP"]

    def test_accepted_variants(self, api: httpx.Client, sim: Simulator) -> None:
        """Datetime dates, a JSON boolean flag, B2B with org number and unknown keys are accepted."""
        register(
            api,
            invoiceDate="2025-01-01T00:00:00",
            dueDate="2025-02-01T12:30:00",
            isPrivateIndividual=False,
            organizationNumber="923609016",
            originalAmount=2250.5,
            somethingKraviaIgnores={"x": 1},
            postalAddress={**GUIDE_EXAMPLE["postalAddress"], "addressAddressLine2": "Bak gården"},
        )
        assert sim.cases()[0]["originalAmount"] == Decimal("2250.5")

    def test_amount_kept_exactly(self, api: httpx.Client) -> None:
        """A decimal amount comes back as the exact same JSON number (no float rounding)."""
        response = api.post(
            "invoice/register",
            content=json.dumps(guide_body()).replace("2250", "2250.10").encode(),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200
        raw = api.get("invoice/search").text
        assert '"originalAmount":2250.10' in raw
        assert '"remainingAmount":2250.10' in raw


class TestAuth:
    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "wrong"}, {"Authorization": f"Bearer {TOKEN}"}],
        ids=["missing", "wrong", "bearer-scheme"],
    )
    def test_bad_token_is_401(
        self, running: RunningSimulator, sim: Simulator, headers: dict[str, str]
    ) -> None:
        """Anything but the exact raw token answers 401 with a problem body and creates nothing."""
        with httpx.Client(base_url=running.base_url, headers=headers) as client:
            responses = [
                client.post("invoice/register", json=guide_body()),
                client.get("invoice/search"),
                client.get(f"invoice/{FIRST_CASE_ID}/details"),
            ]
        for response in responses:
            assert response.status_code == 401
            assert response.json()["status"] == 401
            assert "errors" not in response.json()
        assert sim.cases() == []
        calls = sim.calls()
        assert calls["register"] == {"401": 1}
        assert calls["processed"]["register"] == 0


class TestDocuments:
    def test_multipart_pdf_stored_byte_for_byte(
        self, api: httpx.Client, control: httpx.Client, sim: Simulator
    ) -> None:
        """A multipart `file` part is stored exactly, with size and sha256."""
        case_id = register(api)
        response = upload(api, case_id)
        assert response.status_code == 200
        assert isinstance(response.json()["id"], int)
        assert control.get(f"/_sim/cases/{case_id}/documents/0").content == PDF
        (document,) = sim.cases()[0]["documents"]
        assert document["size"] == len(PDF)
        assert document["sha256"] == hashlib.sha256(PDF).hexdigest()
        assert document["fileName"] == "invoice-20003.pdf"
        assert sim.document_bytes(case_id, 0) == PDF

    def test_guide_json_base64_form_accepted(self, api: httpx.Client, sim: Simulator) -> None:
        """The guide's literal form (multipart header, JSON base64 body) is accepted too."""
        case_id = register(api)
        response = api.post(
            f"invoice/{case_id}/document",
            params={"type": "Invoice"},
            content=json.dumps({"file": base64.b64encode(PDF).decode()}).encode(),
            headers={"Content-Type": "multipart/form-data"},
        )
        assert response.status_code == 200, response.text
        assert sim.document_bytes(case_id, 0) == PDF

    @pytest.mark.parametrize(
        ("content", "field"),
        [(b"PK\x03\x04 not a pdf", "file"), (b"", "file"), (PDF, "attachment")],
        ids=["zip", "empty", "wrong-part-name"],
    )
    def test_non_pdf_refused(
        self, api: httpx.Client, sim: Simulator, content: bytes, field: str
    ) -> None:
        """Anything but PDF bytes in a part named `file` answers 400 (File) and stores nothing."""
        case_id = register(api)
        response = api.post(
            f"invoice/{case_id}/document",
            params={"type": "Invoice"},
            files={field: ("x.pdf", content, "application/pdf")},
        )
        assert_validation_problem(response, "File")
        assert sim.cases()[0]["documents"] == []

    def test_bad_base64_refused(self, api: httpx.Client) -> None:
        """A JSON body whose file is not base64 answers 400 (File)."""
        case_id = register(api)
        response = api.post(
            f"invoice/{case_id}/document", params={"type": "Invoice"}, json={"file": "%%%"}
        )
        assert_validation_problem(response, "File")

    @pytest.mark.parametrize("params", [{"type": "Receipt"}, {}], ids=["other-type", "no-type"])
    def test_type_must_be_invoice(self, api: httpx.Client, params: dict[str, str]) -> None:
        """The `type` query parameter must be Invoice."""
        case_id = register(api)
        response = api.post(
            f"invoice/{case_id}/document",
            params=params,
            files={"file": ("x.pdf", PDF, "application/pdf")},
        )
        assert_validation_problem(response, "Type")

    def test_unknown_case_404(self, api: httpx.Client) -> None:
        """A document for an unknown case answers 404."""
        assert upload(api, 999).status_code == 404


class TestActions:
    def test_start_then_start_again(self, api: httpx.Client, sim: Simulator) -> None:
        """Start succeeds once; a second Start answers 400 with ASP.NET's Action message."""
        case_id = register(api)
        first = start(api, case_id)
        assert first.status_code == 200
        assert first.json() == {"success": True}
        assert sim.cases()[0]["status"] == "CollectionStarted"
        assert sim.cases()[0]["started"] is True
        errors = assert_validation_problem(start(api, case_id), "Action")
        assert errors["Action"] == ["Action Start is not available for this invoice."]
        assert sim.calls()["processed"]["action"] == 1

    def test_guide_multipart_header_with_json_body(self, api: httpx.Client) -> None:
        """The guide's literal Start call (multipart header, JSON body) is accepted."""
        case_id = register(api)
        response = api.post(
            f"invoice/{case_id}/action",
            params={"action": "Start"},
            content=b'{"Message":"Confirming invoice action"}',
            headers={"Content-Type": "multipart/form-data"},
        )
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize("action", ["Pause", "Resume", "start", "Withdraw"])
    def test_unknown_action_400(self, api: httpx.Client, action: str) -> None:
        """On a registered case, actions other than Start (and unknown names) answer 400."""
        case_id = register(api)
        assert_validation_problem(start(api, case_id, action), "Action")

    def test_unknown_case_404(self, api: httpx.Client) -> None:
        """Start on an unknown case answers 404."""
        assert start(api, 12345).status_code == 404


class TestSearch:
    def test_filter_paging_and_order(self, api: httpx.Client) -> None:
        """lastUpdatedTime filters inclusively; skip/top page; both orders are served."""
        ids = [register(api, invoiceNo=str(n)) for n in range(5)]
        everything = search(api)
        assert everything["totalCount"] == 5
        assert [item["id"] for item in everything["items"]] == ids
        times = [item["lastUpdatedTime"] for item in everything["items"]]
        assert all(DOTNET_TIME.fullmatch(t) for t in times)
        assert times == sorted(times)
        assert len(set(times)) == 5

        since = search(api, lastUpdatedTime=times[2])
        assert [item["id"] for item in since["items"]] == ids[2:]
        assert since["totalCount"] == 3

        pages = [search(api, top=2, skip=skip) for skip in (0, 2, 4)]
        assert [[item["id"] for item in page["items"]] for page in pages] == [
            ids[0:2],
            ids[2:4],
            ids[4:],
        ]
        assert {page["totalCount"] for page in pages} == {5}

        descending = search(api, byAscending="False", lastUpdatedTime=times[1])
        assert [item["id"] for item in descending["items"]] == ids[:0:-1]

    def test_seven_digit_cursor_is_exact(self, api: httpx.Client) -> None:
        """A cursor one 100-ns tick after a case's time excludes it; the exact time includes it."""
        case_id = register(api)
        stamp = search(api)["items"][0]["lastUpdatedTime"]
        moment = datetime.strptime(stamp[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
        assert stamp.endswith("0")
        later = stamp[:-1] + "1"
        assert [item["id"] for item in search(api, lastUpdatedTime=stamp)["items"]] == [case_id]
        assert search(api, lastUpdatedTime=later)["items"] == []
        earlier = (moment - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
        assert search(api, lastUpdatedTime=earlier)["totalCount"] == 1

    def test_mutation_moves_case_to_the_end(self, api: httpx.Client) -> None:
        """A document upload updates lastUpdatedTime, so the case sorts last."""
        first = register(api, invoiceNo="A")
        second = register(api, invoiceNo="B")
        assert upload(api, first).status_code == 200
        assert [item["id"] for item in search(api)["items"]] == [second, first]

    def test_summary_shape(self, api: httpx.Client) -> None:
        """A search item carries exactly the summary fields, amounts as exact numbers."""
        register(api, accountingInvoiceId="ACC-7")
        (item,) = search(api)["items"]
        assert set(item) == {
            "id",
            "invoiceNo",
            "accountingInvoiceId",
            "status",
            "currencyCode",
            "originalAmount",
            "remainingAmount",
            "outstandingAmount",
            "lastUpdatedTime",
        }
        assert item["originalAmount"] == Decimal(2250)
        assert item["remainingAmount"] == item["outstandingAmount"] == Decimal(2250)
        assert item["status"] == "Registered"

    def test_top_is_capped_at_100(self, api: httpx.Client) -> None:
        """top above 100 is served as 100; totalCount tells the full size."""
        for n in range(101):
            register(api, invoiceNo=str(n))
        page = search(api, top=500)
        assert len(page["items"]) == 100
        assert page["totalCount"] == 101
        assert len(search(api, skip=100, top=100)["items"]) == 1
        assert len(search(api, top=None)["items"]) == 20  # default page size

    @pytest.mark.parametrize(
        ("params", "key"),
        [
            ({"lastUpdatedTime": "yesterday"}, "LastUpdatedTime"),
            ({"lastUpdatedTime": "2025-02-30T00:00:00"}, "LastUpdatedTime"),
            ({"top": 0}, "Top"),
            ({"skip": -1}, "Skip"),
            ({"byAscending": "maybe"}, "ByAscending"),
            ({"orderBy": 3}, "OrderBy"),
        ],
    )
    def test_bad_parameters_400(self, api: httpx.Client, params: dict[str, Any], key: str) -> None:
        """Invalid query parameters answer 400 with the parameter's PascalCase key."""
        query = {"byAscending": "True", "orderBy": 11, "skip": 0, "top": 20, **params}
        assert_validation_problem(api.get("invoice/search", params=query), key)


class TestDetails:
    def test_details_shape(self, api: httpx.Client) -> None:
        """Details carry documents, available actions and a timeline that follow the case."""
        case_id = register(api, accountingInvoiceId="ACC-9")
        before = api.get(f"invoice/{case_id}/details").json()
        assert before["availableActions"] == ["Start"]
        assert before["documents"] == []
        assert upload(api, case_id).status_code == 200
        assert start(api, case_id).status_code == 200
        response = api.get(f"invoice/{case_id}/details")
        assert response.status_code == 200
        details = loads(response)
        assert set(details) == {
            "id",
            "invoiceNo",
            "accountingInvoiceId",
            "status",
            "originalAmount",
            "remainingAmount",
            "outstandingAmount",
            "currencyCode",
            "debtorName",
            "documents",
            "payments",
            "availableActions",
            "lastUpdatedTime",
            "timeline",
        }
        assert details["id"] == case_id
        assert details["accountingInvoiceId"] == "ACC-9"
        assert details["status"] == "CollectionStarted"
        assert details["availableActions"] == ["Pause"]
        assert details["payments"] == []
        assert details["debtorName"] == "John Doe"
        assert details["originalAmount"] == details["remainingAmount"] == Decimal(2250)
        (document,) = details["documents"]
        assert set(document) == {"id", "type", "fileName", "size"}
        assert document["type"] == "Invoice"
        assert document["size"] == len(PDF)
        assert [entry["event"] for entry in details["timeline"]] == [
            "Registered",
            "Document added (Invoice)",
            "Collection started: Go ahead",
        ]
        assert details["timeline"][-1]["time"] == details["lastUpdatedTime"]

    def test_unknown_case_404(self, api: httpx.Client) -> None:
        """Details of an unknown case answer 404 with a problem body."""
        response = api.get("invoice/1/details")
        assert response.status_code == 404
        assert response.json()["status"] == 404


class TestFaults:
    def test_rate_limit_with_retry_after_variants(self, api: httpx.Client, sim: Simulator) -> None:
        """429 answers carry every Retry-After variant (and none), and nothing is processed."""
        sim.faults = Faults(rate_limit_429=1.0, seed=7)
        seen: set[str | None] = set()
        for _ in range(60):
            response = api.post("invoice/register", json=guide_body())
            assert response.status_code == 429
            value = response.headers.get("Retry-After")
            if value is not None and not value.lstrip("-").isdigit() and value != "soon":
                when = parsedate_to_datetime(value)
                assert timedelta(0) < when - datetime.now(UTC) <= timedelta(seconds=2)
                value = "<http-date>"
            seen.add(value)
        assert seen == {None, "1", "0", "-3", "soon", "<http-date>"}
        assert sim.cases() == []
        assert sim.calls()["register"] == {"429": 60}
        assert sim.calls()["processed"]["register"] == 0

    def test_server_errors(self, api: httpx.Client, sim: Simulator) -> None:
        """error_5xx answers 500, 502 and 503 before processing anything."""
        sim.faults = Faults(error_5xx=1.0, seed=3)
        statuses = {api.post("invoice/register", json=guide_body()).status_code for _ in range(30)}
        assert statuses == {500, 502, 503}
        assert sim.cases() == []
        assert set(sim.calls()["register"]) == {"500", "502", "503"}

    def test_timeout_still_applies(self, running: RunningSimulator, sim: Simulator) -> None:
        """A client that gives up on a slow call sees ReadTimeout, yet the case is created."""
        sim.faults = Faults(timeout=1.0, timeout_delay_s=0.4)
        with (
            httpx.Client(base_url=running.base_url, headers={"Authorization": TOKEN}) as client,
            pytest.raises(httpx.ReadTimeout),
        ):
            client.post("invoice/register", json=guide_body(), timeout=0.1)
        deadline = time.monotonic() + 3
        while not sim.cases() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(sim.cases()) == 1
        assert sim.calls()["processed"]["register"] == 1

    def test_drop_after_commit_register(self, api: httpx.Client, sim: Simulator) -> None:
        """A dropped register answer raises a protocol error, yet the case exists."""
        sim.faults = Faults(drop_after_commit=1.0)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            api.post("invoice/register", json=guide_body())
        assert len(sim.cases()) == 1
        assert sim.calls()["register"] == {"0": 1}
        assert sim.calls()["processed"]["register"] == 1

    def test_drop_after_commit_document_and_action(self, api: httpx.Client, sim: Simulator) -> None:
        """Dropped document and Start answers still apply their effects."""
        case_id = register(api)
        sim.faults = Faults(drop_after_commit=1.0, operations=("document", "action"))
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            upload(api, case_id)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            start(api, case_id)
        (case,) = sim.cases()
        assert case["started"] is True
        assert len(case["documents"]) == 1

    def test_drop_spares_reads_and_refusals(self, api: httpx.Client, sim: Simulator) -> None:
        """Reads and refused calls are answered in full even with drop_after_commit=1."""
        sim.faults = Faults(drop_after_commit=1.0)
        assert api.get("invoice/search").status_code == 200
        assert api.post("invoice/register", json={}).status_code == 400

    def test_operations_filter(self, api: httpx.Client, sim: Simulator) -> None:
        """Faults only hit the listed operations."""
        case_id = register(api)
        sim.faults = Faults(error_5xx=1.0, operations=("register",))
        assert api.get(f"invoice/{case_id}/details").status_code == 200
        assert api.post("invoice/register", json=guide_body()).status_code >= 500

    def test_latency(self, api: httpx.Client, sim: Simulator) -> None:
        """latency_ms delays every call by at least that long."""
        sim.faults = Faults(latency_ms=150)
        began = time.monotonic()
        assert api.get("invoice/search").status_code == 200
        assert time.monotonic() - began >= 0.15

    def test_seed_reproducible_over_http(self, api: httpx.Client, control: httpx.Client) -> None:
        """The same seed set over /_sim/faults gives the same sequence of outcomes."""
        settings = {"error_5xx": 0.4, "rate_limit_429": 0.3, "seed": 42}
        runs = []
        for _ in range(2):
            assert control.put("/_sim/faults", json=settings).status_code == 200
            runs.append([api.get("invoice/search").status_code for _ in range(30)])
        assert runs[0] == runs[1]
        assert {200, 429} <= set(runs[0])
        assert any(status >= 500 for status in runs[0])

    def test_faults_endpoint_validates(self, control: httpx.Client, sim: Simulator) -> None:
        """/_sim/faults refuses unknown keys and bad values, and echoes what it accepted."""
        assert control.put("/_sim/faults", json={"error_5xx": 2}).status_code == 400
        assert control.put("/_sim/faults", json={"explode": 1}).status_code == 400
        assert control.put("/_sim/faults", json=[1]).status_code == 400
        assert control.put("/_sim/faults", json={"operations": ["pay"]}).status_code == 400
        accepted = control.put("/_sim/faults", json={"timeout": 0.5, "operations": ["search"]})
        assert accepted.status_code == 200
        assert accepted.json()["timeout"] == 0.5
        assert sim.faults.operations == ("search",)
        assert control.get("/_sim/faults").json() == sim.faults.to_dict()

    def test_faults_dict_round_trip(self) -> None:
        """Faults.from_dict(to_dict()) is the identity; bad input raises."""
        faults = Faults(latency_ms=5, error_5xx=0.1, seed=9, operations=("register", "search"))
        assert Faults.from_dict(faults.to_dict()) == faults
        assert Faults().operations == OPERATIONS
        with pytest.raises(ValueError, match="unknown"):
            Faults.from_dict({"nope": 1})
        with pytest.raises(ValueError, match="share"):
            Faults.from_dict({"timeout": 1.5})
        with pytest.raises(TypeError):
            Faults.from_dict({"timeout": True})


def pay(api: httpx.Client, body: dict[str, Any], path: str = "invoice/payment") -> httpx.Response:
    return api.post(path, content=exact_json(body), headers={"Content-Type": "application/json"})


def payment_body(*lines: tuple[int, Any], payment_id: str = "286519", **overrides: Any) -> Any:
    """A body shaped like the guide's `invoice/payment` example."""
    amounts = [Decimal(str(amount)) for _, amount in lines]
    body: dict[str, Any] = {
        "date": "2024-07-16",
        "description": "Paid to our account",
        "AccountingPaymentId": payment_id,
        "amount": sum(amounts, Decimal(0)),
        "invoices": [
            {"invoiceId": case_id, "amount": amount}
            for (case_id, _), amount in zip(lines, amounts, strict=True)
        ],
    }
    body.update(overrides)
    return body


def credit_body(*lines: tuple[int, Any], payment_id: str = "4564654465", **overrides: Any) -> Any:
    """A body shaped like the guide's `invoice/creditnote` example (negative amounts)."""
    amounts = [Decimal(str(amount)) for _, amount in lines]
    body: dict[str, Any] = {
        "Date": "2024-09-16T00:00:00",
        "Amount": sum(amounts, Decimal(0)),
        "AccountingPaymentId": payment_id,
        "Description": "Credit note",
        "Invoices": [
            {"InvoiceId": case_id, "Amount": amount}
            for (case_id, _), amount in zip(lines, amounts, strict=True)
        ],
    }
    body.update(overrides)
    return body


def details(api: httpx.Client, case_id: int) -> dict[str, Any]:
    response = api.get(f"invoice/{case_id}/details")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = loads(response)
    return body


def _line(key: str, value: Any, index: int = 0) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        lines = body.get("invoices", body.get("Invoices"))
        lines[index][key] = value

    return mutate


def _drop_line_key(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        del body["invoices"][0][key]

    return mutate


INVALID_PAYMENTS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("payment-id-missing", _delete("AccountingPaymentId"), "AccountingPaymentId"),
    ("payment-id-blank", _set(" ", "AccountingPaymentId"), "AccountingPaymentId"),
    ("payment-id-number", _set(286519, "AccountingPaymentId"), "AccountingPaymentId"),
    ("date-missing", _delete("date"), "Date"),
    ("date-norwegian", _set("16.07.2024", "date"), "Date"),
    ("amount-missing", _delete("amount"), "Amount"),
    ("amount-string", _set("3000", "amount"), "Amount"),
    ("amount-zero", _set(0, "amount"), "Amount"),
    ("amount-negative", _set(-3000, "amount"), "Amount"),
    ("amount-not-the-sum", _set(Decimal("2999.99"), "amount"), "Amount"),
    ("invoices-missing", _delete("invoices"), "Invoices"),
    ("invoices-empty", _set([], "invoices"), "Invoices"),
    ("invoices-object", _set({"invoiceId": 1}, "invoices"), "Invoices"),
    ("line-not-object", _set([5], "invoices"), "Invoices[0]"),
    ("line-id-missing", _drop_line_key("invoiceId"), "Invoices[0].InvoiceId"),
    ("line-id-string", _line("invoiceId", "1000001"), "Invoices[0].InvoiceId"),
    ("line-amount-zero", _line("amount", 0), "Invoices[0].Amount"),
    ("line-amount-missing", _drop_line_key("amount"), "Invoices[0].Amount"),
    ("description-number", _set(5, "description"), "Description"),
]


class TestPayments:
    def test_guide_example_split_over_two_cases(self, api: httpx.Client, sim: Simulator) -> None:
        """The guide's payment of 3000 split 2000/1000 comes off two cases' capital exactly."""
        first, second = register(api), register(api)
        response = pay(api, payment_body((first, 2000), (second, 1000)))
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True}
        assert details(api, first)["remainingAmount"] == Decimal(250)
        assert details(api, second)["remainingAmount"] == Decimal(1250)
        (entry,) = sim.payments()
        assert entry["type"] == "Payment"
        assert entry["accountingPaymentId"] == "286519"
        assert entry["date"] == "2024-07-16"
        assert entry["amount"] == Decimal(3000)
        assert entry["invoices"] == [
            {"invoiceId": first, "amount": Decimal(2000), "appliedAmount": Decimal(2000)},
            {"invoiceId": second, "amount": Decimal(1000), "appliedAmount": Decimal(1000)},
        ]
        assert sim.calls()["processed"]["payment"] == 1

    def test_payment_recorded_in_details(self, api: httpx.Client) -> None:
        """Details list the payment with its id, date, amount and what was applied."""
        case_id = register(api)
        assert pay(api, payment_body((case_id, "1000.55"))).status_code == 200
        found = details(api, case_id)
        (payment,) = found["payments"]
        assert set(payment) == {
            "id",
            "type",
            "accountingPaymentId",
            "date",
            "amount",
            "appliedAmount",
            "settlementId",
            "registeredTime",
        }
        assert payment["type"] == "Payment"
        assert payment["accountingPaymentId"] == "286519"
        assert payment["date"] == "2024-07-16"
        assert payment["amount"] == payment["appliedAmount"] == Decimal("1000.55")
        assert payment["settlementId"] is None
        assert DOTNET_TIME.fullmatch(payment["registeredTime"])
        assert found["remainingAmount"] == found["outstandingAmount"] == Decimal("1249.45")
        assert found["originalAmount"] == Decimal(2250)
        assert found["status"] == "Registered"

    def test_amounts_exact_on_the_wire(self, api: httpx.Client) -> None:
        """Capital arithmetic is decimal: 2250.10 - 0.20 - 0.10 leaves exactly 2249.80."""
        case_id = register(api, originalAmount=Decimal("2250.10"))
        assert pay(api, payment_body((case_id, "0.20"), payment_id="a")).status_code == 200
        assert pay(api, payment_body((case_id, "0.10"), payment_id="b")).status_code == 200
        raw = api.get(f"invoice/{case_id}/details").text
        assert '"remainingAmount":2249.80' in raw

    def test_excess_ignored_and_case_closed(self, api: httpx.Client, sim: Simulator) -> None:
        """A payment above the remaining capital applies only what remains and closes the case."""
        case_id = register(api)
        assert pay(api, payment_body((case_id, 3000))).status_code == 200
        found = details(api, case_id)
        assert found["remainingAmount"] == Decimal(0)
        assert found["status"] == "Closed"
        assert found["availableActions"] == []
        (payment,) = found["payments"]
        assert payment["amount"] == Decimal(3000)
        assert payment["appliedAmount"] == Decimal(2250)
        assert found["timeline"][-1]["event"] == "Closed: nothing remains of the capital"
        assert sim.payments()[0]["invoices"][0]["appliedAmount"] == Decimal(2250)

    def test_payment_on_a_closed_case_applies_nothing(self, api: httpx.Client) -> None:
        """Once the capital is 0, a further payment is accepted and recorded, applying 0."""
        case_id = register(api)
        assert pay(api, payment_body((case_id, 2250), payment_id="1")).status_code == 200
        assert pay(api, payment_body((case_id, 10), payment_id="2")).status_code == 200
        found = details(api, case_id)
        assert [p["appliedAmount"] for p in found["payments"]] == [Decimal(2250), Decimal(0)]
        assert found["remainingAmount"] == Decimal(0)

    def test_same_payment_twice_is_applied_twice(self, api: httpx.Client, sim: Simulator) -> None:
        """Kravia documents no idempotency: the same AccountingPaymentId twice counts twice."""
        case_id = register(api)
        body = payment_body((case_id, 500))
        assert pay(api, body).status_code == 200
        assert pay(api, body).status_code == 200
        assert details(api, case_id)["remainingAmount"] == Decimal(1250)
        assert [entry["accountingPaymentId"] for entry in sim.payments()] == ["286519"] * 2
        assert [entry["seq"] for entry in sim.payments()] == [1, 2]

    @pytest.mark.parametrize(
        ("mutate", "key"),
        [(mutate, key) for _, mutate, key in INVALID_PAYMENTS],
        ids=[name for name, _, _ in INVALID_PAYMENTS],
    )
    def test_validation_rule(
        self,
        api: httpx.Client,
        sim: Simulator,
        mutate: Callable[[dict[str, Any]], None],
        key: str,
    ) -> None:
        """Each invalid payment body answers 400 naming the field, and changes nothing."""
        case_id = register(api)
        body = payment_body((case_id, 2000), (register(api), 1000))
        mutate(body)
        assert_validation_problem(pay(api, body), key)
        assert sim.payments() == []
        assert {case["remainingAmount"] for case in sim.cases()} == {Decimal(2250)}

    def test_unknown_invoice_refused_whole(self, api: httpx.Client, sim: Simulator) -> None:
        """A line for an invoice that does not exist refuses the whole payment."""
        case_id = register(api)
        response = pay(api, payment_body((case_id, 100), (4242, 100)))
        errors = assert_validation_problem(response, "Invoices[1].InvoiceId")
        assert errors["Invoices[1].InvoiceId"] == ["Invoice 4242 was not found."]
        assert sim.payments() == []
        assert details(api, case_id)["payments"] == []

    def test_same_invoice_twice_refused(self, api: httpx.Client) -> None:
        """One payment may not list the same invoice twice."""
        case_id = register(api)
        response = pay(api, payment_body((case_id, 100), (case_id, 100)))
        assert_validation_problem(response, "Invoices[1].InvoiceId")

    def test_property_names_case_insensitive(self, api: httpx.Client) -> None:
        """All-lower-case and PascalCase property names bind alike."""
        case_id = register(api)
        lower = {
            "date": "2024-07-16",
            "accountingpaymentid": "x1",
            "amount": 10,
            "invoices": [{"invoiceid": case_id, "amount": 10}],
        }
        assert pay(api, lower).status_code == 200
        assert pay(api, pascal_keys(lower | {"accountingpaymentid": "x2"})).status_code == 200
        assert details(api, case_id)["remainingAmount"] == Decimal(2230)

    def test_not_json_refused(self, api: httpx.Client) -> None:
        """A payment that is not JSON answers 415; malformed JSON answers 400."""
        case_id = register(api)
        form = api.post("invoice/payment", data={"amount": "10", "invoiceId": str(case_id)})
        assert form.status_code == 415
        broken = api.post(
            "invoice/payment", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert_validation_problem(broken, "$")


class TestCreditNotes:
    def test_partial_credit_note(self, api: httpx.Client, sim: Simulator) -> None:
        """The guide's credit note shape, with negative amounts, reduces the capital."""
        case_id = register(api)
        response = pay(api, credit_body((case_id, "-250.50")), "invoice/creditnote")
        assert response.status_code == 200, response.text
        found = details(api, case_id)
        assert found["remainingAmount"] == Decimal("1999.50")
        assert found["status"] == "Registered"
        (credit,) = found["payments"]
        assert credit["type"] == "CreditNote"
        assert credit["accountingPaymentId"] == "4564654465"
        assert credit["date"] == "2024-09-16"
        assert credit["amount"] == credit["appliedAmount"] == Decimal("-250.50")
        (entry,) = sim.payments()
        assert entry["type"] == "CreditNote"
        assert entry["amount"] == Decimal("-250.50")
        assert entry["description"] == "Credit note"

    def test_full_credit_closes_the_case(self, api: httpx.Client) -> None:
        """Crediting all that remains closes a started case; no action is left."""
        case_id = register(api)
        assert start(api, case_id).status_code == 200
        assert pay(api, payment_body((case_id, 1000))).status_code == 200
        assert pay(api, credit_body((case_id, -1250)), "invoice/creditnote").status_code == 200
        found = details(api, case_id)
        assert found["status"] == "Closed"
        assert found["remainingAmount"] == found["outstandingAmount"] == Decimal(0)
        assert found["availableActions"] == []
        assert_validation_problem(start(api, case_id, "Pause"), "Action")

    def test_excess_credit_ignored(self, api: httpx.Client) -> None:
        """A credit note above the remaining capital applies only what remains."""
        case_id = register(api)
        assert pay(api, credit_body((case_id, -9999)), "invoice/creditnote").status_code == 200
        (credit,) = details(api, case_id)["payments"]
        assert credit["amount"] == Decimal(-9999)
        assert credit["appliedAmount"] == Decimal(-2250)
        assert details(api, case_id)["remainingAmount"] == Decimal(0)

    @pytest.mark.parametrize(
        ("mutate", "key"),
        [
            (_set(2500, "Amount"), "Amount"),
            (_set(0, "Amount"), "Amount"),
            (_line("Amount", Decimal("2500.0")), "Invoices[0].Amount"),
            (_set("2024-09-31T00:00:00", "Date"), "Date"),
            (_delete("AccountingPaymentId"), "AccountingPaymentId"),
        ],
        ids=["positive-total", "zero-total", "positive-line", "bad-date", "no-payment-id"],
    )
    def test_validation_rule(
        self, api: httpx.Client, mutate: Callable[[dict[str, Any]], None], key: str
    ) -> None:
        """Positive amounts and other bad credit notes answer 400 naming the field."""
        case_id = register(api)
        body = credit_body((case_id, -2500))
        mutate(body)
        assert_validation_problem(pay(api, body, "invoice/creditnote"), key)
        assert details(api, case_id)["payments"] == []


class TestPayouts:
    def test_payout_reduces_capital_and_makes_a_settlement(
        self, api: httpx.Client, control: httpx.Client, sim: Simulator
    ) -> None:
        """A simulated payout is a Collected payment on the case and an unbooked settlement."""
        case_id = register(api, accountingInvoiceId="ACC-1")
        assert start(api, case_id).status_code == 200
        response = control.post(
            "/_sim/payout", json={"invoiceId": case_id, "amount": 750.25, "date": "2026-11-20"}
        )
        assert response.status_code == 200, response.text
        settlement = loads(response)
        found = details(api, case_id)
        assert found["remainingAmount"] == Decimal("1499.75")
        assert found["status"] == "CollectionStarted"
        (collected,) = found["payments"]
        assert collected["type"] == "Collected"
        assert collected["accountingPaymentId"] is None
        assert collected["amount"] == collected["appliedAmount"] == Decimal("750.25")
        assert collected["date"] == "2026-11-20"
        assert collected["settlementId"] == settlement["id"]

        listed = api.get("settlements", params={"ExcludeClosed": "true"})
        assert listed.status_code == 200
        assert loads(listed) == {"totalCount": 1, "items": [settlement]}
        assert settlement == {
            "id": settlement["id"],
            "settlementDate": "2026-11-20",
            "amount": Decimal("750.25"),
            "currencyCode": "NOK",
            "isBooked": False,
            "internalAccountingId": None,
            "invoices": [
                {
                    "invoiceId": case_id,
                    "invoiceNo": "20003",
                    "accountingInvoiceId": "ACC-1",
                    "amount": Decimal("750.25"),
                }
            ],
        }
        assert sim.payments()[-1]["type"] == "Collected"
        assert sim.payments()[-1]["settlementId"] == settlement["id"]

    def test_payout_of_several_invoices(self, api: httpx.Client, sim: Simulator) -> None:
        """One settlement may cover several cases; paying one in full closes it."""
        first, second = register(api), register(api)
        settlement = sim.payout([(first, Decimal(2250)), (second, Decimal("0.01"))])
        assert settlement["amount"] == Decimal("2250.01")
        assert [line["invoiceId"] for line in settlement["invoices"]] == [first, second]
        assert details(api, first)["status"] == "Closed"
        assert details(api, second)["remainingAmount"] == Decimal("2249.99")

    @pytest.mark.parametrize(
        "body",
        [
            {"invoiceId": 1, "amount": 10},
            {"invoiceId": "CASE", "amount": 0},
            {"invoiceId": "CASE", "amount": 2250.01},
            {"invoiceId": "CASE", "amount": "10"},
            {"invoices": [{"invoiceId": "CASE", "amount": 1}, {"invoiceId": "CASE", "amount": 1}]},
            {"invoices": []},
            [1],
        ],
        ids=["unknown-case", "zero", "above-capital", "string", "twice", "empty", "not-object"],
    )
    def test_payout_refused(self, api: httpx.Client, control: httpx.Client, body: Any) -> None:
        """A payout of an unknown case, of nothing or of more than the capital is refused."""
        case_id = register(api)
        text = json.dumps(body).replace('"CASE"', str(case_id))
        response = control.post("/_sim/payout", content=text)
        assert response.status_code == 400
        assert response.json()["error"]
        assert details(api, case_id)["payments"] == []

    def test_payout_of_a_closed_case_refused(self, api: httpx.Client, sim: Simulator) -> None:
        """Kravia collects nothing on a closed case."""
        case_id = register(api)
        assert pay(api, payment_body((case_id, 2250))).status_code == 200
        with pytest.raises(ValueError, match="closed"):
            sim.payout([(case_id, Decimal(1))])

    def test_bookkeep(self, api: httpx.Client, sim: Simulator) -> None:
        """A booked settlement leaves the ExcludeClosed list; booking is repeatable, not
        changeable."""
        case_id = register(api)
        settlement_id = sim.payout([(case_id, Decimal(100))])["id"]
        path = f"settlements/{settlement_id}/bookkeep"
        booked = api.patch(path, params={"internalAccountingId": "BILAG-77"})
        assert booked.status_code == 200, booked.text
        assert api.patch(path, params={"internalAccountingId": "BILAG-77"}).status_code == 200
        assert_validation_problem(
            api.patch(path, params={"internalAccountingId": "OTHER"}), "InternalAccountingId"
        )
        assert_validation_problem(api.patch(path), "InternalAccountingId")
        unknown = api.patch("settlements/1/bookkeep", params={"internalAccountingId": "x"})
        assert unknown.status_code == 404
        assert loads(api.get("settlements", params={"ExcludeClosed": "true"}))["items"] == []
        (everything,) = loads(api.get("settlements", params={"ExcludeClosed": "false"}))["items"]
        assert everything["isBooked"] is True
        assert everything["internalAccountingId"] == "BILAG-77"
        assert loads(api.get("settlements"))["totalCount"] == 1
        assert sim.calls()["processed"]["bookkeep"] == 2

    def test_bad_exclude_closed_400(self, api: httpx.Client) -> None:
        """ExcludeClosed must be a boolean."""
        response = api.get("settlements", params={"ExcludeClosed": "perhaps"})
        assert_validation_problem(response, "ExcludeClosed")

    @pytest.mark.usefixtures("sim")
    def test_settlements_need_the_token(self, running: RunningSimulator) -> None:
        """Settlements and bookkeeping answer 401 without the token."""
        with httpx.Client(base_url=running.base_url) as client:
            assert client.get("settlements").status_code == 401
            assert client.patch("settlements/1/bookkeep").status_code == 401


class TestCaseFeed:
    def test_every_change_moves_the_case_in_search(self, api: httpx.Client, sim: Simulator) -> None:
        """Upload, Start, payment, credit note and payout each bump lastUpdatedTime, and the
        search feed shows the new status and remaining capital."""
        case_id = register(api)
        other = register(api)
        changes: list[Callable[[], object]] = [
            lambda: upload(api, case_id),
            lambda: start(api, case_id),
            lambda: pay(api, payment_body((case_id, 250))),
            lambda: pay(api, credit_body((case_id, -500)), "invoice/creditnote"),
            lambda: sim.payout([(case_id, Decimal(1500))]),
        ]
        expected = [
            ("Registered", Decimal(2250)),
            ("CollectionStarted", Decimal(2250)),
            ("CollectionStarted", Decimal(2000)),
            ("CollectionStarted", Decimal(1500)),
            ("Closed", Decimal(0)),
        ]
        stamp = search(api)["items"][-1]["lastUpdatedTime"]
        for change, (status, remaining) in zip(changes, expected, strict=True):
            change()
            items = search(api, lastUpdatedTime=stamp)["items"]
            assert items[-1]["id"] == case_id
            assert other not in [item["id"] for item in items[1:]]
            assert items[-1]["lastUpdatedTime"] > stamp
            assert (items[-1]["status"], items[-1]["remainingAmount"]) == (status, remaining)
            stamp = items[-1]["lastUpdatedTime"]
            assert details(api, case_id)["lastUpdatedTime"] == stamp

    def test_pause_and_resume(self, api: httpx.Client) -> None:
        """A started case offers Pause; a paused one offers Resume (assumed action names)."""
        case_id = register(api)
        assert start(api, case_id).status_code == 200
        assert start(api, case_id, "Pause").status_code == 200
        paused = details(api, case_id)
        assert (paused["status"], paused["availableActions"]) == ("Paused", ["Resume"])
        assert start(api, case_id, "Resume").status_code == 200
        resumed = details(api, case_id)
        assert (resumed["status"], resumed["availableActions"]) == ("CollectionStarted", ["Pause"])
        events = [entry["event"] for entry in resumed["timeline"]]
        assert events[-2:] == ["Collection paused: Go ahead", "Collection resumed: Go ahead"]


class TestMoneyFaults:
    def test_dropped_payment_is_applied_once(self, api: httpx.Client, sim: Simulator) -> None:
        """A payment applied and then dropped unanswered is recorded exactly once."""
        case_id = register(api)
        sim.faults = Faults(drop_after_commit=1.0, operations=("payment", "creditnote"))
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            pay(api, payment_body((case_id, 100)))
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            pay(api, credit_body((case_id, -100)), "invoice/creditnote")
        assert [entry["type"] for entry in sim.payments()] == ["Payment", "CreditNote"]
        assert details(api, case_id)["remainingAmount"] == Decimal(2050)
        assert sim.calls()["payment"] == {"0": 1}
        assert sim.calls()["processed"]["creditnote"] == 1

    @pytest.mark.parametrize("fault", ["error_5xx", "rate_limit_429"])
    def test_refused_payment_applies_nothing(
        self, api: httpx.Client, sim: Simulator, fault: str
    ) -> None:
        """A payment answered 5xx or 429 by a fault is not applied."""
        case_id = register(api)
        sim.faults = Faults(**{fault: 1.0}, operations=("payment", "creditnote", "bookkeep"))
        assert pay(api, payment_body((case_id, 100))).status_code >= 429
        assert pay(api, credit_body((case_id, -1)), "invoice/creditnote").status_code >= 429
        assert sim.payments() == []
        assert details(api, case_id)["remainingAmount"] == Decimal(2250)

    def test_dropped_bookkeep_still_books(self, api: httpx.Client, sim: Simulator) -> None:
        """Bookkeeping is mutating: a drop after it still leaves the settlement booked."""
        settlement_id = sim.payout([(register(api), Decimal(1))])["id"]
        sim.faults = Faults(drop_after_commit=1.0, operations=("bookkeep", "settlements"))
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            api.patch(f"settlements/{settlement_id}/bookkeep", params={"internalAccountingId": "B"})
        assert api.get("settlements", params={"ExcludeClosed": "true"}).json()["items"] == []

    def test_latency_on_settlements(self, api: httpx.Client, sim: Simulator) -> None:
        """Latency applies to the new reads too."""
        sim.faults = Faults(latency_ms=120, operations=("settlements",))
        began = time.monotonic()
        assert api.get("settlements").status_code == 200
        assert time.monotonic() - began >= 0.12


class TestControl:
    def test_cases_endpoint(self, api: httpx.Client, control: httpx.Client, sim: Simulator) -> None:
        """/_sim/cases shows every case with the body as received and document hashes."""
        body = pascal_keys(guide_body(accountingInvoiceId="ACC-1"))
        response = api.post("invoice/register", json=body)
        case_id = response.json()["id"]
        upload(api, case_id)
        start(api, case_id)
        (case,) = loads(control.get("/_sim/cases"))
        assert case == sim.cases()[0]
        assert case["id"] == case_id
        assert case["body"] == body
        assert case["started"] is True
        assert case["status"] == "CollectionStarted"
        (document,) = case["documents"]
        assert document["sha256"] == hashlib.sha256(PDF).hexdigest()
        assert "content" not in document
        assert datetime.fromisoformat(case["created"]).tzinfo is not None
        assert case["updated"] > case["created"]

    def test_document_endpoint_404(self, api: httpx.Client, control: httpx.Client) -> None:
        """A missing document index or case answers 404."""
        case_id = register(api)
        assert control.get(f"/_sim/cases/{case_id}/documents/0").status_code == 404
        assert control.get("/_sim/cases/1/documents/0").status_code == 404

    def test_calls_endpoint(self, api: httpx.Client, control: httpx.Client, sim: Simulator) -> None:
        """/_sim/calls counts every API call by operation and status, plus processed ones."""
        case_id = register(api)
        api.post("invoice/register", json={})
        upload(api, case_id)
        start(api, case_id)
        api.get("invoice/search")
        api.get(f"invoice/{case_id}/details")
        api.get("invoice/5/details")
        calls = control.get("/_sim/calls").json()
        assert calls == sim.calls()
        assert calls == {
            "total": 7,
            "register": {"200": 1, "400": 1},
            "document": {"200": 1},
            "action": {"200": 1},
            "search": {"200": 1},
            "details": {"200": 1, "404": 1},
            "payment": {},
            "creditnote": {},
            "settlements": {},
            "bookkeep": {},
            "webhook": {},
            "processed": {
                "register": 1,
                "document": 1,
                "action": 1,
                "search": 1,
                "details": 1,
                "payment": 0,
                "creditnote": 0,
                "settlements": 0,
                "bookkeep": 0,
                "webhook": 0,
            },
        }

    def test_reset(self, api: httpx.Client, control: httpx.Client, sim: Simulator) -> None:
        """POST /_sim/reset clears cases, counters and faults."""
        register(api)
        sim.faults = Faults(latency_ms=1)
        assert control.post("/_sim/reset").status_code == 200
        assert sim.cases() == []
        assert sim.calls()["total"] == 0
        assert sim.faults == Faults()


class TestPersistence:
    def test_data_file_survives_restart(self, tmp_path: Path) -> None:
        """A second Simulator on the same data file sees the first one's cases and bytes."""
        data_file = tmp_path / "state" / "simulator.json"
        first_sim = Simulator(token=TOKEN, data_file=data_file)
        with (
            RunningSimulator(first_sim) as served,
            httpx.Client(base_url=served.base_url, headers={"Authorization": TOKEN}) as client,
        ):
            case_id = register(client, originalAmount=Decimal("99.90"))
            assert upload(client, case_id).status_code == 200
            assert start(client, case_id).status_code == 200
        assert data_file.exists()
        assert [path.name for path in data_file.parent.iterdir()] == ["simulator.json"]

        second_sim = Simulator(token=TOKEN, data_file=data_file)
        assert second_sim.cases() == first_sim.cases()
        assert second_sim.document_bytes(case_id, 0) == PDF
        with (
            RunningSimulator(second_sim) as served,
            httpx.Client(base_url=served.base_url, headers={"Authorization": TOKEN}) as client,
        ):
            next_id = register(client)
            assert next_id == case_id + 1
            items = search(client)["items"]
            assert [item["id"] for item in items] == [case_id, next_id]
            assert items[0]["originalAmount"] == Decimal("99.90")
            assert items[0]["status"] == "CollectionStarted"
            assert start(client, case_id).status_code == 400

    def test_money_survives_restart(self, tmp_path: Path) -> None:
        """Payments, the ledger and settlements (booked or not) are kept in the data file."""
        data_file = tmp_path / "simulator.json"
        first_sim = Simulator(token=TOKEN, data_file=data_file)
        with (
            RunningSimulator(first_sim) as served,
            httpx.Client(base_url=served.base_url, headers={"Authorization": TOKEN}) as client,
        ):
            case_id = register(client)
            assert pay(client, payment_body((case_id, "10.05"))).status_code == 200
            booked = first_sim.payout([(case_id, Decimal(20))])["id"]
            client.patch(f"settlements/{booked}/bookkeep", params={"internalAccountingId": "B1"})
            first_sim.payout([(case_id, Decimal(30))])
        second_sim = Simulator(token=TOKEN, data_file=data_file)
        assert second_sim.cases() == first_sim.cases()
        assert second_sim.payments() == first_sim.payments()
        assert second_sim.settlements() == first_sim.settlements()
        later = second_sim.payout([(case_id, Decimal(1))])
        assert later["id"] == booked + 2
        payment_ids = [p["id"] for p in second_sim.cases()[0]["payments"]]
        assert payment_ids == sorted(set(payment_ids))

    def test_first_format_still_loads(self, tmp_path: Path) -> None:
        """A data file written before payments existed loads, with no payments."""
        data_file = tmp_path / "old.json"
        first_sim = Simulator(token=TOKEN, data_file=data_file)
        with (
            RunningSimulator(first_sim) as served,
            httpx.Client(base_url=served.base_url, headers={"Authorization": TOKEN}) as client,
        ):
            case_id = register(client)
            assert start(client, case_id).status_code == 200
        old = json.loads(data_file.read_text())
        old["format"] = "kravia-sync-simulator/1"
        for key in ("nextPaymentId", "nextSettlementId", "ledger", "settlements"):
            del old[key]
        for case in old["cases"]:
            del case["payments"], case["started"]
        data_file.write_text(json.dumps(old))
        (case,) = Simulator(token=TOKEN, data_file=data_file).cases()
        assert case["payments"] == []
        assert case["started"] is True

    def test_missing_file_starts_empty(self, tmp_path: Path) -> None:
        """A data file that does not exist yet means an empty simulator."""
        assert Simulator(token=TOKEN, data_file=tmp_path / "new.json").cases() == []

    def test_corrupt_file_refused(self, tmp_path: Path) -> None:
        """A data file that is not the simulator's raises ValueError at start."""
        data_file = tmp_path / "bad.json"
        data_file.write_text('{"cases": "nope"}')
        with pytest.raises(ValueError, match="not a simulator data file"):
            Simulator(token=TOKEN, data_file=data_file)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(process: subprocess.Popen[Any], url: str) -> httpx.Response:
    """GET `url` as soon as the server in `process` answers (within 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return httpx.get(url, timeout=1)
        except httpx.TransportError:
            assert process.poll() is None, "the server exited early"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)


class TestServing:
    def test_urls_and_clean_stop(self) -> None:
        """base_url ends with /api/v2/; after exit the port no longer accepts connections."""
        with RunningSimulator(Simulator(token=TOKEN)) as served:
            assert served.base_url == served.root_url + "/api/v2/"
            assert served.root_url.startswith("http://127.0.0.1:")
            assert httpx.get(served.root_url + "/_sim/calls").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(served.root_url + "/_sim/calls", timeout=1)

    def test_serve_blocking_entry_point(self) -> None:
        """serve() runs a simulator until interrupted (the CLI's `simulate` path)."""
        port = free_port()
        code = (
            "from kravia_sync.testing.simulator import Faults, serve\n"
            f"serve(host='127.0.0.1', port={port}, token='t', creditor_id=None,"
            " faults=Faults(), data_file=None)\n"
        )
        process = subprocess.Popen([sys.executable, "-c", code])
        try:
            response = wait_for(process, f"http://127.0.0.1:{port}/_sim/calls")
            assert response.json()["total"] == 0
            unauthorised = httpx.get(f"http://127.0.0.1:{port}/api/v2/invoice/search")
            assert unauthorised.status_code == 401
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0


# --- answer shapes, Kravia's clock and in-process use ------------------------------------------

DETAILS_KEYS = {
    "id",
    "invoiceNo",
    "accountingInvoiceId",
    "status",
    "originalAmount",
    "remainingAmount",
    "outstandingAmount",
    "currencyCode",
    "debtorName",
    "documents",
    "payments",
    "availableActions",
    "lastUpdatedTime",
    "timeline",
}
SUMMARY_KEYS = {
    "id",
    "invoiceNo",
    "accountingInvoiceId",
    "status",
    "currencyCode",
    "originalAmount",
    "remainingAmount",
    "outstandingAmount",
    "lastUpdatedTime",
}
ROOT = "http://kravia.test"
API = "/api/v2/"
JSON_HEADERS = {"Content-Type": "application/json"}


T = TypeVar("T")


def in_process(simulator: Simulator, script: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run `script` with a client that drives the app in process (no server, no socket)."""

    async def go() -> T:
        transport = httpx.ASGITransport(app=simulator.app)
        async with httpx.AsyncClient(
            transport=transport, base_url=ROOT, headers={"Authorization": TOKEN}
        ) as client:
            return await script(client)

    return asyncio.run(go())


async def register_in_process(client: httpx.AsyncClient, **overrides: Any) -> int:
    response = await client.post(f"{API}invoice/register", json=guide_body(**overrides))
    assert response.status_code == 200, response.text
    case_id: int = response.json()["id"]
    return case_id


def date_header(response: httpx.Response) -> datetime:
    """The one Date header of an answer, parsed (RFC 7231, GMT)."""
    (value,) = response.headers.get_list("date")
    assert value.endswith(" GMT"), value
    return parsedate_to_datetime(value)


def dotnet_time(text: str) -> datetime:
    """A 7-digit .NET timestamp as an aware UTC datetime (to the microsecond)."""
    assert DOTNET_TIME.fullmatch(text), text
    return datetime.strptime(text[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


def cursor(moment: datetime) -> str:
    """A search cursor for `moment` in the .NET form the guide shows (UTC, no zone)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"


def assert_near(moment: datetime, expected: datetime, seconds: float = 2.0) -> None:
    assert abs(moment - expected) <= timedelta(seconds=seconds), (moment, expected)


def documented_cases(api: httpx.Client) -> tuple[int, int]:
    """A registered case and a started one, each with an invoice copy."""
    registered = register(api, accountingInvoiceId="ACC-R")
    started = register(api, invoiceNo="20004", accountingInvoiceId="ACC-S")
    for case_id in (registered, started):
        assert upload(api, case_id).status_code == 200
    assert start(api, started).status_code == 200
    return registered, started


def page_of(body: Any) -> list[dict[str, Any]]:
    """The items of a search answer, whatever its envelope."""
    if isinstance(body, list):
        return body
    (items,) = [value for value in body.values() if isinstance(value, list)]
    return items


@dataclass(frozen=True)
class ShapedDetails:
    """What one details shape answers for a registered and a started case with a document."""

    shape: str
    keys: set[str]
    registered_actions: Any
    started_actions: Any
    document_keys: set[str] | None  # None: no documents key at all


DETAILS_SHAPES = [
    ShapedDetails("list", DETAILS_KEYS, ["Start"], ["Pause"], {"id", "type", "fileName", "size"}),
    ShapedDetails(
        "object",
        DETAILS_KEYS - {"documents"},
        {"Start": True, "Pause": False, "Resume": False},
        {"Start": False, "Pause": True, "Resume": False},
        None,
    ),
    ShapedDetails(
        "named",
        DETAILS_KEYS,
        [{"name": "Start"}],
        [{"name": "Pause"}],
        {"id", "documentType", "fileName", "size"},
    ),
]


class TestDetailsShapes:
    @pytest.mark.parametrize("expected", DETAILS_SHAPES, ids=lambda expected: expected.shape)
    def test_exact_keys_and_actions(
        self, api: httpx.Client, sim: Simulator, expected: ShapedDetails
    ) -> None:
        """Each details shape answers its own keys, actions and documents for both cases."""
        sim.shape = Shape(details_shape=expected.shape)
        registered, started = documented_cases(api)
        for case_id, actions in (
            (registered, expected.registered_actions),
            (started, expected.started_actions),
        ):
            found = details(api, case_id)
            assert set(found) == expected.keys
            assert found["availableActions"] == actions
            if expected.document_keys is None:
                assert "documents" not in found
            else:
                (document,) = found["documents"]
                assert set(document) == expected.document_keys
                assert document.get("type", document.get("documentType")) == "Invoice"

    def test_the_rest_is_the_same_in_every_shape(self, api: httpx.Client, sim: Simulator) -> None:
        """Only availableActions and documents change with the shape; accountingInvoiceId stays."""
        _, started = documented_cases(api)
        seen = []
        for shape in DetailsShape:
            sim.shape = Shape(details_shape=shape)
            found = details(api, started)
            del found["availableActions"]
            found.pop("documents", None)
            seen.append(found)
        assert seen[0]["accountingInvoiceId"] == "ACC-S"
        assert all(other == seen[0] for other in seen[1:])

    def test_object_shape_lists_every_known_action(self, api: httpx.Client, sim: Simulator) -> None:
        """In the object shape a paused case offers Resume only, and every action is named."""
        sim.shape = Shape(details_shape="object")
        case_id = register(api)
        assert start(api, case_id).status_code == 200
        assert start(api, case_id, "Pause").status_code == 200
        actions = details(api, case_id)["availableActions"]
        assert actions == {"Start": False, "Pause": False, "Resume": True}


class TestSearchShapes:
    @pytest.mark.parametrize(
        ("shape", "envelope"),
        [
            ("items", lambda page: {"totalCount": 3, "items": page}),
            ("list", lambda page: page),
            ("data", lambda page: {"data": page}),
            ("value", lambda page: {"value": page, "count": 3}),
        ],
    )
    def test_envelopes(
        self, api: httpx.Client, sim: Simulator, shape: str, envelope: Callable[[Any], Any]
    ) -> None:
        """Each search shape wraps the same page of items; the counts tell all that match."""
        ids = [register(api, invoiceNo=str(n), accountingInvoiceId=f"A{n}") for n in range(3)]
        page = search(api, top=2)["items"]
        assert [item["id"] for item in page] == ids[:2]
        sim.shape = Shape(search_shape=shape)
        response = api.get("invoice/search", params={"orderBy": 11, "skip": 0, "top": 2})
        assert response.status_code == 200, response.text
        assert loads(response) == envelope(page)

    @pytest.mark.parametrize("shape", list(SearchShape))
    def test_without_aid(self, api: httpx.Client, sim: Simulator, shape: SearchShape) -> None:
        """search_without_aid drops accountingInvoiceId from search items only, in every shape."""
        case_id = register(api, accountingInvoiceId="ACC-3")
        sim.shape = Shape(search_shape=shape, search_without_aid=True)
        (item,) = page_of(loads(api.get("invoice/search")))
        assert set(item) == SUMMARY_KEYS - {"accountingInvoiceId"}
        assert details(api, case_id)["accountingInvoiceId"] == "ACC-3"
        assert sim.cases()[0]["accountingInvoiceId"] == "ACC-3"


class TestClock:
    @pytest.mark.parametrize("offset", [7200.0, -5400.5])
    def test_offset_shifts_every_time_and_the_date_header(self, offset: float) -> None:
        """Times handed out and the Date header are the host's now plus the offset (±2 s)."""
        simulator = Simulator(token=TOKEN, creditor_id=CREDITOR, clock_offset_seconds=offset)

        async def script(client: httpx.AsyncClient) -> dict[str, Any]:
            case_id = await register_in_process(client)
            started = await client.post(
                f"{API}invoice/{case_id}/action", params={"action": "Start"}, json={}
            )
            paid = await client.post(
                f"{API}invoice/payment",
                content=exact_json(payment_body((case_id, 10))),
                headers=JSON_HEADERS,
            )
            assert started.status_code == paid.status_code == 200
            simulator.payout([(case_id, Decimal(5))])
            searched = await client.get(f"{API}invoice/search")
            found = await client.get(f"{API}invoice/{case_id}/details")
            return {"search": loads(searched), "details": loads(found), "date": date_header(found)}

        seen = in_process(simulator, script)
        kravia_now = datetime.now(UTC) + timedelta(seconds=offset)
        assert_near(seen["date"], kravia_now)
        (item,) = seen["search"]["items"]
        found = seen["details"]
        stamps = [
            item["lastUpdatedTime"],
            found["lastUpdatedTime"],
            *(entry["time"] for entry in found["timeline"]),
            *(payment["registeredTime"] for payment in found["payments"]),
        ]
        assert len(stamps) == 2 + 4 + 2
        for stamp in stamps:
            assert_near(dotnet_time(stamp), kravia_now)
        (case,) = simulator.cases()
        for key in ("created", "updated"):
            assert_near(datetime.fromisoformat(case[key]), kravia_now)
        (settlement,) = simulator.settlements()
        assert settlement["settlementDate"] in {  # either side of Kravia's midnight
            (kravia_now - timedelta(seconds=2)).date().isoformat(),
            kravia_now.date().isoformat(),
        }

    def test_host_time_cursor_misses_a_case_kravia_time_finds(self) -> None:
        """Kravia an hour behind: a cursor from the host's clock misses a case just made."""
        simulator = Simulator(token=TOKEN, creditor_id=CREDITOR, clock_offset_seconds=-3600)

        async def script(client: httpx.AsyncClient) -> tuple[list[Any], list[Any], int]:
            before = datetime.now(UTC)
            case_id = await register_in_process(client)
            query = {"orderBy": 11}
            by_host = await client.get(
                f"{API}invoice/search", params={**query, "lastUpdatedTime": cursor(before)}
            )
            by_kravia = await client.get(
                f"{API}invoice/search",
                params={**query, "lastUpdatedTime": cursor(before - timedelta(hours=1))},
            )
            return by_host.json()["items"], by_kravia.json()["items"], case_id

        by_host, by_kravia, case_id = in_process(simulator, script)
        assert by_host == []
        assert [item["id"] for item in by_kravia] == [case_id]

    def test_kravia_time_cursor_misses_what_host_time_finds(self) -> None:
        """Kravia an hour ahead: the host's time finds a case Kravia's time after it misses."""
        simulator = Simulator(token=TOKEN, creditor_id=CREDITOR, clock_offset_seconds=3600)

        async def script(client: httpx.AsyncClient) -> tuple[list[Any], list[Any], int]:
            case_id = await register_in_process(client)
            after = datetime.now(UTC)
            by_host = await client.get(
                f"{API}invoice/search", params={"lastUpdatedTime": cursor(after)}
            )
            by_kravia = await client.get(
                f"{API}invoice/search",
                params={"lastUpdatedTime": cursor(after + timedelta(hours=1))},
            )
            return by_host.json()["items"], by_kravia.json()["items"], case_id

        by_host, by_kravia, case_id = in_process(simulator, script)
        assert [item["id"] for item in by_host] == [case_id]
        assert by_kravia == []

    def test_a_smaller_offset_never_moves_time_back(self) -> None:
        """Times stay strictly increasing when the offset is turned back."""
        simulator = Simulator(token=TOKEN, creditor_id=CREDITOR, clock_offset_seconds=600)

        async def script(client: httpx.AsyncClient) -> list[str]:
            await register_in_process(client)
            simulator.shape = Shape(clock_offset_seconds=0)
            await register_in_process(client)
            searched = await client.get(f"{API}invoice/search")
            return [item["lastUpdatedTime"] for item in searched.json()["items"]]

        first, second = in_process(simulator, script)
        assert dotnet_time(first) < dotnet_time(second)

    def test_date_header_over_http(self) -> None:
        """Served by uvicorn there is exactly one Date header, and it is Kravia's time."""
        simulator = Simulator(token=TOKEN, clock_offset_seconds=-86_400)
        with RunningSimulator(simulator) as served:
            for url in (served.base_url + "invoice/search", served.root_url + "/_sim/calls"):
                response = httpx.get(url, headers={"Authorization": TOKEN})
                assert response.status_code == 200
                assert_near(date_header(response), datetime.now(UTC) - timedelta(days=1))

    def test_date_header_without_offset(self, api: httpx.Client, control: httpx.Client) -> None:
        """Without an offset the Date header is the host's time, on API and control answers."""
        answers = [
            api.get("invoice/search"),
            api.get("invoice/1/details"),
            control.get("/_sim/calls"),
        ]
        for response in answers:
            assert_near(date_header(response), datetime.now(UTC))


class TestInProcess:
    def test_every_endpoint_answers_with_a_date_header(self) -> None:
        """Driven through httpx.ASGITransport, every route answers as over HTTP, with a Date."""
        simulator = Simulator(token=TOKEN, creditor_id=CREDITOR, clock_offset_seconds=30)
        case = FIRST_CASE_ID
        calls: list[tuple[str, str, str, dict[str, Any]]] = [
            ("POST", "/api/v2/invoice/register", "invoice/register", {"json": guide_body()}),
            (
                "POST",
                "/api/v2/invoice/{id:int}/document",
                f"invoice/{case}/document?type=Invoice",
                {"files": {"file": ("invoice.pdf", PDF, "application/pdf")}},
            ),
            (
                "POST",
                "/api/v2/invoice/{id:int}/action",
                f"invoice/{case}/action?action=Start",
                {"json": {"Message": "Go"}},
            ),
            ("GET", "/api/v2/invoice/{id:int}/details", f"invoice/{case}/details", {}),
            ("GET", "/api/v2/invoice/search", "invoice/search?orderBy=11", {}),
            (
                "POST",
                "/api/v2/invoice/payment",
                "invoice/payment",
                {"content": exact_json(payment_body((case, 10))), "headers": JSON_HEADERS},
            ),
            (
                "POST",
                "/api/v2/invoice/creditnote",
                "invoice/creditnote",
                {"content": exact_json(credit_body((case, -10))), "headers": JSON_HEADERS},
            ),
            ("POST", "/_sim/payout", "/_sim/payout", {"json": {"invoiceId": case, "amount": 5}}),
            ("GET", "/api/v2/settlements", "settlements?ExcludeClosed=true", {}),
            (
                "PATCH",
                "/api/v2/settlements/{id:int}/bookkeep",
                f"settlements/{FIRST_SETTLEMENT_ID}/bookkeep?internalAccountingId=B1",
                {},
            ),
            ("GET", "/_sim/cases", "/_sim/cases", {}),
            (
                "GET",
                "/_sim/cases/{id:int}/documents/{n:int}",
                f"/_sim/cases/{case}/documents/0",
                {},
            ),
            ("GET", "/_sim/calls", "/_sim/calls", {}),
            ("GET", "/_sim/payments", "/_sim/payments", {}),
            ("GET", "/_sim/settlements", "/_sim/settlements", {}),
            ("GET", "/_sim/faults", "/_sim/faults", {}),
            ("PUT", "/_sim/faults", "/_sim/faults", {"json": {"latency_ms": 1}}),
            ("GET", "/_sim/shape", "/_sim/shape", {}),
            (
                "PUT",
                "/_sim/shape",
                "/_sim/shape",
                {"json": {"details_shape": "named", "clock_offset_seconds": 30}},
            ),
            (
                "PUT",
                "/api/v2/creditor/{id:int}/webhook",
                f"creditor/{CREDITOR}/webhook",
                {"json": {"secret": "s", "enabled": False, "url": "http://127.0.0.1:9/hook"}},
            ),
            ("GET", "/_sim/webhook", "/_sim/webhook", {}),
            ("POST", "/_sim/webhook", "/_sim/webhook", {"json": {"claimId": case}}),
            ("POST", "/_sim/reset", "/_sim/reset", {}),
        ]
        routes = {
            (method, route.path)
            for route in simulator.app.routes
            for method in getattr(route, "methods", set()) - {"HEAD"}
        }
        assert {(method, path) for method, path, _, _ in calls} == routes

        async def script(client: httpx.AsyncClient) -> list[httpx.Response]:
            answers = []
            for method, _, url, kwargs in calls:
                target = url if url.startswith("/") else API + url
                answers.append(await client.request(method, target, **kwargs))
            answers.append(await client.get("/nowhere"))
            answers.append(await client.get(f"{API}invoice/search", headers={"Authorization": "x"}))
            return answers

        answers = in_process(simulator, script)
        statuses = [response.status_code for response in answers]
        assert statuses == [200] * len(calls) + [404, 401], [r.text for r in answers]
        kravia_now = datetime.now(UTC) + timedelta(seconds=30)
        for response in answers:
            assert_near(date_header(response), kravia_now)
        assert simulator.shape == Shape(details_shape="named", clock_offset_seconds=30)

    def test_dropped_answer_raises_in_process(self) -> None:
        """In process a dropped answer raises ConnectionDroppedError, yet the case exists."""
        simulator = Simulator(token=TOKEN, faults=Faults(drop_after_commit=1.0))

        async def script(client: httpx.AsyncClient) -> None:
            with pytest.raises(ConnectionDroppedError):
                await client.post(f"{API}invoice/register", json=guide_body())

        in_process(simulator, script)
        assert len(simulator.cases()) == 1
        assert simulator.calls()["register"] == {"0": 1}

    def test_timeout_only_delays_in_process(self) -> None:
        """In process the timeout fault delays the answer: the transport has no client timeout."""
        simulator = Simulator(token=TOKEN, faults=Faults(timeout=1.0, timeout_delay_s=0.2))

        async def script(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(f"{API}invoice/register", json=guide_body(), timeout=0.01)

        began = time.monotonic()
        assert in_process(simulator, script).status_code == 200
        assert time.monotonic() - began >= 0.2


class TestShapeSettings:
    def test_control_endpoint_round_trip(self, control: httpx.Client, sim: Simulator) -> None:
        """PUT /_sim/shape sets every setting and echoes it; keys left out take the defaults."""
        assert control.get("/_sim/shape").json() == Shape().to_dict()
        settings = {
            "details_shape": "object",
            "search_shape": "value",
            "search_without_aid": True,
            "clock_offset_seconds": -12.5,
            "register_shape": "no_id",
            "time_zone": "offset",
        }
        accepted = control.put("/_sim/shape", json=settings)
        assert accepted.status_code == 200
        assert accepted.json() == settings
        assert control.get("/_sim/shape").json() == settings
        assert sim.shape == Shape(
            details_shape=DetailsShape.OBJECT,
            search_shape=SearchShape.VALUE,
            search_without_aid=True,
            clock_offset_seconds=-12.5,
            register_shape="no_id",
            time_zone="offset",
        )
        partial = control.put("/_sim/shape", json={"search_shape": "data"})
        assert partial.json() == Shape(search_shape="data").to_dict()

    @pytest.mark.parametrize(
        ("content", "named"),
        [
            (b'{"details_shape": "table"}', "details_shape"),
            (b'{"details_shape": 1}', "details_shape"),
            (b'{"search_shape": "items2"}', "search_shape"),
            (b'{"search_without_aid": "yes"}', "search_without_aid"),
            (b'{"clock_offset_seconds": "5"}', "clock_offset_seconds"),
            (b'{"clock_offset_seconds": true}', "clock_offset_seconds"),
            (b'{"clock_offset_seconds": NaN}', "clock_offset_seconds"),
            (b'{"clock_offset_seconds": 1e12}', "clock_offset_seconds"),
            (b'{"clock_offset_seconds": 1' + b"0" * 400 + b"}", "clock_offset_seconds"),
            (b'{"colour": "red"}', "colour"),
            (b"[1]", "object"),
            (b"{not json", ""),
        ],
    )
    def test_control_endpoint_refuses_garbage(
        self, control: httpx.Client, sim: Simulator, content: bytes, named: str
    ) -> None:
        """Unknown keys, values and types answer 400 with an error naming them; nothing changes."""
        sim.shape = Shape(details_shape="named")
        response = control.put("/_sim/shape", content=content)
        assert response.status_code == 400
        assert named in response.json()["error"]
        assert sim.shape == Shape(details_shape="named")

    def test_unknown_value_names_the_known_ones(self) -> None:
        """A bad shape name in the constructor raises ValueError listing the known names."""
        with pytest.raises(ValueError, match=r"unknown 'table' \(known: list, object, named\)"):
            Simulator(token=TOKEN, details_shape="table")
        with pytest.raises(ValueError, match="known: items, list, data, value"):
            Shape(search_shape="rows")

    def test_constructor_property_and_dict(self) -> None:
        """Constructor keywords, the shape property and from_dict/to_dict agree."""
        simulator = Simulator(
            token=TOKEN,
            details_shape="named",
            search_shape=SearchShape.LIST,
            search_without_aid=True,
            clock_offset_seconds=3,
        )
        expected = Shape(
            details_shape="named",
            search_shape="list",
            search_without_aid=True,
            clock_offset_seconds=3,
        )
        assert simulator.shape == expected
        assert Shape.from_dict(expected.to_dict()) == expected
        assert isinstance(simulator.shape.clock_offset_seconds, float)
        simulator.shape = Shape()
        assert simulator.shape.details_shape is DetailsShape.LIST

    def test_reset_keeps_the_shape(self, control: httpx.Client, sim: Simulator) -> None:
        """POST /_sim/reset forgets faults but keeps the shape (which Kravia is simulated)."""
        sim.shape = Shape(search_shape="data", clock_offset_seconds=5)
        sim.faults = Faults(latency_ms=1)
        assert control.post("/_sim/reset").status_code == 200
        assert sim.faults == Faults()
        assert sim.shape == Shape(search_shape="data", clock_offset_seconds=5)


class TestSimulateCommand:
    def test_options_reach_the_simulator(self) -> None:
        """`kravia-sync simulate` passes the shape options to the simulator it serves."""
        port = free_port()
        command = [sys.executable, "-m", "kravia_sync", "simulate", "--port", str(port)]
        options = [
            "--token=t",
            "--details-shape=named",
            "--search-shape=value",
            "--search-without-aid",
            "--clock-offset-seconds=-120",
            "--register-shape=bare",
            "--time-zone=local",
        ]
        process = subprocess.Popen([*command, *options], stdout=subprocess.DEVNULL)
        try:
            response = wait_for(process, f"http://127.0.0.1:{port}/_sim/shape")
            assert response.json() == {
                "details_shape": "named",
                "search_shape": "value",
                "search_without_aid": True,
                "clock_offset_seconds": -120.0,
                "register_shape": "bare",
                "time_zone": "local",
            }
            assert_near(date_header(response), datetime.now(UTC) - timedelta(seconds=120))
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0

    def test_choices_are_the_simulators_shapes(self) -> None:
        """The command's choices are exactly the simulator's shape names, the default first."""
        hints = get_type_hints(cli.simulate, include_extras=True)
        defaults = inspect.signature(cli.simulate).parameters
        for name, shapes in (("details_shape", DetailsShape), ("search_shape", SearchShape)):
            (choices, *_) = get_args(hints[name])  # Annotated[Literal[...], typer.Option]
            assert list(get_args(choices)) == [shape.value for shape in shapes]
            assert defaults[name].default == next(iter(shapes)).value
        assert defaults["search_without_aid"].default is False
        assert defaults["clock_offset_seconds"].default == 0.0

    def test_impossible_clock_offset_is_a_usage_error(self) -> None:
        """An infinite clock offset exits 2 with a message naming the option."""
        result = subprocess.run(
            [sys.executable, "-m", "kravia_sync", "simulate", "--clock-offset-seconds=inf"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2
        assert "--clock-offset-seconds" in result.stderr
