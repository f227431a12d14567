"""Tests of the Kravia client module (`kravia_sync.kravia.client`): bodies, errors, and the client
over `httpx.MockTransport` (no network)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from support import CREDITOR_ID, Sim
from support import TOKEN as SIM_TOKEN

from kravia_sync.kravia.answers import (
    CaseStanding,
    MoneyLine,
    PaymentKind,
    RecordedPayment,
    Settlement,
    can_start,
    case_standing,
    loads_exact,
    parse_settlements,
    payment_recorded,
)
from kravia_sync.kravia.assumptions import (
    DEFAULT_BASE_URL,
    MAX_RETRY_AFTER_SECONDS,
    SEARCH_PAGE_OVERLAP,
    SEARCH_PAGE_SIZE,
)
from kravia_sync.kravia.bodies import (
    build_credit_note_body,
    build_payment_body,
    build_register_body,
    dumps_exact,
)
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import (
    Failure,
    KraviaError,
    classify_exception,
    classify_response,
    parse_retry_after,
)
from kravia_sync.model import Invoice
from kravia_sync.testing import minimal_pdf
from kravia_sync.testing.simulator import Faults

BASE = "https://kravia.test/api/v2/"
TOKEN = "tok-3f9a-raw"
CREDITOR = 10759

# The request body of "Register the invoice", copied verbatim from Kravia's guide
# (kravia-create-collection-case.txt), whitespace and all.
GUIDE_REGISTER_JSON = """{
    "claimType": "CollectionCase",
    "creditorId": 10759,
    "accountingInvoiceId": null,
    "debtorName":"John Doe",
    "debtorNumber": "10001",
    "email": "kevcaballero@gmail.com",
    "ssn": null,
    "organizationNumber": null,
    "isPrivateIndividual": "true",
    "postalAddress": 
    {        
        "addressAddressLine1": "Karl Johan Gate",
        "addressPostalCode":"1000",
        "addressCity":"Oslo",
        "addressCountryCode": "NO"
    },
    "invoiceNo": "20003",
    "invoiceDate":"2025-01-01",
    "dueDate":"2025-02-01",
    "originalAmount": 2250,
    "currencyCode": "NOK",
    "description": "Invoice XYZ to collection"
}"""  # noqa: W291

GUIDE_RECORD: dict[str, Any] = {
    "invoice_number": "20003",
    "invoice_date": "2025-01-01",
    "due_date": "2025-02-01",
    "amount": "2250",
    "currency": "NOK",
    "description": "Invoice XYZ to collection",
    "debtor_name": "John Doe",
    "debtor_number": "10001",
    "debtor_email": "kevcaballero@gmail.com",
    "debtor_type": "private",
    "address_line1": "Karl Johan Gate",
    "postal_code": "1000",
    "city": "Oslo",
    "country": "NO",
}
B2B_RECORD: dict[str, Any] = {
    **GUIDE_RECORD,
    "debtor_name": "Blåbær AS",
    "debtor_type": "business",
    "organization_number": "923 609 016",
    "address_line2": "Postboks 12",
    "amount": "1 234,50",
}

ValidationBody = {
    "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    "title": "One or more validation errors occurred.",
    "status": 400,
    "errors": {
        "DebtorName": ["The DebtorName field is required."],
        "PostalAddress.AddressPostalCode": ["Not a postal code.", "Too short."],
    },
    "traceId": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
}

Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


def guide_invoice() -> Invoice:
    return Invoice.from_record(GUIDE_RECORD)


def json_types(value: object) -> object:
    """The value with every leaf replaced by its JSON type name, to compare types exactly."""
    if isinstance(value, dict):
        return {key: json_types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_types(item) for item in value]
    return type(value).__name__


def run_with(
    handler: Handler,
    action: Callable[[KraviaClient], Awaitable[Any]],
    **options: Any,
) -> Any:
    """Run `action` with a client whose transport is `handler`, inside a fresh event loop."""

    async def go() -> Any:
        client = KraviaClient(
            base_url=options.pop("base_url", BASE),
            token=TOKEN,
            transport=httpx.MockTransport(handler),
            **options,
        )
        async with client:
            return await action(client)

    return asyncio.run(go())


def answer(status: int = 200, body: object = None, **kwargs: Any) -> Handler:
    """A handler that records the requests it saw and always gives the same answer."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if body is None:
            return httpx.Response(status, **kwargs)
        return httpx.Response(status, json=body, **kwargs)

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


class TestBuildRegisterBody:
    def test_guide_example_matches(self):
        """The guide's example invoice serialises to the guide's own JSON, key for key."""
        ours = json.loads(dumps_exact(build_register_body(guide_invoice(), CREDITOR)))
        guide = json.loads(GUIDE_REGISTER_JSON)

        assert guide.pop("accountingInvoiceId") is None
        assert ours.pop("accountingInvoiceId") == "20003"
        assert ours == guide
        assert json_types(ours) == json_types(guide)

    def test_guide_example_json_types(self):
        """isPrivateIndividual is the string "true" and originalAmount the JSON number 2250."""
        raw = dumps_exact(build_register_body(guide_invoice(), CREDITOR))
        body = json.loads(raw)

        assert body["isPrivateIndividual"] == "true"
        assert body["originalAmount"] == 2250
        assert type(body["originalAmount"]) is int
        assert b'"originalAmount": 2250,' in raw
        assert body["creditorId"] == 10759
        assert body["postalAddress"]["addressPostalCode"] == "1000"

    def test_accounting_invoice_id_carries_prefix(self):
        """accountingInvoiceId is the invoice's id with the source prefix, never null."""
        invoice = Invoice.from_record(GUIDE_RECORD, id_prefix="erp-")

        body = build_register_body(invoice, CREDITOR)

        assert body["accountingInvoiceId"] == "erp-20003"
        assert body["invoiceNo"] == "20003"

    def test_b2b(self):
        """A business debtor is sent as "false" with its organisation number and address line 2."""
        body = json.loads(dumps_exact(build_register_body(Invoice.from_record(B2B_RECORD), 7)))

        assert body["isPrivateIndividual"] == "false"
        assert body["organizationNumber"] == "923609016"
        assert body["ssn"] is None
        assert body["creditorId"] == 7
        assert body["postalAddress"] == {
            "addressAddressLine1": "Karl Johan Gate",
            "addressAddressLine2": "Postboks 12",
            "addressPostalCode": "1000",
            "addressCity": "Oslo",
            "addressCountryCode": "NO",
        }

    def test_no_line2_key_without_line2(self):
        """Without a second address line the key is left out, as in the guide."""
        body = build_register_body(guide_invoice(), CREDITOR)

        assert "addressAddressLine2" not in body["postalAddress"]


class TestDumpsExact:
    @pytest.mark.parametrize(
        ("amount", "raw"),
        [
            (Decimal("1234.50"), b"1234.50"),
            (Decimal("0.10"), b"0.10"),
            (Decimal("0.1"), b"0.1"),
            (Decimal(2250), b"2250"),
            (Decimal("2250.00"), b"2250"),
            (Decimal("1E+3"), b"1000"),
            (Decimal("12345678901234567.89"), b"12345678901234567.89"),
            (Decimal("-2500.00"), b"-2500"),
        ],
    )
    def test_decimals_exact(self, amount, raw):
        """A Decimal is written as the exact JSON number (never via a float)."""
        assert dumps_exact({"amount": amount}) == b'{"amount": ' + raw + b"}"

    def test_many_decimals_keep_their_places(self):
        """Eleven and more Decimals in one body each land in their own place."""
        body = {f"k{index}": Decimal(f"{index}.5") for index in range(12)}

        parsed = json.loads(dumps_exact(body), parse_float=Decimal)

        assert parsed == body

    def test_nested_decimal_and_date(self):
        """Decimals inside lists and objects are exact; dates are ISO text."""
        raw = dumps_exact(
            {"invoices": [{"amount": Decimal("0.30")}], "date": datetime(2025, 1, 2, tzinfo=UTC)}
        )

        assert raw == b'{"invoices": [{"amount": 0.30}], "date": "2025-01-02T00:00:00+00:00"}'

    def test_non_ascii_is_utf8(self):
        """Norwegian letters are sent as UTF-8, not as escapes."""
        assert dumps_exact({"debtorName": "Blåbær Ærlig Øst"}) == (
            '{"debtorName": "Blåbær Ærlig Øst"}'.encode()
        )

    def test_unknown_type_refused(self):
        """A value JSON cannot carry is an error, not silently stringified."""
        with pytest.raises(TypeError, match="set"):
            dumps_exact({"x": {1}})


class TestParseRetryAfter:
    NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("1", 1.0),
            (" 7 ", 7.0),
            ("2.5", 2.5),
            ("0", None),
            ("-3", None),
            ("soon", None),
            ("", None),
            (None, None),
            ("NaN", None),
            ("nan", None),
            ("86400", MAX_RETRY_AFTER_SECONDS),
            (str(MAX_RETRY_AFTER_SECONDS), MAX_RETRY_AFTER_SECONDS),
            # Not delay-seconds as RFC 9110 writes them, though float() would take them:
            ("1e9", None),
            ("1e-9", None),  # would be an immediate retry, past the guard against "0"
            ("Infinity", None),
            ("1_000", None),
            ("\u0663", None),  # an Arabic-Indic three
            # Several headers joined by commas: the longest wait holds.
            ("5, 10", 10.0),
            ("5, soon", None),
        ],
    )
    def test_values(self, value, expected):
        """Seconds are taken as given; zero, negative, NaN and garbage are no hint; big is
        clamped."""
        assert parse_retry_after(value, now=self.NOW) == expected

    def test_http_date_in_future(self):
        """An HTTP-date gives the seconds from now until then."""
        value = format_datetime(self.NOW + timedelta(seconds=30), usegmt=True)

        assert parse_retry_after(value, now=self.NOW) == pytest.approx(30.0)

    def test_http_date_without_now(self):
        """Without `now`, an HTTP-date is measured from the real clock."""
        value = format_datetime(datetime.now(UTC) + timedelta(seconds=45), usegmt=True)

        assert 40.0 <= parse_retry_after(value) <= 45.0

    @pytest.mark.parametrize("delta", [timedelta(seconds=-30), timedelta(0)])
    def test_http_date_not_in_future(self, delta):
        """An HTTP-date now or in the past is no hint."""
        value = format_datetime(self.NOW + delta, usegmt=True)

        assert parse_retry_after(value, now=self.NOW) is None

    def test_http_date_far_future_clamped(self):
        """An HTTP-date a day ahead is clamped."""
        value = format_datetime(self.NOW + timedelta(days=1), usegmt=True)

        assert parse_retry_after(value, now=self.NOW) == MAX_RETRY_AFTER_SECONDS


class TestClassifyResponse:
    @pytest.mark.parametrize("off_by", [timedelta(minutes=-5), timedelta(hours=3)])
    def test_a_retry_after_date_is_measured_by_kravias_clock(self, off_by):
        """An HTTP-date in Retry-After is measured from the answer's `Date`: Kravia's clock,
        not ours (ours here is off by minutes or hours)."""
        kravia_now = datetime.now(UTC).replace(microsecond=0) + off_by
        headers = {
            "Date": format_datetime(kravia_now, usegmt=True),
            "Retry-After": format_datetime(kravia_now + timedelta(seconds=30), usegmt=True),
        }

        error = classify_response(httpx.Response(429, headers=headers), creates=True)

        assert error is not None
        assert error.retry_after == pytest.approx(30.0)

    def test_without_a_date_a_retry_after_date_is_measured_by_ours(self):
        value = format_datetime(datetime.now(UTC) + timedelta(seconds=45), usegmt=True)

        error = classify_response(
            httpx.Response(503, headers={"Retry-After": value, "Date": "garbage"}), creates=True
        )

        assert error is not None
        assert error.retry_after is not None
        assert 40.0 <= error.retry_after <= 45.0

    @pytest.mark.parametrize("creates", [True, False])
    @pytest.mark.parametrize("status", [200, 201, 202, 204])
    def test_success(self, status, creates):
        """Any 2xx is a success."""
        assert classify_response(httpx.Response(status), creates=creates) is None

    @pytest.mark.parametrize(
        ("status", "creates", "failure"),
        [
            (400, True, Failure.TERMINAL),
            (400, False, Failure.TERMINAL),
            (409, True, Failure.TERMINAL),
            (422, True, Failure.TERMINAL),
            (401, True, Failure.AUTH),
            (401, False, Failure.AUTH),
            (403, True, Failure.AUTH),
            (403, False, Failure.AUTH),
            (429, True, Failure.TRANSIENT),
            (429, False, Failure.TRANSIENT),
            (503, True, Failure.TRANSIENT),
            (503, False, Failure.TRANSIENT),
            (500, True, Failure.AMBIGUOUS),
            (500, False, Failure.TRANSIENT),
            (502, True, Failure.AMBIGUOUS),
            (502, False, Failure.TRANSIENT),
            (504, True, Failure.AMBIGUOUS),
            (504, False, Failure.TRANSIENT),
            (408, True, Failure.AMBIGUOUS),
            (408, False, Failure.TRANSIENT),
            (404, True, Failure.CONFIG),
            (404, False, Failure.CONFIG),
            (405, True, Failure.CONFIG),
        ],
    )
    def test_failure_class(self, status, creates, failure):
        """Each status is classified by what to do next, ambiguity only for creating calls."""
        error = classify_response(httpx.Response(status, text="x"), creates=creates)

        assert isinstance(error, KraviaError)
        assert error.failure is failure
        assert error.status == status
        assert str(status) in str(error)

    @pytest.mark.parametrize("status", [429, 503])
    def test_retry_after_honoured(self, status):
        """429 and 503 carry the (clamped) Retry-After hint."""
        hinted = classify_response(
            httpx.Response(status, headers={"Retry-After": "12"}), creates=True
        )
        clamped = classify_response(
            httpx.Response(status, headers={"Retry-After": "99999"}), creates=True
        )
        none = classify_response(httpx.Response(status, headers={"Retry-After": "0"}), creates=True)

        assert hinted is not None
        assert hinted.retry_after == 12.0
        assert clamped is not None
        assert clamped.retry_after == MAX_RETRY_AFTER_SECONDS
        assert none is not None
        assert none.retry_after is None

    def test_validation_body_messages(self):
        """The ASP.NET validation body's messages are in the error text."""
        error = classify_response(httpx.Response(400, json=ValidationBody), creates=True)

        assert error is not None
        text = str(error)
        assert "DebtorName: The DebtorName field is required." in text
        assert "PostalAddress.AddressPostalCode: Not a postal code.; Too short." in text

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({"detail": "Creditor 1 is closed", "title": "Bad"}, "Creditor 1 is closed"),
            ({"title": "Not Found"}, "Not Found"),
            ({"Message": "Invoice not found"}, "Invoice not found"),
        ],
    )
    def test_problem_text(self, body, expected):
        """Problem details' detail/title/message are shown."""
        error = classify_response(httpx.Response(404, json=body), creates=False, per_case=True)

        assert error is not None
        assert expected in str(error)

    def test_plain_text_body(self):
        """A non-JSON body is shown (its start)."""
        error = classify_response(httpx.Response(502, text="<h1>Bad gateway</h1>"), creates=False)

        assert error is not None
        assert "<h1>Bad gateway</h1>" in str(error)


class TestClassifyException:
    @pytest.mark.parametrize(
        ("exc_type", "creates", "failure"),
        [
            (httpx.ConnectError, True, Failure.TRANSIENT),
            (httpx.ConnectTimeout, True, Failure.TRANSIENT),
            (httpx.PoolTimeout, True, Failure.TRANSIENT),
            (httpx.ConnectError, False, Failure.TRANSIENT),
            (httpx.ReadTimeout, True, Failure.AMBIGUOUS),
            (httpx.RemoteProtocolError, True, Failure.AMBIGUOUS),
            (httpx.ReadError, True, Failure.AMBIGUOUS),
            (httpx.WriteTimeout, True, Failure.AMBIGUOUS),
            (httpx.ReadTimeout, False, Failure.TRANSIENT),
            (httpx.RemoteProtocolError, False, Failure.TRANSIENT),
            (httpx.ReadError, False, Failure.TRANSIENT),
        ],
    )
    def test_failure_class(self, exc_type, creates, failure):
        """Not sent is transient; lost after sending is ambiguous when the call creates."""
        error = classify_exception(exc_type("boom"), creates=creates)

        assert error.failure is failure
        assert exc_type.__name__ in str(error)
        assert error.status is None


class TestClientRequests:
    @pytest.mark.parametrize("base", ["https://kravia.test/api/v2/", "https://kravia.test/api/v2"])
    def test_register_request(self, base):
        """register POSTs the exact JSON body to <base>/invoice/register with the raw token."""
        handler = answer(200, {"id": 5})

        kravia_id = run_with(
            handler,
            lambda client: client.register(guide_invoice(), creditor_id=CREDITOR),
            base_url=base,
        )

        assert kravia_id == 5
        (request,) = handler.seen  # type: ignore[attr-defined]
        assert request.method == "POST"
        assert str(request.url) == "https://kravia.test/api/v2/invoice/register"
        assert request.headers["Authorization"] == TOKEN
        assert request.headers["Content-Type"] == "application/json"
        assert request.content == dumps_exact(build_register_body(guide_invoice(), CREDITOR))

    def test_default_base_url_is_the_real_api(self):
        """The documented base URL is the real Kravia API."""
        assert DEFAULT_BASE_URL == "https://api.kravia.ai/api/v2/"

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({"id": 5}, 5),
            (5, 5),
            ({"invoiceId": 7}, 7),
            ({"InvoiceId": 8, "status": "Registered"}, 8),
            ({"id": "9"}, 9),
        ],
    )
    def test_register_id_forms(self, body, expected):
        """The new id is read from a bare integer or an object's id/invoiceId."""
        result = run_with(
            answer(200, body), lambda client: client.register(guide_invoice(), creditor_id=1)
        )

        assert result == expected

    @pytest.mark.parametrize("body", [{"ok": True}, {"id": True}, {"id": "abc"}, [], "registered"])
    def test_register_without_id_is_ambiguous(self, body):
        """A 2xx without a usable id means the case exists but its id is unknown: ambiguous."""
        with pytest.raises(KraviaError) as info:
            run_with(
                answer(200, body), lambda client: client.register(guide_invoice(), creditor_id=1)
            )

        assert info.value.failure is Failure.AMBIGUOUS
        assert info.value.status == 200

    def test_register_empty_body_is_ambiguous(self):
        """A 2xx with no body at all is ambiguous too (not a crash)."""
        with pytest.raises(KraviaError) as info:
            run_with(answer(201), lambda client: client.register(guide_invoice(), creditor_id=1))

        assert info.value.failure is Failure.AMBIGUOUS

    def test_upload_request(self):
        """upload_document POSTs multipart with one `file` part holding the PDF, ?type=Invoice."""
        handler = answer(200)
        pdf = minimal_pdf("20003")

        run_with(handler, lambda client: client.upload_document(5, name="20003.pdf", content=pdf))

        (request,) = handler.seen  # type: ignore[attr-defined]
        assert request.method == "POST"
        assert request.url.path == "/api/v2/invoice/5/document"
        assert dict(request.url.params) == {"type": "Invoice"}
        assert request.headers["Authorization"] == TOKEN
        content_type = request.headers["Content-Type"]
        assert content_type.startswith("multipart/form-data; boundary=")
        message = email.message_from_bytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.content,
            policy=email.policy.HTTP,
        )
        parts = list(message.iter_parts())  # type: ignore[attr-defined]
        assert len(parts) == 1
        (part,) = parts
        assert part.get_param("name", header="content-disposition") == "file"
        assert part.get_filename() == "20003.pdf"
        assert part.get_content_type() == "application/pdf"
        assert part.get_payload(decode=True) == pdf

    def test_start_request(self):
        """start POSTs {"Message": ...} as JSON to invoice/{id}/action?action=Start."""
        handler = answer(200)

        run_with(handler, lambda client: client.start(42, message="Confirming invoice action"))

        (request,) = handler.seen  # type: ignore[attr-defined]
        assert request.method == "POST"
        assert request.url.path == "/api/v2/invoice/42/action"
        assert dict(request.url.params) == {"action": "Start"}
        assert request.headers["Authorization"] == TOKEN
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.content) == {"Message": "Confirming invoice action"}

    def test_details(self):
        """details GETs invoice/{id}/details and returns the object."""
        handler = answer(200, {"id": 3, "availableActions": ["Start"]})

        body = run_with(handler, lambda client: client.details(3))

        assert body == {"id": 3, "availableActions": ["Start"]}
        (request,) = handler.seen  # type: ignore[attr-defined]
        assert request.method == "GET"
        assert request.url.path == "/api/v2/invoice/3/details"

    def test_details_not_an_object(self):
        """A details answer that is not an object is a transient error."""
        with pytest.raises(KraviaError) as info:
            run_with(answer(200, [1, 2]), lambda client: client.details(3))

        assert info.value.failure is Failure.TRANSIENT


class TestClientErrors:
    def test_validation_error_text(self):
        """A 400 validation body raises TERMINAL with Kravia's messages in the text."""
        with pytest.raises(KraviaError) as info:
            run_with(
                answer(400, ValidationBody),
                lambda client: client.register(guide_invoice(), creditor_id=1),
            )

        assert info.value.failure is Failure.TERMINAL
        assert info.value.status == 400
        assert "The DebtorName field is required." in str(info.value)
        assert "Not a postal code." in str(info.value)

    def test_token_not_in_error(self):
        """The token is never part of an error message."""
        with pytest.raises(KraviaError) as info:
            run_with(
                answer(401, {"title": "Unauthorized"}),
                lambda client: client.start(1, message="m"),
            )

        assert info.value.failure is Failure.AUTH
        assert TOKEN not in str(info.value)

    def test_429_retry_after(self):
        """A 429 raises TRANSIENT carrying the Retry-After hint."""
        with pytest.raises(KraviaError) as info:
            run_with(
                answer(429, headers={"Retry-After": "3"}),
                lambda client: client.register(guide_invoice(), creditor_id=1),
            )

        assert info.value.failure is Failure.TRANSIENT
        assert info.value.retry_after == 3.0

    @pytest.mark.parametrize(
        ("exc_type", "register", "search_failure"),
        [
            (httpx.ConnectError, Failure.TRANSIENT, Failure.TRANSIENT),
            (httpx.ReadTimeout, Failure.AMBIGUOUS, Failure.TRANSIENT),
            (httpx.RemoteProtocolError, Failure.AMBIGUOUS, Failure.TRANSIENT),
        ],
    )
    def test_transport_errors(self, exc_type, register, search_failure):
        """Transport errors are classified per call: register creates, search does not."""

        def handler(request: httpx.Request) -> httpx.Response:
            raise exc_type("lost", request=request)

        for action, expected in [
            (lambda client: client.register(guide_invoice(), creditor_id=1), register),
            (search(datetime(2025, 1, 1, tzinfo=UTC), page_retries=0), search_failure),
        ]:
            with pytest.raises(KraviaError) as info:
                run_with(handler, action)
            assert info.value.failure is expected


def search_handler(pages: dict[int, object]) -> Handler:
    """A search endpoint answering by `skip` (nothing beyond the pages given); records the
    query parameters it saw."""
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v2/invoice/search"
        params = dict(request.url.params)
        seen.append(params)
        return httpx.Response(200, json=pages.get(int(params["skip"]), []))

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def table_handler(rows: list[dict[str, Any]]) -> Handler:
    """A search endpoint serving `rows[skip:skip + top]`, as offset paging does."""
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        skip, top = int(params["skip"]), int(params["top"])
        return httpx.Response(200, json=rows[skip : skip + top])

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def items(ids: range | list[int]) -> list[dict[str, Any]]:
    return [
        {
            "id": kravia_id,
            "accountingInvoiceId": f"A-{kravia_id}",
            "invoiceNo": kravia_id,
            "status": "Registered",
            "lastUpdatedTime": "2025-03-01T10:00:00.0000000",
        }
        for kravia_id in ids
    ]


def search(since: datetime, **options: Any) -> Callable[[KraviaClient], Awaitable[Any]]:
    async def items(client: KraviaClient) -> list[Any]:
        return (await client.search_updated_since(since, **options)).items

    return items


class TestSearch:
    SINCE = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)

    def test_a_server_with_smaller_pages_is_paged_to_the_end(self):
        """A server that caps `top` below what we ask still yields every case."""
        rows = [{"id": n, "accountingInvoiceId": f"A-{n}"} for n in range(1, 251)]

        def capped(request: httpx.Request) -> httpx.Response:
            skip = int(request.url.params["skip"])
            return httpx.Response(200, json=rows[skip : skip + 50])

        found = run_with(capped, search(self.SINCE))

        assert sorted(item.kravia_id for item in found) == list(range(1, 251))

    def test_pages_that_shift_while_paged_are_never_taken_as_complete(self):
        """When cases move between page reads, the search fails as transient instead of
        returning a list that could miss the case being looked for."""
        rows = [{"id": n, "accountingInvoiceId": f"A-{n}"} for n in range(1, 251)]
        reads = 0

        def shifting(request: httpx.Request) -> httpx.Response:
            nonlocal reads
            reads += 1
            skip, top = int(request.url.params["skip"]), int(request.url.params["top"])
            if skip > 0:  # one earlier case was updated: it moved to the end
                rows.append(rows.pop(0))
            return httpx.Response(200, json=rows[skip : skip + top])

        with pytest.raises(KraviaError) as info:
            run_with(shifting, search(self.SINCE, page_retries=1, retry_base=0.001))

        assert info.value.failure is Failure.TRANSIENT
        assert "moving" in str(info.value)

    def test_single_short_page(self):
        """A short page that says it holds every match is the whole answer; the query follows
        the guide's parameters."""
        handler = search_handler({0: {"items": items([11, 12]), "totalCount": 2}})

        found = run_with(handler, search(self.SINCE))

        assert [item.kravia_id for item in found] == [11, 12]
        assert found[0].accounting_invoice_id == "A-11"
        assert found[0].invoice_number == "11"
        assert found[0].status == "Registered"
        assert found[0].updated == "2025-03-01T10:00:00.0000000"
        assert handler.seen == [  # type: ignore[attr-defined]
            {
                "byAscending": "True",
                "lastUpdatedTime": "2025-03-01T09:30:15.1234560",
                "orderBy": "11",
                "skip": "0",
                "top": str(SEARCH_PAGE_SIZE),
            }
        ]

    def test_a_short_page_without_a_count_is_confirmed_by_the_next(self):
        """Without a total count a short page may be a server's cap, not the end: the next
        page (starting inside this one) confirms nothing more comes."""
        handler = search_handler({0: items([11, 12, 13, 14]), 2: items([13, 14])})

        found = run_with(handler, search(self.SINCE))

        assert [item.kravia_id for item in found] == [11, 12, 13, 14]
        skips = [params["skip"] for params in handler.seen]  # type: ignore[attr-defined]
        assert skips == ["0", "2"]

    def test_a_server_that_serves_ten_or_fewer_a_page_is_paged_to_the_end(self):
        """Even pages no longer than the usual overlap (10) are followed to the end."""
        rows = [{"id": n, "accountingInvoiceId": f"A-{n}"} for n in range(1, 26)]

        def capped(request: httpx.Request) -> httpx.Response:
            skip = int(request.url.params["skip"])
            return httpx.Response(200, json=rows[skip : skip + 10])

        found = run_with(capped, search(self.SINCE))

        assert sorted(item.kravia_id for item in found) == list(range(1, 26))

    @pytest.mark.parametrize("total", [0, 1, SEARCH_PAGE_SIZE - 1, SEARCH_PAGE_SIZE, 250, 1000])
    def test_paging_to_the_end(self, total):
        """Pages are followed until one brings nothing new; every case is reported once."""
        handler = table_handler(items(range(1, total + 1)))

        found = run_with(handler, search(self.SINCE))

        ids = [item.kravia_id for item in found]
        assert sorted(ids) == list(range(1, total + 1))
        skips = [int(params["skip"]) for params in handler.seen]  # type: ignore[attr-defined]
        assert skips[0] == 0
        assert skips == sorted(set(skips))  # always forward
        assert total - skips[-1] <= SEARCH_PAGE_OVERLAP  # the last page brought nothing new

    def test_overlapping_pages_deduplicated(self):
        """A case the pages show twice (it moved while paging) is reported once."""
        rows = items(range(1, 151))
        rows.insert(120, items([50])[0])  # case 50 updated again: it shows up a second time
        handler = table_handler(rows)

        found = run_with(handler, search(self.SINCE))

        ids = [item.kravia_id for item in found]
        assert len(ids) == len(set(ids)) == 150

    @pytest.mark.parametrize("key", ["items", "Items", "value"])
    def test_envelope(self, key):
        """An object holding the items under a known key is accepted like a bare list."""
        handler = search_handler({0: {key: items([3]), "total": 1}})

        found = run_with(handler, search(self.SINCE))

        assert [item.kravia_id for item in found] == [3]

    def test_case_insensitive_properties(self):
        """Item properties are matched case-insensitively; digit-text ids are read; an item
        with an invoice number but no accountingInvoiceId is kept, as unknown."""
        handler = search_handler(
            {
                0: [
                    {"Id": 4, "AccountingInvoiceId": "X"},
                    {"InvoiceId": 5, "InvoiceNo": "55"},
                    {"id": "6", "invoiceno": 66},
                ]
            }
        )

        found = run_with(handler, search(self.SINCE))

        assert [
            (item.kravia_id, item.accounting_invoice_id, item.invoice_number) for item in found
        ] == [(4, "X", None), (5, None, "55"), (6, None, "66")]

    @pytest.mark.parametrize(
        "bad",
        [
            {"accountingInvoiceId": "X"},  # no Kravia id
            {"id": "four", "accountingInvoiceId": "X"},  # an id we cannot read
            {"id": 7},  # nothing that says which invoice it is
            {"id": 7, "accountingInvoiceId": "", "invoiceNo": ""},
            "junk",  # not an object at all
        ],
    )
    def test_an_item_we_cannot_identify_fails_the_search(self, bad):
        """One item we cannot identify makes the whole answer unreadable (transient): a case we
        cannot see could be the very one a look-up is for, so it is never skipped."""
        handler = search_handler({0: [{"id": 4, "accountingInvoiceId": "X"}, bad]})

        with pytest.raises(KraviaError) as info:
            run_with(handler, search(self.SINCE, page_retries=0))

        assert info.value.failure is Failure.TRANSIENT

    def test_unrecognised_answer_is_transient(self):
        """A search answer in an unknown shape is a transient error, not an empty result."""
        with pytest.raises(KraviaError) as info:
            run_with(search_handler({0: {"unexpected": []}}), search(self.SINCE, page_retries=0))

        assert info.value.failure is Failure.TRANSIENT

    def test_failed_page_read_again(self):
        """A page that fails transiently is read again; the result is complete."""
        answers = iter(
            [
                httpx.Response(503),
                httpx.Response(200, json=items([1, 2])),
                httpx.Response(200, json=items([2])),  # the next page: nothing new
            ]
        )

        found = run_with(
            lambda _request: next(answers), search(self.SINCE, page_retries=2, retry_base=0.001)
        )

        assert [item.kravia_id for item in found] == [1, 2]

    def test_auth_failure_not_retried(self):
        """A refused token is raised at once, not retried."""
        handler = answer(401)

        with pytest.raises(KraviaError) as info:
            run_with(handler, search(self.SINCE, page_retries=3, retry_base=0.001))

        assert info.value.failure is Failure.AUTH
        assert len(handler.seen) == 1  # type: ignore[attr-defined]


class TestStats:
    def test_counts_by_operation_and_outcome(self):
        """stats counts every call by operation and outcome."""
        answers = iter(
            [
                httpx.Response(200, json={"id": 1}),
                httpx.Response(400, json=ValidationBody),
                httpx.Response(503),
                httpx.Response(200),
                httpx.Response(200, json=[]),
            ]
        )

        def handler(request: httpx.Request) -> httpx.Response:
            return next(answers)

        async def calls(client: KraviaClient) -> dict[str, int]:
            await client.register(guide_invoice(), creditor_id=1)
            for _ in range(2):
                with pytest.raises(KraviaError):
                    await client.register(guide_invoice(), creditor_id=1)
            await client.start(1, message="go")
            await client.search_updated_since(datetime(2025, 1, 1, tzinfo=UTC))
            assert client.stats.total() == 5
            return client.stats.counts

        counts = run_with(handler, calls)

        assert counts == {
            "register:ok": 1,
            "register:terminal": 1,
            "register:transient": 1,
            "action:ok": 1,
            "search:ok": 1,
        }


class TestRateAndConcurrency:
    def test_client_spaces_calls(self):
        """With requests_per_second, the requests reach the transport spaced by the interval."""
        arrivals: list[float] = []

        def handler(request: httpx.Request) -> httpx.Response:
            arrivals.append(time.monotonic())
            return httpx.Response(200)

        async def calls(client: KraviaClient) -> None:
            await asyncio.gather(*(client.start(n, message="m") for n in range(5)))

        run_with(handler, calls, requests_per_second=25.0)  # 0.04 s apart

        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert len(arrivals) == 5
        assert all(gap >= 0.03 for gap in gaps), gaps
        assert arrivals[-1] - arrivals[0] >= 0.15

    def test_max_in_flight(self):
        """No more than max_in_flight requests are outstanding at once."""
        state = {"now": 0, "peak": 0}

        async def handler(request: httpx.Request) -> httpx.Response:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            await asyncio.sleep(0.02)
            state["now"] -= 1
            return httpx.Response(200)

        async def calls(client: KraviaClient) -> None:
            await asyncio.gather(*(client.start(n, message="m") for n in range(12)))

        run_with(handler, calls, max_in_flight=3, requests_per_second=None)

        assert state["peak"] == 3
        assert state["now"] == 0


# --- payments, credit notes, standing, settlements ---------------------------------------------

# The request bodies of Kravia's guide for a direct payment and a credit note.
GUIDE_PAYMENT_JSON = """{"date": "2024-07-16", "description": "Paid directly",
  "AccountingPaymentId": "286519", "amount": 3000,
  "invoices": [{"invoiceId": 1553199, "amount": 2000}, {"invoiceId": 1553198, "amount": 1000}]}"""
GUIDE_CREDIT_NOTE_JSON = """{"Date": "2024-09-16T00:00:00", "Amount": -2500,
  "AccountingPaymentId": "4564654465", "Description": "Credited",
  "Invoices": [{"InvoiceId": 308457, "Amount": -2500.0}]}"""


def lines(*pairs: tuple[int, str]) -> list[MoneyLine]:
    return [MoneyLine(kravia_id, Decimal(amount)) for kravia_id, amount in pairs]


def entry(**fields: Any) -> dict[str, Any]:
    """One payment entry as the simulator lists it in a case's details."""
    base: dict[str, Any] = {
        "id": 700001,
        "type": "Payment",
        "accountingPaymentId": "P-1",
        "date": "2026-11-02",
        "amount": Decimal("100.50"),
        "appliedAmount": Decimal("100.50"),
        "settlementId": None,
        "registeredTime": "2026-11-27T06:24:01.1234560",
    }
    base.update(fields)
    return base


def standing_with(*payments: dict[str, Any]) -> CaseStanding:
    return case_standing({"status": "CollectionStarted", "payments": list(payments)})


class TestMoneyLine:
    @pytest.mark.parametrize(
        ("kravia_id", "amount", "error"),
        [
            (1, Decimal(0), ValueError),
            (1, Decimal(-5), ValueError),
            (1, Decimal("NaN"), ValueError),
            (1, 5.5, TypeError),
            (1, 5, TypeError),
            (True, Decimal(1), TypeError),
            ("1", Decimal(1), TypeError),
        ],
    )
    def test_refuses_what_is_not_a_positive_decimal_on_a_case(self, kravia_id, amount, error):
        """A line is an integer case id and a positive Decimal; anything else is refused."""
        with pytest.raises(error):
            MoneyLine(kravia_id, amount)


class TestPaymentBodies:
    def test_payment_matches_the_guide(self):
        """Our payment body for the guide's example is the guide's JSON, names and types."""
        body = build_payment_body(
            accounting_payment_id="286519",
            paid_on=date(2024, 7, 16),
            description="Paid directly",
            lines=lines((1553199, "2000"), (1553198, "1000")),
        )
        sent = json.loads(dumps_exact(body), parse_float=Decimal)
        guide = json.loads(GUIDE_PAYMENT_JSON, parse_float=Decimal)
        assert sent == guide
        assert json_types(sent) == json_types(guide)

    def test_credit_note_matches_the_guide(self):
        """Our credit note body is the guide's: PascalCase, midnight date, negative amounts."""
        body = build_credit_note_body(
            accounting_payment_id="4564654465",
            credited_on=date(2024, 9, 16),
            description="Credited",
            lines=lines((308457, "2500")),
        )
        sent = json.loads(dumps_exact(body), parse_float=Decimal)
        assert sent == json.loads(GUIDE_CREDIT_NOTE_JSON, parse_float=Decimal)
        assert list(sent) == ["Date", "Amount", "AccountingPaymentId", "Description", "Invoices"]

    def test_amounts_exact(self):
        """The total is the exact decimal sum of the lines, written without a float."""
        body = build_payment_body(
            accounting_payment_id="p",
            paid_on=date(2026, 1, 2),
            description="",
            lines=lines((1, "0.10"), (2, "0.20"), (3, "1234567890123.45")),
        )
        text = dumps_exact(body).decode()
        assert '"amount": 1234567890123.75' in text
        assert '"amount": 0.10' in text

    @pytest.mark.parametrize(
        ("payment_id", "money"),
        [("p", []), ("  ", lines((1, "1"))), ("p", lines((1, "1"), (1, "2")))],
        ids=["no-lines", "blank-id", "case-twice"],
    )
    def test_refused_before_sending(self, payment_id, money):
        """No lines, a blank id or a case listed twice is a programming error, never sent."""
        with pytest.raises(ValueError, match=r"covers no case|non-blank|more than once"):
            build_payment_body(
                accounting_payment_id=payment_id,
                paid_on=date(2026, 1, 2),
                description="",
                lines=money,
            )
        with pytest.raises(ValueError, match=r"covers no case|non-blank|more than once"):
            build_credit_note_body(
                accounting_payment_id=payment_id,
                credited_on=date(2026, 1, 2),
                description="",
                lines=money,
            )

    def test_requests(self):
        """register_payment and register_credit_note POST their bodies as JSON."""
        handler = answer(200, {"success": True})

        async def both(client: KraviaClient) -> None:
            await client.register_payment(
                accounting_payment_id="P-1",
                paid_on=date(2026, 3, 1),
                description="d",
                lines=lines((7, "10.5")),
            )
            await client.register_credit_note(
                accounting_payment_id="C-1",
                credited_on=date(2026, 3, 2),
                description="c",
                lines=lines((7, "1.25")),
            )

        run_with(handler, both)

        payment, credit = handler.seen  # type: ignore[attr-defined]
        assert (payment.method, payment.url.path) == ("POST", "/api/v2/invoice/payment")
        assert (credit.method, credit.url.path) == ("POST", "/api/v2/invoice/creditnote")
        for request in (payment, credit):
            assert request.headers["Content-Type"] == "application/json"
            assert request.headers["Authorization"] == TOKEN
        assert json.loads(payment.content, parse_float=Decimal)["amount"] == Decimal("10.5")
        assert json.loads(credit.content, parse_float=Decimal)["Invoices"] == [
            {"InvoiceId": 7, "Amount": Decimal("-1.25")}
        ]

    @pytest.mark.parametrize(
        ("fault", "failure"),
        [
            (httpx.ReadTimeout, Failure.AMBIGUOUS),
            (httpx.RemoteProtocolError, Failure.AMBIGUOUS),
            (httpx.ConnectError, Failure.TRANSIENT),
        ],
    )
    def test_lost_answer_is_ambiguous(self, fault, failure):
        """A payment whose answer is lost after sending is ambiguous, never retried blindly."""

        def handler(request: httpx.Request) -> httpx.Response:
            raise fault("lost", request=request)

        with pytest.raises(KraviaError) as info:
            run_with(
                handler,
                lambda client: client.register_payment(
                    accounting_payment_id="P",
                    paid_on=date(2026, 1, 1),
                    description="",
                    lines=lines((1, "1")),
                ),
            )
        assert info.value.failure is failure


class TestCaseStanding:
    def test_full_details(self):
        """Status, capital, outstanding and every kind of payment are read exactly."""
        details = loads_exact(
            """{"status": "CollectionStarted", "remainingAmount": 1249.45,
                "outstandingAmount": 1319.45, "payments": [
                {"type": "Payment", "accountingPaymentId": "P-1", "date": "2026-11-02",
                 "amount": 1000.55, "appliedAmount": 1000.55},
                {"type": "CreditNote", "accountingPaymentId": 77, "date": "2026-11-03T00:00:00",
                 "amount": -300, "appliedAmount": -0.30},
                {"type": "Collected", "accountingPaymentId": null, "date": "2026-11-04",
                 "amount": 12.10, "appliedAmount": 12.10, "settlementId": 90001},
                {"type": "Interest", "amount": 3}]}"""
        )

        standing = case_standing(details)

        assert standing.status == "CollectionStarted"
        assert standing.remaining_capital == Decimal("1249.45")
        assert standing.outstanding == Decimal("1319.45")
        assert standing.closed is False
        assert standing.payments == [
            RecordedPayment(
                "P-1",
                Decimal("1000.55"),
                date(2026, 11, 2),
                PaymentKind.PAYMENT,
                Decimal("1000.55"),
            ),
            RecordedPayment(
                "77", Decimal(300), date(2026, 11, 3), PaymentKind.CREDIT_NOTE, Decimal("0.30")
            ),
            RecordedPayment(
                None, Decimal("12.10"), date(2026, 11, 4), PaymentKind.COLLECTED, Decimal("12.10")
            ),
            RecordedPayment(None, Decimal(3), None, PaymentKind.UNKNOWN, None),
        ]
        assert standing.payments[0].kind == "payment"

    def test_details_that_say_nothing(self):
        """Details without status, amounts or payments give None everywhere, not a guess."""
        standing = case_standing({"id": 5, "documents": []})

        assert standing == CaseStanding(None, None, None, None, None)
        assert payment_recorded(standing, "P-1") is None

    @pytest.mark.parametrize(
        ("status", "closed"),
        [
            ("Closed", True),
            ("closed", True),
            ("Registered", False),
            ("CollectionStarted", False),
            ("Paused", False),
            ("Settled", None),
            ("", None),
        ],
    )
    def test_closed_only_for_known_statuses(self, status, closed):
        """Only the assumed status names are read as open or closed; others leave it unknown."""
        assert case_standing({"Status": status}).closed is closed

    @pytest.mark.parametrize(
        "payments",
        [
            "none",
            {"type": "Payment"},
            [entry(), "oops"],
            [entry(), entry(amount=None)],
            [entry(amount="a lot")],
            [entry(type="Payment", amount=Decimal(-5))],
            [entry(type="Collected", appliedAmount=Decimal(-5))],
        ],
        ids=[
            "string",
            "object",
            "entry-not-object",
            "no-amount",
            "bad-amount",
            "negative",
            "negative-applied",
        ],
    )
    def test_unreadable_payments_are_unknown(self, payments):
        """A payments list with anything we cannot read is None as a whole: a partial list
        could hide the payment being looked for."""
        standing = case_standing({"payments": payments})

        assert standing.payments is None
        assert payment_recorded(standing, "P-1") is None

    def test_amounts_as_strings_and_integers(self):
        """String and integer amounts are read exactly; other types are not amounts."""
        standing = case_standing(
            {"remainingAmount": " 10.10 ", "outstandingAmount": 11, "payments": []}
        )
        assert standing.remaining_capital == Decimal("10.10")
        assert standing.outstanding == Decimal(11)
        assert case_standing({"remainingAmount": True}).remaining_capital is None
        assert case_standing({"remainingAmount": [1]}).remaining_capital is None
        assert case_standing({"remainingAmount": "NaN"}).remaining_capital is None

    def test_float_amounts_are_a_bug(self):
        """Details parsed through float are refused loudly: the exact amount is already lost."""
        with pytest.raises(TypeError, match="parse_float=Decimal"):
            case_standing({"remainingAmount": 0.1})

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2026-11-02", date(2026, 11, 2)),
            ("2026-11-02T23:59:59.1234567", date(2026, 11, 2)),
            ("2026-11-02 10:00", date(2026, 11, 2)),
            ("02.11.2026", None),
            ("2026-11-31", None),
            ("2026-11-0212", None),
            (20261102, None),
        ],
    )
    def test_payment_dates(self, value, expected):
        """The date of a payment is its calendar date, or None when it is not one."""
        (payment,) = case_standing({"payments": [entry(date=value)]}).payments or []
        assert payment.paid_on == expected


class TestPaymentRecorded:
    def test_found_by_id(self):
        """Our id among the payments: recorded."""
        standing = standing_with(entry(accountingPaymentId="X"), entry(accountingPaymentId="P-1"))
        assert payment_recorded(standing, "P-1") is True

    def test_absent_when_every_entry_has_another_id(self):
        """Every entry that could be ours carries another id: not recorded."""
        standing = standing_with(
            entry(accountingPaymentId="X"), entry(type="Collected", accountingPaymentId=None)
        )
        assert payment_recorded(standing, "P-1") is False
        assert payment_recorded(standing_with(), "P-1") is False

    def test_an_entry_without_id_leaves_it_open(self):
        """A direct payment or credit note listed without an id could be ours: unknown."""
        standing = standing_with(entry(accountingPaymentId=None))
        assert payment_recorded(standing, "P-1") is None

    def test_kravia_collections_never_count_as_ours(self):
        """A Collected entry carrying our id does not make our payment recorded."""
        standing = standing_with(entry(type="Collected", accountingPaymentId="P-1"))
        assert payment_recorded(standing, "P-1") is False

    def test_kind_tells_payment_and_credit_note_apart(self):
        """With a kind, a payment and a credit note that share an id are told apart."""
        standing = standing_with(
            entry(
                type="CreditNote",
                accountingPaymentId="7",
                amount=Decimal(-1),
                appliedAmount=Decimal(-1),
            )
        )
        assert payment_recorded(standing, "7", kind=PaymentKind.CREDIT_NOTE) is True
        assert payment_recorded(standing, "7", kind=PaymentKind.PAYMENT) is False
        unknown = standing_with(entry(type="Refund", accountingPaymentId="7"))
        assert payment_recorded(unknown, "7", kind=PaymentKind.PAYMENT) is None
        assert payment_recorded(unknown, "7") is True


SETTLEMENT = {
    "id": 90001,
    "settlementDate": "2026-11-20",
    "amount": Decimal("750.25"),
    "currencyCode": "NOK",
    "isBooked": False,
    "internalAccountingId": None,
    "invoices": [{"invoiceId": 1000001, "invoiceNo": "1", "amount": Decimal("750.25")}],
}


class TestSettlements:
    @pytest.mark.parametrize("wrap", [lambda s: [s], lambda s: {"totalCount": 1, "items": [s]}])
    def test_parse(self, wrap):
        """A settlement is read with its date, amount, lines and booked flag, list or envelope."""
        (settlement,) = parse_settlements(wrap(SETTLEMENT))

        assert settlement == Settlement(
            id=90001,
            settled_on=date(2026, 11, 20),
            amount=Decimal("750.25"),
            lines=[MoneyLine(1000001, Decimal("750.25"))],
            booked=False,
        )

    def test_the_reference_a_booked_one_was_booked_under_is_read(self):
        """`internalAccountingId` of a booked settlement is its reference; missing, blank or
        not text, it is None (the settlement is still read)."""
        booked = SETTLEMENT | {"isBooked": True, "internalAccountingId": "BILAG 7"}
        (read,) = parse_settlements([booked])
        assert (read.booked, read.reference) == (True, "BILAG 7")
        without = {k: v for k, v in SETTLEMENT.items() if k != "internalAccountingId"}
        for item in (
            without,
            SETTLEMENT | {"internalAccountingId": " "},
            booked | {"internalAccountingId": 7},
        ):
            (read,) = parse_settlements([item])
            assert read.reference is None

    def test_unstated_date_and_flag_are_none(self):
        """A settlement without a date or booked flag has them as None."""
        bare = {"Id": "5", "Amount": 10, "Invoices": [{"InvoiceId": 1, "Amount": 10}]}
        (settlement,) = parse_settlements([bare])
        assert (settlement.id, settlement.settled_on, settlement.booked) == (5, None, None)

    @pytest.mark.parametrize(
        "item",
        [
            {k: v for k, v in SETTLEMENT.items() if k != "invoices"},
            {k: v for k, v in SETTLEMENT.items() if k != "amount"},
            SETTLEMENT | {"id": "x"},
            SETTLEMENT | {"invoices": [{"invoiceId": 1}]},
            SETTLEMENT | {"invoices": [{"invoiceId": 1, "amount": Decimal(-1)}]},
            SETTLEMENT | {"invoices": ["x"]},
            "settlement",
        ],
        ids=[
            "no-lines",
            "no-amount",
            "bad-id",
            "line-without-amount",
            "negative-line",
            "line-not-object",
            "not-object",
        ],
    )
    def test_anything_unreadable_fails_the_whole_answer(self, item):
        """One settlement we cannot read fails the answer: a hidden payout could be echoed."""
        with pytest.raises(ValueError, match="unrecognised settlement"):
            parse_settlements([SETTLEMENT, item])

    def test_not_a_list(self):
        """An answer without a list of settlements is refused."""
        with pytest.raises(ValueError, match="unrecognised settlements answer"):
            parse_settlements({"count": 0})

    def test_requests(self):
        """settlements GETs with ExcludeClosed; bookkeep PATCHes with internalAccountingId."""
        handler = answer(200, {"items": []})

        async def both(client: KraviaClient) -> list[Settlement]:
            found = await client.settlements()
            await client.settlements(exclude_closed=False)
            await client.bookkeep_settlement(90001, internal_accounting_id="BILAG 7")
            return found

        assert run_with(handler, both) == []
        first, second, book = handler.seen  # type: ignore[attr-defined]
        assert (first.method, first.url.path) == ("GET", "/api/v2/settlements")
        assert dict(first.url.params) == {"ExcludeClosed": "true"}
        assert dict(second.url.params) == {"ExcludeClosed": "false"}
        assert (book.method, book.url.path) == ("PATCH", "/api/v2/settlements/90001/bookkeep")
        assert dict(book.url.params) == {"internalAccountingId": "BILAG 7"}

    def test_unreadable_answer_is_transient(self):
        """An unreadable settlements answer fails as transient, never as an empty list."""
        with pytest.raises(KraviaError) as info:
            run_with(answer(200, [{"id": 1}]), lambda client: client.settlements())
        assert info.value.failure is Failure.TRANSIENT


class TestSearchMoney:
    def test_search_items_carry_capital_exactly(self):
        """Search items carry status, remaining capital and outstanding, parsed exactly."""
        row = b'[{"id": 4, "accountingInvoiceId": "A-4", "status": "Closed", "remainingAmount": 0.10, "outstandingAmount": 1e2}]'

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=row, headers={"Content-Type": "application/json"})

        (item,) = run_with(handler, search(TestSearch.SINCE))

        assert item.status == "Closed"
        assert item.remaining_capital == Decimal("0.10")
        assert str(item.remaining_capital) == "0.10"
        assert item.outstanding == Decimal(100)

    def test_missing_amounts_are_none(self):
        """A search item without amounts says nothing about them."""
        (item,) = run_with(
            answer(200, [{"id": 4, "accountingInvoiceId": "A-4"}]),
            search(TestSearch.SINCE),
        )
        assert (item.remaining_capital, item.outstanding) == (None, None)


# --- against the running simulator ------------------------------------------------------------


def on_sim(sim: Sim, action: Callable[[KraviaClient], Awaitable[Any]], **options: Any) -> Any:
    """Run `action` with a real client against the running simulator."""

    async def go() -> Any:
        async with KraviaClient(base_url=sim.base_url, token=SIM_TOKEN, **options) as client:
            return await action(client)

    return asyncio.run(go())


def registered(sim: Sim, count: int = 1) -> list[int]:
    async def go(client: KraviaClient) -> list[int]:
        return [
            await client.register(guide_invoice(), creditor_id=CREDITOR_ID) for _ in range(count)
        ]

    return on_sim(sim, go)


def standing_of(sim: Sim, kravia_id: int) -> CaseStanding:
    async def go(client: KraviaClient) -> CaseStanding:
        return case_standing(await client.details(kravia_id))

    return on_sim(sim, go)


def pay(client: KraviaClient, payment_id: str, *pairs: tuple[int, str]) -> Awaitable[None]:
    return client.register_payment(
        accounting_payment_id=payment_id,
        paid_on=date(2026, 11, 2),
        description="Paid to the creditor",
        lines=lines(*pairs),
    )


def credit(client: KraviaClient, payment_id: str, *pairs: tuple[int, str]) -> Awaitable[None]:
    return client.register_credit_note(
        accounting_payment_id=payment_id,
        credited_on=date(2026, 11, 3),
        description="Credit note",
        lines=lines(*pairs),
    )


class TestAgainstSimulator:
    def test_payments_and_credit_notes_bring_the_capital_exactly_down(self, sim: Sim):
        """A direct payment, a partial and a full credit note, and a payout leave the capital
        exactly right and the case closed; each is recorded once under its id."""
        first, second = registered(sim, 2)
        amount = Decimal(guide_invoice().amount)

        async def go(client: KraviaClient) -> None:
            await pay(client, "P-1", (first, "1000.55"), (second, "0.45"))
            await credit(client, "C-1", (first, "249.45"))

        on_sim(sim, go)
        sim.simulator.payout([(first, Decimal("500.00"))])
        rest = amount - Decimal("1750.00")  # 2250 - 1000.55 - 249.45 - 500
        on_sim(sim, lambda client: credit(client, "C-2", (first, str(rest))))

        standing = standing_of(sim, first)
        assert standing.remaining_capital == Decimal(0)
        assert standing.outstanding == Decimal(0)
        assert standing.status == "Closed"
        assert standing.closed is True
        assert [(p.kind, p.accounting_payment_id, p.amount) for p in standing.payments or []] == [
            (PaymentKind.PAYMENT, "P-1", Decimal("1000.55")),
            (PaymentKind.CREDIT_NOTE, "C-1", Decimal("249.45")),
            (PaymentKind.COLLECTED, None, Decimal("500.00")),
            (PaymentKind.CREDIT_NOTE, "C-2", rest),
        ]
        assert payment_recorded(standing, "P-1") is True
        assert payment_recorded(standing, "C-2", kind=PaymentKind.CREDIT_NOTE) is True
        assert payment_recorded(standing, "P-2") is False
        assert standing_of(sim, second).remaining_capital == amount - Decimal("0.45")
        sent = [
            e["accountingPaymentId"] for e in sim.simulator.payments() if e["type"] != "Collected"
        ]
        assert sent == ["P-1", "C-1", "C-2"]

    def test_excess_is_clamped_by_kravia(self, sim: Sim):
        """A payment above the remaining capital is applied up to it; the details say so."""
        (case,) = registered(sim)
        on_sim(sim, lambda client: pay(client, "P-9", (case, "99999")))
        (payment,) = standing_of(sim, case).payments or []
        assert payment.amount == Decimal(99999)
        assert payment.applied == Decimal(guide_invoice().amount)

    def test_refused_payment_is_terminal_and_names_the_field(self, sim: Sim):
        """A payment for an unknown case is refused (TERMINAL) with Kravia's field message."""
        with pytest.raises(KraviaError) as info:
            on_sim(sim, lambda client: pay(client, "P-1", (4242, "1")))
        assert info.value.failure is Failure.TERMINAL
        assert info.value.status == 400
        assert "Invoices[0].InvoiceId" in str(info.value)
        assert sim.simulator.payments() == []

    @pytest.mark.parametrize("operation", ["payment", "creditnote"])
    def test_dropped_after_apply_is_ambiguous_and_applied_once(self, sim: Sim, operation: str):
        """When the answer is dropped after Kravia applied it, the client reports AMBIGUOUS;
        the money is applied once and the details show it under our id."""
        (case,) = registered(sim)
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=(operation,))
        send = pay if operation == "payment" else credit

        with pytest.raises(KraviaError) as info:
            on_sim(sim, lambda client: send(client, "X-1", (case, "10")))

        assert info.value.failure is Failure.AMBIGUOUS
        sim.simulator.faults = Faults()
        assert len(sim.simulator.payments()) == 1
        standing = standing_of(sim, case)
        assert standing.remaining_capital == Decimal(guide_invoice().amount) - 10
        assert payment_recorded(standing, "X-1") is True

    def test_timeout_is_ambiguous_and_applied_once(self, sim: Sim):
        """A payment that times out is AMBIGUOUS; Kravia applies it once all the same."""
        (case,) = registered(sim)
        sim.simulator.faults = Faults(timeout=1.0, timeout_delay_s=0.5, operations=("payment",))

        with pytest.raises(KraviaError) as info:
            on_sim(sim, lambda client: pay(client, "T-1", (case, "5")), timeout=0.1)

        assert info.value.failure is Failure.AMBIGUOUS
        deadline = time.monotonic() + 3
        while not sim.simulator.payments() and time.monotonic() < deadline:
            time.sleep(0.02)
        sim.simulator.faults = Faults()
        assert len(sim.simulator.payments()) == 1
        assert payment_recorded(standing_of(sim, case), "T-1") is True

    def test_server_error_on_payment_is_not_applied(self, sim: Sim):
        """A 5xx fault answers before applying; the client calls a 500 ambiguous (it cannot
        know) and 503 transient, and a look shows nothing was recorded."""
        (case,) = registered(sim)
        sim.simulator.faults = Faults(error_5xx=1.0, seed=1, operations=("payment",))
        failures = set()
        for n in range(8):
            with pytest.raises(KraviaError) as info:
                on_sim(sim, lambda client, n=n: pay(client, f"E-{n}", (case, "1")))
            failures.add((info.value.status, info.value.failure))
        sim.simulator.faults = Faults()
        assert failures <= {
            (500, Failure.AMBIGUOUS),
            (502, Failure.AMBIGUOUS),
            (503, Failure.TRANSIENT),
        }
        assert payment_recorded(standing_of(sim, case), "E-0") is False

    def test_settlements_and_bookkeeping(self, sim: Sim):
        """A payout is listed as an unbooked settlement until it is booked."""
        first, second = registered(sim, 2)
        made = sim.simulator.payout(
            [(first, Decimal("100.10")), (second, Decimal("0.90"))], on=date(2026, 11, 20)
        )

        (settlement,) = on_sim(sim, lambda client: client.settlements())
        assert settlement == Settlement(
            id=made["id"],
            settled_on=date(2026, 11, 20),
            amount=Decimal("101.00"),
            lines=lines((first, "100.10"), (second, "0.90")),
            booked=False,
        )

        async def book(client: KraviaClient) -> tuple[list[Settlement], list[Settlement]]:
            await client.bookkeep_settlement(settlement.id, internal_accounting_id="B-1")
            await client.bookkeep_settlement(settlement.id, internal_accounting_id="B-1")
            return await client.settlements(), await client.settlements(exclude_closed=False)

        open_ones, every_one = on_sim(sim, book)
        assert open_ones == []
        assert [(s.id, s.booked) for s in every_one] == [(settlement.id, True)]

    def test_search_shows_changes(self, sim: Sim):
        """After a payment the search feed shows the case again, with its new capital."""
        first, second = registered(sim, 2)
        since = datetime.now(UTC) - timedelta(minutes=1)
        before = {i.kravia_id: i for i in on_sim(sim, search(since))}
        on_sim(sim, lambda client: pay(client, "S-1", (second, "2250")))
        after = {i.kravia_id: i for i in on_sim(sim, search(since))}

        assert set(before) == set(after) == {first, second}
        assert after[second].remaining_capital == Decimal(0)
        assert after[second].status == "Closed"
        assert after[second].updated is not None
        assert before[second].updated is not None
        assert after[second].updated > before[second].updated
        assert after[first] == before[first]

    def test_send_action_pause(self, sim: Sim):
        """send_action sends a named action; a started case can be paused (simulator names)."""
        (case,) = registered(sim)

        async def go(client: KraviaClient) -> dict[str, Any]:
            await client.start(case, message="Go")
            await client.send_action(case, "Pause", message="Disputed")
            return await client.details(case)

        details = on_sim(sim, go)
        assert case_standing(details).status == "Paused"
        assert case_standing(details).closed is False
        assert can_start(details) is False
