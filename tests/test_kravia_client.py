"""Tests of the Kravia client module (`kravia_sync.kravia`): bodies, errors, and the client
over `httpx.MockTransport` (no network)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from kravia_sync.kravia import (
    DEFAULT_BASE_URL,
    MAX_RETRY_AFTER_SECONDS,
    SEARCH_PAGE_SIZE,
    Failure,
    KraviaClient,
    KraviaError,
    RateLimiter,
    build_register_body,
    classify_exception,
    classify_response,
    dumps_exact,
    parse_retry_after,
)
from kravia_sync.model import Invoice
from kravia_sync.testing import minimal_pdf

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
            ("1e9", MAX_RETRY_AFTER_SECONDS),
            (str(MAX_RETRY_AFTER_SECONDS), MAX_RETRY_AFTER_SECONDS),
        ],
    )
    def test_values(self, value, expected):
        """Seconds are taken as given; zero, negative, NaN and garbage are no hint; big is clamped."""
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
            (404, True, Failure.TERMINAL),
            (404, False, Failure.TERMINAL),
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
        error = classify_response(httpx.Response(404, json=body), creates=False)

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
    """A search endpoint answering by `skip`; records the query parameters it saw."""
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v2/invoice/search"
        params = dict(request.url.params)
        seen.append(params)
        return httpx.Response(200, json=pages[int(params["skip"])])

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
    return lambda client: client.search_updated_since(since, **options)


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
        """One short page is the whole answer; the query follows the guide's parameters."""
        handler = search_handler({0: items([11, 12])})

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

    @pytest.mark.parametrize("total", [0, 1, SEARCH_PAGE_SIZE - 1, SEARCH_PAGE_SIZE, 250, 1000])
    def test_paging_to_the_end(self, total):
        """Pages are followed until a short one; every case is reported exactly once."""
        handler = table_handler(items(range(1, total + 1)))

        found = run_with(handler, search(self.SINCE))

        ids = [item.kravia_id for item in found]
        assert sorted(ids) == list(range(1, total + 1))
        skips = [int(params["skip"]) for params in handler.seen]  # type: ignore[attr-defined]
        assert skips[0] == 0
        assert skips == sorted(set(skips))  # always forward
        assert total - skips[-1] < SEARCH_PAGE_SIZE  # the last page was short

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
        """Item properties are matched case-insensitively; digit-text ids are read; items
        without a usable id are skipped."""
        handler = search_handler(
            {0: [{"Id": 4, "AccountingInvoiceId": "X"}, {"InvoiceId": 5}, {"id": "6"}, "junk"]}
        )

        found = run_with(handler, search(self.SINCE))

        assert [(item.kravia_id, item.accounting_invoice_id) for item in found] == [
            (4, "X"),
            (5, None),
            (6, None),
        ]

    def test_unrecognised_answer_is_transient(self):
        """A search answer in an unknown shape is a transient error, not an empty result."""
        with pytest.raises(KraviaError) as info:
            run_with(search_handler({0: {"unexpected": []}}), search(self.SINCE, page_retries=0))

        assert info.value.failure is Failure.TRANSIENT

    def test_failed_page_read_again(self):
        """A page that fails transiently is read again; the result is complete."""
        answers = iter([httpx.Response(503), httpx.Response(200, json=items([1, 2]))])

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
    def test_rate_limiter_schedule(self):
        """Each wait books the next slot one interval after the previous one."""

        async def go() -> tuple[float, float, float]:
            limiter = RateLimiter(10.0)  # 0.1 s apart
            before = time.monotonic()
            first = asyncio.create_task(limiter.wait())
            await asyncio.sleep(0)
            booked_after_one = limiter._next
            await asyncio.gather(first, limiter.wait(), limiter.wait())
            return before, booked_after_one, limiter._next

        before, after_one, after_three = asyncio.run(go())

        assert 0.1 <= after_one - before < 0.15
        assert after_three - after_one == pytest.approx(0.2, abs=1e-6)

    def test_no_rate_means_no_waiting(self):
        """Without a rate, calls are not spaced."""

        async def go() -> float:
            limiter = RateLimiter(None)
            start = time.monotonic()
            await asyncio.gather(*(limiter.wait() for _ in range(50)))
            return time.monotonic() - start

        assert asyncio.run(go()) < 0.05

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
