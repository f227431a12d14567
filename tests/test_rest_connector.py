"""The rest connector: templates, field mapping, paging, retries, auth, customers and documents.

The client's policy is tested with `httpx.MockTransport` (a real httpx client, an in-process
handler); the Fiken tests (`test_fiken.py`) run the same code over real HTTP end to end.
"""

from __future__ import annotations

import base64
import json
import threading
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import httpx
import pytest
import structlog
from pydantic import ValidationError

from connectors.rest import (
    EXAMPLE_SETTINGS,
    Clock,
    FieldMapping,
    RestConnector,
    RestDocumentError,
    RestSettings,
    Template,
)
from connectors.rest._http import RateLimitSettings, Throttle
from connectors.rest._paging import next_link
from kravia_sync.connector import ConnectorError, RecordError, SourceRecord, load_connector
from kravia_sync.errors import InvalidRecordError
from kravia_sync.logging import redact
from kravia_sync.model import Invoice
from kravia_sync.testing import minimal_pdf

BASE = "https://api.example.com/v1/"
TOKEN = "rest-secret-Vx81Qp"
CLOCK = Clock(datetime(2025, 3, 1, 9, 30, tzinfo=UTC))

Handler = Callable[[httpx.Request], httpx.Response]


def invoice(number: int, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": 900 + number,
        "number": number,
        "issued": "2025-01-01",
        "due": "2025-01-15",
        "balance": 123450 + number,
        "customerId": 7 + number % 3,
        "pdf": f"/v1/invoices/{900 + number}/pdf",
    }
    data.update(extra)
    return data


def customer(customer_id: int) -> dict[str, Any]:
    return {
        "id": customer_id,
        "name": f"Kunde {customer_id}",
        "address": {"street": "Storgata 1", "zip": "0150", "city": "Oslo", "country": "Norge"},
    }


def settings(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "base_url": BASE,
        "auth": {"type": "bearer", "token_env": "REST_TOKEN"},
        "retry": {"attempts": 3, "backoff_seconds": 0.01},
        "invoices": {
            "path": "invoices",
            "records_path": "data",
            "paging": {"type": "page_number", "page_size": 2},
        },
        "fields": {
            "accounting_invoice_id": {"path": "id", "transform": "text"},
            "invoice_number": {"path": "number", "transform": "text"},
            "invoice_date": {"path": "issued", "transform": "date"},
            "due_date": {"path": "due", "transform": "date"},
            "amount": {"path": "balance", "transform": "minor_units"},
        },
        "customer": {
            "path": "customers/{invoice.customerId}",
            "fields": {
                "debtor_name": "name",
                "address_line1": "address.street",
                "postal_code": "address.zip",
                "city": "address.city",
                "country": {"path": "address.country", "transform": "country"},
            },
        },
        "document": {"url_path": "pdf"},
    }
    for key, value in overrides.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


class Api:
    """An in-process API: pages of invoices, customers, PDFs; records every request."""

    def __init__(self, invoices: list[dict[str, Any]], *, page_size: int = 2) -> None:
        self.invoices = invoices
        self.page_size = page_size
        self.requests: list[httpx.Request] = []
        self.override: Handler | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.override is not None:
            answer = self.override(request)
            if answer is not None:
                return answer
        path = request.url.path
        if path == "/v1/invoices":
            page = int(request.url.params.get("page", "1"))
            start = (page - 1) * self.page_size
            return httpx.Response(200, json={"data": self.invoices[start : start + self.page_size]})
        if path.startswith("/v1/customers/"):
            return httpx.Response(200, json=customer(int(path.rsplit("/", 1)[1])))
        if path.endswith("/pdf"):
            return httpx.Response(200, content=minimal_pdf(path))
        return httpx.Response(404, json={"error": "no such thing"})

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REST_TOKEN", TOKEN)
    return TOKEN


def make(raw: dict[str, Any], api: Handler, tmp_path: Path) -> tuple[RestConnector, list[float]]:
    made = RestConnector.from_settings(raw, base_dir=tmp_path)
    assert isinstance(made, RestConnector)
    sleeps: list[float] = []
    made.http.transport = httpx.MockTransport(api)
    made.http.sleep = sleeps.append
    return made, sleeps


def records(connector: RestConnector) -> list[SourceRecord]:
    items = list(connector.read())
    assert all(isinstance(item, SourceRecord) for item in items), items
    return [item for item in items if isinstance(item, SourceRecord)]


# -- templates ---------------------------------------------------------------------------------


class TestTemplates:
    def test_today_and_offsets_render_on_oslos_calendar(self) -> None:
        """{today}, {today - 14d}, {today + 1w} and a strftime format."""
        late = Clock(datetime(2025, 2, 28, 23, 30, tzinfo=UTC))  # already 1 March in Oslo
        assert Template("{today}").render(late) == "2025-03-01"
        assert Template("{today - 14d}").render(late) == "2025-02-15"
        assert Template("{today+1w}").render(late) == "2025-03-08"
        assert Template("{today - 14d:%d.%m.%Y}").render(late) == "15.02.2025"

    def test_now_is_utc_with_its_offset(self) -> None:
        """{now} and {now - 2h} are ISO 8601 timestamps with an offset."""
        assert Template("{now}").render(CLOCK) == "2025-03-01T09:30:00+00:00"
        assert Template("since={now - 2h}").render(CLOCK) == "since=2025-03-01T07:30:00+00:00"

    def test_today_is_on_the_creditors_calendar(self) -> None:
        """{today} is the date where `policy.timezone` says: 11:00 UTC on 1 March is still
        1 March in Oslo and already 2 March on Kiritimati (UTC+14)."""
        moment = datetime(2025, 3, 1, 11, 0, tzinfo=UTC)
        assert Template("{today}").render(Clock(moment)) == "2025-03-01"
        kiritimati = Clock(moment, ZoneInfo("Pacific/Kiritimati"))
        assert Template("{today} {today - 1d}").render(kiritimati) == "2025-03-02 2025-03-01"

    def test_braces_are_escaped_by_doubling(self) -> None:
        """{{ and }} are literal braces."""
        assert Template("{{today}} {today}").render(CLOCK) == "{today} 2025-03-01"

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("{yesterday}", "is not an expression"),
            ("{today - 2h}", "today moves in days"),
            ("{today", "without its"),
            ("a}", "lone"),
            ("{today:}", "format after ':' is empty"),
            ("{invoice.id}", "refers to an invoice"),
        ],
    )
    def test_a_bad_template_is_refused_when_loaded(self, text: str, reason: str) -> None:
        """Mistakes are settings errors, not surprises in the middle of a read."""
        with pytest.raises(ValueError, match=reason):
            Template(text)

    def test_invoice_values_are_escaped_into_one_path_segment(self) -> None:
        """A value cannot add path segments or a query string."""
        template = Template("customers/{invoice.customer.id}", invoice_values=True)
        rendered = template.render(
            CLOCK, {"customer": {"id": "../admin?x=1"}}, escape=lambda v: v.replace("/", "%2F")
        )
        assert rendered == "customers/..%2Fadmin?x=1"
        assert template.uses_invoice

    def test_a_settings_error_names_the_parameter(self) -> None:
        """A bad expression in params fails validation with its text."""
        raw = settings(invoices={"path": "invoices", "params": {"due": "{today - 3x}"}})
        with pytest.raises(ValidationError, match=r"today - 3x"):
            RestSettings.model_validate(raw)


# -- field mapping ---------------------------------------------------------------------------


class TestMapping:
    def test_minor_units_become_exact_amounts(self) -> None:
        """123450 øre is 1234.50 exactly; decimals can be changed."""
        mapping = FieldMapping.model_validate({"path": "a", "transform": "minor_units"})
        assert mapping.apply({"a": 123450}) == Decimal("1234.50")
        assert mapping.apply({"a": "-5"}) == Decimal("-0.05")
        three = FieldMapping.model_validate(
            {"path": "a", "transform": "minor_units", "decimals": 3}
        )
        assert three.apply({"a": 1005}) == Decimal("1.005")

    @pytest.mark.parametrize("value", [Decimal("12.5"), "12.5", True, "abc"])
    def test_minor_units_refuse_anything_but_whole_numbers(self, value: object) -> None:
        """Money is never rounded."""
        mapping = FieldMapping.model_validate({"path": "a", "transform": "minor_units"})
        with pytest.raises(ValueError, match=r"not a whole number|not an amount"):
            mapping.apply({"a": value})

    def test_dates_in_iso_or_a_given_format(self) -> None:
        """ISO dates, date-times with an offset (on Oslo's calendar) and strptime formats."""
        iso = FieldMapping.model_validate({"path": "d", "transform": "date"})
        assert iso.apply({"d": "2025-01-31"}) == date(2025, 1, 31)
        assert iso.apply({"d": "2025-01-31T23:30:00Z"}) == date(2025, 2, 1)
        # ... on the creditor's calendar where `policy.timezone` is another
        new_york = ZoneInfo("America/New_York")
        assert iso.apply({"d": "2025-01-31T23:30:00Z"}, new_york) == date(2025, 1, 31)
        dotted = FieldMapping.model_validate(
            {"path": "d", "transform": "date", "format": "%d.%m.%Y"}
        )
        assert dotted.apply({"d": "31.01.2025"}) == date(2025, 1, 31)
        with pytest.raises(ValueError, match=r"not a date in the format %d\.%m\.%Y"):
            dotted.apply({"d": "2025-01-31"})

    def test_booleans_map_to_chosen_values(self) -> None:
        """true/false, yes/no, 1/0 become if_true / if_false."""
        mapping = FieldMapping.model_validate(
            {"path": "b", "transform": "boolean", "if_true": "business", "if_false": "private"}
        )
        assert mapping.apply({"b": True}) == "business"
        assert mapping.apply({"b": "nei"}) == "private"
        assert mapping.apply({"b": 1}) == "business"
        with pytest.raises(ValueError, match="not a boolean"):
            mapping.apply({"b": "maybe"})

    def test_countries_by_name_or_code(self) -> None:
        """Norge, Sweden, NOR and NO all become ISO alpha-2; unknown text is passed on."""
        mapping = FieldMapping.model_validate({"path": "c", "transform": "country"})
        assert [mapping.apply({"c": name}) for name in ("Norge", "Sweden", "NOR", "no")] == [
            "NO",
            "SE",
            "NO",
            "NO",
        ]
        assert mapping.apply({"c": "Atlantis"}) == "Atlantis"

    def test_absent_null_and_blank_leave_the_field_out_unless_a_default(self) -> None:
        """None means 'not given'; default fills in; a constant needs no path."""
        mapping = FieldMapping.model_validate("a.b")
        assert mapping.apply({}) is None
        assert mapping.apply({"a": {"b": None}}) is None
        assert mapping.apply({"a": {"b": "  "}}) is None
        with_default = FieldMapping.model_validate({"path": "x", "default": "NOK"})
        assert with_default.apply({}) == "NOK"
        assert FieldMapping.model_validate({"value": "NOK"}).apply({}) == "NOK"

    def test_lists_are_indexed_and_objects_refused(self) -> None:
        """lines.0.text reaches into lists; an object where a value belongs is an error."""
        assert FieldMapping.model_validate("lines.0.text").apply({"lines": [{"text": "x"}]}) == "x"
        with pytest.raises(ValueError, match="is an object"):
            FieldMapping.model_validate("a").apply({"a": {"b": 1}})

    def test_unknown_fields_and_missing_required_ones_are_settings_errors(self) -> None:
        """A typo in a field name, or no mapping for a required field, fails on load."""
        with pytest.raises(ValidationError, match="'amout' is not a record field"):
            RestSettings.model_validate(settings(fields={"amout": "x"}))
        raw = settings()
        del raw["customer"]["fields"]["city"]
        with pytest.raises(ValidationError, match="required field city"):
            RestSettings.model_validate(raw)


# -- reading, paging --------------------------------------------------------------------------


class TestRead:
    def test_records_carry_the_mapped_fields_and_validate(self, tmp_path: Path) -> None:
        """Invoice and customer fields together make a valid canonical invoice."""
        api = Api([invoice(1)])
        connector, _ = make(settings(), api, tmp_path)

        [record] = records(connector)

        assert record.key == "invoice 1 (id 901)"
        assert record.fields["amount"] == Decimal("1234.51")
        model = Invoice.from_record(record.fields, document=record.document)
        assert model.debtor.name == "Kunde 8"
        assert model.debtor.address.country == "NO"
        assert model.accounting_invoice_id == "901"

    def test_page_numbers_stop_at_the_first_short_page(self, tmp_path: Path) -> None:
        """5 invoices at 2 a page: pages 1, 2, 3 and no more."""
        api = Api([invoice(n) for n in range(1, 6)])
        fields = {
            **settings()["fields"],
            "debtor_name": {"value": "Kunde"},
            "address_line1": {"value": "Storgata 1"},
            "postal_code": {"value": "0150"},
            "city": {"value": "Oslo"},
        }
        connector, _ = make(settings(customer=None, document=None, fields=fields), api, tmp_path)

        got = records(connector)

        assert [r.fields["invoice_number"] for r in got] == ["1", "2", "3", "4", "5"]
        pages = [r.url.params["page"] for r in api.requests if r.url.path == "/v1/invoices"]
        assert pages == ["1", "2", "3"]
        assert {r.url.params["page_size"] for r in api.requests} == {"2"}

    def test_page_count_headers_decide_the_last_page(self, tmp_path: Path) -> None:
        """With Fiken-style headers the read stops after the announced last page."""
        api = Api([invoice(n) for n in range(1, 5)])

        def headers(request: httpx.Request) -> httpx.Response | None:
            if request.url.path != "/v1/invoices":
                return None
            page = int(request.url.params["page"])
            rows = api.invoices[page * 2 : page * 2 + 2]
            return httpx.Response(
                200,
                json=rows,
                headers={"Fiken-Api-Page-Count": "2", "Fiken-Api-Result-Count": "4"},
            )

        api.override = headers
        paging = {
            "type": "page_number",
            "first_page": 0,
            "size_param": "pageSize",
            "page_size": 2,
            "total_pages_header": "Fiken-Api-Page-Count",
            "total_records_header": "Fiken-Api-Result-Count",
        }
        raw = settings(invoices={"path": "invoices", "paging": paging}, document=None)
        connector, _ = make(raw, api, tmp_path)

        got = records(connector)

        assert len(got) == 4
        assert [r.url.params["page"] for r in api.requests if r.url.path == "/v1/invoices"] == [
            "0",
            "1",
        ]

    def test_a_total_that_changes_during_the_read_fails_it(self, tmp_path: Path) -> None:
        """Invoices paid while they are read shift the pages: the read is not complete."""
        counts = iter(["5", "4"])

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/invoices":
                return httpx.Response(
                    200,
                    json={"data": [invoice(1), invoice(2)]},
                    headers={"X-Total": next(counts)},
                )
            return Api([])(request)

        paging = {"type": "page_number", "page_size": 2, "total_records_header": "X-Total"}
        raw = settings(invoices={"path": "invoices", "records_path": "data", "paging": paging})
        connector, _ = make(raw, handler, tmp_path)

        with pytest.raises(ConnectorError, match="changed from 5 to 4"):
            list(connector.read())

    def test_offset_paging_moves_by_the_records_returned(self, tmp_path: Path) -> None:
        """offset/limit until a short page."""
        rows = [invoice(n) for n in range(1, 6)]

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/invoices":
                offset = int(request.url.params["offset"])
                limit = int(request.url.params["limit"])
                return httpx.Response(200, json={"data": rows[offset : offset + limit]})
            return Api([])(request)

        paging = {"type": "offset", "limit": 2}
        raw = settings(invoices={"path": "invoices", "records_path": "data", "paging": paging})
        connector, _ = make(raw, handler, tmp_path)

        assert len(records(connector)) == 5

    def test_cursor_paging_follows_the_body_and_refuses_a_loop(self, tmp_path: Path) -> None:
        """The next cursor comes from the body; a cursor seen before fails the read."""
        cursors = {"": ("c1", [invoice(1)]), "c1": ("c2", [invoice(2)]), "c2": (None, [])}

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/invoices":
                following, rows = cursors[request.url.params.get("after", "")]
                return httpx.Response(200, json={"items": rows, "meta": {"next": following}})
            return Api([])(request)

        paging = {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"}
        raw = settings(invoices={"path": "invoices", "records_path": "items", "paging": paging})
        connector, _ = make(raw, handler, tmp_path)
        assert len(records(connector)) == 2

        cursors["c2"] = ("c1", [invoice(3)])
        with pytest.raises(ConnectorError, match="came back"):
            list(connector.read())

    def test_link_headers_are_followed_relative_to_the_page(self, tmp_path: Path) -> None:
        """rel="next" links, relative or absolute, on the API's host."""

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/invoices":
                page = request.url.params.get("p", "1")
                link = {"1": '<invoices?p=2>; rel="next"', "2": ""}[page]
                rows = [invoice(int(page))]
                return httpx.Response(200, json=rows, headers={"Link": link} if link else {})
            return Api([])(request)

        raw = settings(invoices={"path": "invoices", "paging": {"type": "link_header"}})
        connector, _ = make(raw, handler, tmp_path)

        assert [r.fields["invoice_number"] for r in records(connector)] == ["1", "2"]

    def test_a_next_link_to_another_host_gets_no_credentials(self, tmp_path: Path) -> None:
        """Following it would hand the token to someone else: the read fails instead."""

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "evil.example.org":
                pytest.fail("a request reached the other host")
            link = '<https://evil.example.org/steal>; rel="next"'
            return httpx.Response(200, json=[invoice(1)], headers={"Link": link})

        raw = settings(invoices={"path": "invoices", "paging": {"type": "link_header"}})
        connector, _ = make(raw, handler, tmp_path)

        with pytest.raises(ConnectorError, match="not on the API's host"):
            list(connector.read())

    def test_a_malformed_next_link_fails_the_read_cleanly(self, tmp_path: Path) -> None:
        """A link that is not a URL is a ConnectorError, not a crash of the pass."""

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/invoices":
                link = '<http://[::1/x>; rel="next"'
                return httpx.Response(200, json=[invoice(1)], headers={"Link": link})
            return Api([])(request)

        raw = settings(invoices={"path": "invoices", "paging": {"type": "link_header"}})
        connector, _ = make(raw, handler, tmp_path)

        with pytest.raises(ConnectorError, match=r"next page's address .* is not a URL"):
            list(connector.read())

    def test_link_header_parsing(self) -> None:
        """GitHub-style headers with several relations."""
        header = '<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel="next last"'
        assert next_link(header) == "https://a/x?page=3"
        assert next_link('<https://a/x?page=1>; rel="prev"') is None

    def test_max_pages_stops_a_read_that_never_ends(self, tmp_path: Path) -> None:
        """A paging mistake cannot loop for ever."""

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/invoices":
                return httpx.Response(200, json={"data": [invoice(1), invoice(2)]})
            return Api([])(request)

        raw = settings(
            invoices={
                "path": "invoices",
                "records_path": "data",
                "paging": {"type": "page_number", "page_size": 2},
                "max_pages": 3,
            }
        )
        connector, _ = make(raw, handler, tmp_path)

        with pytest.raises(ConnectorError, match="max_pages = 3"):
            list(connector.read())

    def test_params_are_rendered_once_per_read(self, tmp_path: Path) -> None:
        """Fixed and computed parameters go on every page."""
        api = Api([invoice(1)])
        raw = settings(
            invoices={
                "path": "invoices",
                "records_path": "data",
                "params": {"unpaid": True, "due_before": "{today - 14d}", "limit": 5},
                "paging": {"type": "page_number", "page_size": 2},
            }
        )
        connector, _ = make(raw, api, tmp_path)

        records(connector)

        params = api.requests[0].url.params
        assert params["unpaid"] == "true"
        assert params["limit"] == "5"
        assert date.fromisoformat(params["due_before"]) < date.today()  # noqa: DTZ011

    def test_a_bad_record_is_an_error_naming_it_and_the_read_goes_on(self, tmp_path: Path) -> None:
        """A date that is not a date: a RecordError for that invoice, the rest are read."""
        api = Api([invoice(1, due="15/01/2025"), invoice(2)])
        connector, _ = make(settings(), api, tmp_path)

        items = list(connector.read())

        assert isinstance(items[0], RecordError)
        assert items[0].key == "invoice 1 (id 901)"
        assert items[0].field == "due_date"
        assert "'15/01/2025' is not a date" in items[0].reason
        assert isinstance(items[1], SourceRecord)

    def test_records_not_where_the_settings_say_fail_the_read(self, tmp_path: Path) -> None:
        """A wrong records_path is a failed read, never an empty source."""
        connector, _ = make(
            settings(invoices={"path": "invoices", "records_path": "items"}), Api([]), tmp_path
        )
        with pytest.raises(ConnectorError, match="expected a list of invoices at 'items'"):
            list(connector.read())


# -- HTTP: retries, limits -------------------------------------------------------------------


class TestRetries:
    def test_429_waits_for_retry_after(self, tmp_path: Path) -> None:
        """The wait is the server's, not ours."""
        answers = iter([httpx.Response(429, headers={"Retry-After": "7"})])
        api = Api([invoice(1)])
        api.override = lambda request: (
            next(answers, None) if "invoices" in request.url.path else None
        )
        connector, sleeps = make(settings(), api, tmp_path)

        assert len(records(connector)) == 1
        assert 7.0 in sleeps

    @pytest.mark.parametrize("value", ["0", "-3", "soon", ""])
    def test_a_nonsensical_retry_after_is_no_hint(self, value: str, tmp_path: Path) -> None:
        """Retry-After: 0 must not make a tight loop: exponential backoff applies."""
        answers = iter([httpx.Response(429, headers={"Retry-After": value})])
        api = Api([invoice(1)])
        api.override = lambda request: (
            next(answers, None) if "invoices" in request.url.path else None
        )
        connector, sleeps = make(settings(), api, tmp_path)

        records(connector)

        assert sleeps
        assert all(0.004 <= wait <= 0.01 for wait in sleeps), sleeps

    def test_a_huge_retry_after_is_clamped(self, tmp_path: Path) -> None:
        """A day-long Retry-After waits max_retry_after_seconds."""
        answers = iter([httpx.Response(503, headers={"Retry-After": "86400"})])
        api = Api([invoice(1)])
        api.override = lambda request: (
            next(answers, None) if "invoices" in request.url.path else None
        )
        raw = settings(retry={"attempts": 3, "backoff_seconds": 0.01, "max_retry_after_seconds": 9})
        connector, sleeps = make(raw, api, tmp_path)

        records(connector)

        assert sleeps == [9.0]

    def test_5xx_and_dropped_connections_are_retried(self, tmp_path: Path) -> None:
        """A 502 and a connection reset, then the answer."""
        failures: list[Any] = [httpx.Response(502), httpx.ReadError("reset by peer")]

        def flaky(request: httpx.Request) -> httpx.Response | None:
            if request.url.path == "/v1/invoices" and failures:
                failure = failures.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                return failure
            return None

        api = Api([invoice(1)])
        api.override = flaky
        connector, sleeps = make(settings(), api, tmp_path)

        assert len(records(connector)) == 1
        assert len(sleeps) == 2

    def test_when_attempts_run_out_the_read_fails_naming_the_page(self, tmp_path: Path) -> None:
        """503 on every try of page 2: a ConnectorError saying which page and why."""
        api = Api([invoice(n) for n in range(1, 6)])

        def down(request: httpx.Request) -> httpx.Response | None:
            if request.url.params.get("page") == "2":
                return httpx.Response(503, text="maintenance")
            return None

        api.override = down
        connector, _ = make(settings(), api, tmp_path)
        read = connector.read()
        first_page = [next(read), next(read)]

        with pytest.raises(ConnectorError, match=r"invoices page 2: GET .* 503 .*3 attempts"):
            list(read)
        assert len(first_page) == 2

    def test_a_client_error_is_not_retried(self, tmp_path: Path) -> None:
        """400 means our request is wrong: one try, a failed read with the API's words."""
        api = Api([])
        api.override = lambda _request: httpx.Response(400, json={"error": "bad filter"})
        connector, sleeps = make(settings(), api, tmp_path)

        with pytest.raises(ConnectorError, match=r"400 Bad Request.*bad filter"):
            list(connector.read())
        assert sleeps == []
        assert len(api.requests) == 1

    def test_a_body_that_is_not_json_fails_the_read(self, tmp_path: Path) -> None:
        """An HTML error page with status 200 is not an empty list of invoices."""
        api = Api([])
        api.override = lambda _request: httpx.Response(200, text="<html>login</html>")
        connector, _ = make(settings(), api, tmp_path)

        with pytest.raises(ConnectorError, match="not JSON"):
            list(connector.read())

    def test_numbers_are_parsed_as_decimals(self, tmp_path: Path) -> None:
        """A JSON amount 1234.56 stays exact."""
        api = Api([invoice(1, balance=None, total="TOTAL")])
        raw = settings()
        raw["fields"]["amount"] = {"path": "total", "transform": "decimal"}

        def exact(request: httpx.Request) -> httpx.Response:
            answer = api(request)
            if request.url.path == "/v1/invoices":
                return httpx.Response(200, content=answer.content.replace(b'"TOTAL"', b"1234.56"))
            return answer

        connector, _ = make(raw, exact, tmp_path)
        [record] = records(connector)
        assert record.fields["amount"] == Decimal("1234.56")


class TestThrottle:
    def test_starts_are_spaced_by_the_rate(self) -> None:
        """At 4 per second, starts are 250 ms apart whatever the latency."""
        now = [0.0]
        starts: list[float] = []

        def sleep(seconds: float) -> None:
            now[0] += seconds

        throttle = Throttle(
            RateLimitSettings(requests_per_second=4), clock=lambda: now[0], sleep=sleep
        )
        for latency in (0.05, 0.3, 0.0, 0.05):
            with throttle.slot():
                starts.append(now[0])
                now[0] += latency
        assert starts == pytest.approx([0.0, 0.25, 0.55, 0.8])

    def test_a_429_holds_every_request_back(self) -> None:
        """hold_off moves the next start."""
        now = [10.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        throttle = Throttle(
            RateLimitSettings(requests_per_second=100), clock=lambda: now[0], sleep=sleep
        )
        throttle.hold_off(3)
        with throttle.slot():
            assert now[0] == pytest.approx(13.0)


# -- auth ------------------------------------------------------------------------------------


class TestAuth:
    def test_bearer_basic_and_api_key_headers(self, tmp_path: Path) -> None:
        """Each scheme puts the secret where the API expects it."""
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return Api([invoice(1)])(request)

        for auth, header, expected in [
            ({"type": "bearer", "token_env": "REST_TOKEN"}, "authorization", f"Bearer {TOKEN}"),
            (
                {"type": "basic", "username": "kravia", "password_env": "REST_TOKEN"},
                "authorization",
                "Basic " + base64.b64encode(f"kravia:{TOKEN}".encode()).decode(),
            ),
            (
                {
                    "type": "api_key",
                    "header": "X-Api-Key",
                    "prefix": "Key ",
                    "key_env": "REST_TOKEN",
                },
                "x-api-key",
                f"Key {TOKEN}",
            ),
        ]:
            seen.clear()
            connector, _ = make(settings(auth=auth), handler, tmp_path)
            records(connector)
            assert {request.headers[header] for request in seen} == {expected}
            assert TOKEN in connector.secret_values()

    def test_a_secret_file_is_read_relative_to_the_config(self, tmp_path: Path) -> None:
        """token_file, one trailing newline dropped."""
        (tmp_path / "token.txt").write_text(TOKEN + "\n", encoding="utf-8")
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers["authorization"])
            return Api([invoice(1)])(request)

        connector, _ = make(
            settings(auth={"type": "bearer", "token_file": "token.txt"}), handler, tmp_path
        )
        records(connector)
        assert set(seen) == {f"Bearer {TOKEN}"}

    def test_a_missing_secret_says_which_without_a_value(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unset variable fails when the connector is built."""
        monkeypatch.delenv("REST_TOKEN")
        with pytest.raises(ConnectorError, match=r"REST_TOKEN .* is not set"):
            RestConnector.from_settings(settings(), base_dir=tmp_path)

    def test_a_secret_in_the_file_itself_is_refused(self) -> None:
        """There is no `token = ...` key: only token_env or token_file."""
        with pytest.raises(ValidationError):
            RestSettings.model_validate(settings(auth={"type": "bearer", "token": "abc"}))
        with pytest.raises(ValidationError, match="exactly one"):
            RestSettings.model_validate(settings(auth={"type": "bearer"}))

    def test_oauth2_client_credentials_fetch_once_and_refresh_after_401(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One token for many requests; a 401 fetches a new one and the request succeeds."""
        monkeypatch.setenv("CLIENT_SECRET", "client-secret-77aa")
        issued: list[str] = []
        token_bodies: list[dict[str, list[str]]] = []
        basic: list[str] = []
        api = Api([invoice(n) for n in range(1, 4)])

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "auth.example.com":
                token_bodies.append(parse_qs(request.content.decode()))
                assert request.headers["authorization"].startswith("Basic ")
                basic.append(request.headers["authorization"].removeprefix("Basic "))
                issued.append(f"access-{len(issued) + 1}-Zz9")
                return httpx.Response(
                    200,
                    json={"access_token": issued[-1], "token_type": "Bearer", "expires_in": 3600},
                )
            if request.headers.get("authorization") != f"Bearer {issued[-1]}":
                return httpx.Response(401)
            if len(api.requests) == 2 and len(issued) == 1:
                api.requests.append(request)
                return httpx.Response(401)  # the token was revoked
            return api(request)

        auth = {
            "type": "oauth2_client_credentials",
            "token_url": "https://auth.example.com/token",
            "client_id": "kravia-sync",
            "client_secret_env": "CLIENT_SECRET",
            "scope": "invoices.read",
        }
        connector, _ = make(settings(auth=auth), handler, tmp_path)

        assert len(records(connector)) == 3
        assert issued == ["access-1-Zz9", "access-2-Zz9"]
        assert token_bodies[0]["grant_type"] == ["client_credentials"]
        assert token_bodies[0]["scope"] == ["invoices.read"]
        assert "access-1-Zz9" in connector.secret_values()
        assert "client-secret-77aa" in connector.secret_values()
        # The client's credentials as Basic sends them, should the endpoint echo them back.
        assert set(basic) <= set(connector.secret_values())
        assert redact("token access-2-Zz9") == "token **********"

    def test_oauth2_key_header_goes_with_the_token_request_and_every_call(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """PowerOffice Go's shape: client credentials plus a subscription key header on the
        token request and on each call; the key is a secret, redacted like the others."""
        monkeypatch.setenv("CLIENT_SECRET", "client-secret-77aa")
        monkeypatch.setenv("SUBSCRIPTION_KEY", "sub-key-4f1e9c")
        keys: list[str | None] = []
        api = Api([invoice(n) for n in range(1, 3)])

        def handler(request: httpx.Request) -> httpx.Response:
            keys.append(request.headers.get("ocp-apim-subscription-key"))
            if request.url.host == "auth.example.com":
                return httpx.Response(200, json={"access_token": "access-Qq1", "expires_in": 1200})
            return api(request)

        auth = {
            "type": "oauth2_client_credentials",
            "token_url": "https://auth.example.com/token",
            "client_id": "application-key",
            "client_secret_env": "CLIENT_SECRET",
            "key_header": "Ocp-Apim-Subscription-Key",
            "key_env": "SUBSCRIPTION_KEY",
        }
        connector, _ = make(settings(auth=auth), handler, tmp_path)

        assert len(records(connector)) == 2
        assert len(keys) >= 2
        assert set(keys) == {"sub-key-4f1e9c"}  # the token request and every call
        # What the engine redacts from every log line and message (build_connector).
        assert "sub-key-4f1e9c" in connector.secret_values()
        assert "sub-key-4f1e9c" not in repr(connector)

    def test_oauth2_key_settings_need_each_other(self) -> None:
        """A key without its header, or a header without exactly one key source, is refused."""
        base = {
            "type": "oauth2_client_credentials",
            "token_url": "https://auth.example.com/token",
            "client_id": "application-key",
            "client_secret_env": "CLIENT_SECRET",
        }
        with pytest.raises(ValidationError, match="need key_header"):
            RestSettings.model_validate(settings(auth={**base, "key_env": "SUBSCRIPTION_KEY"}))
        with pytest.raises(ValidationError, match="exactly one"):
            RestSettings.model_validate(settings(auth={**base, "key_header": "X-Key"}))
        with pytest.raises(ValidationError, match="cannot be set here"):
            RestSettings.model_validate(
                settings(auth={**base, "key_header": "Authorization", "key_env": "K"})
            )

    def test_oauth2_token_errors_name_the_endpoint_not_the_secret(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """invalid_client is reported; the secret is not."""
        monkeypatch.setenv("CLIENT_SECRET", "client-secret-77aa")

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(401, json={"error": "invalid_client", "error_description": "no"})

        auth = {
            "type": "oauth2_client_credentials",
            "token_url": "https://auth.example.com/token",
            "client_id": "kravia-sync",
            "client_secret_env": "CLIENT_SECRET",
            "client_auth": "body",
        }
        connector, _ = make(settings(auth=auth), handler, tmp_path)
        with pytest.raises(ConnectorError, match="invalid_client") as failure:
            list(connector.read())
        assert "client-secret-77aa" not in str(failure.value)

    def test_secrets_are_not_in_repr_or_errors(self, tmp_path: Path) -> None:
        """An API that echoes the token back in an error page cannot leak it."""
        api = Api([])
        api.override = lambda request: httpx.Response(
            400, text=f"bad request with {request.headers['authorization']}"
        )
        connector, _ = make(settings(), api, tmp_path)
        with pytest.raises(ConnectorError) as failure:
            list(connector.read())
        assert TOKEN not in str(failure.value)
        assert "***" in str(failure.value)
        assert TOKEN not in repr(connector)
        assert TOKEN not in repr(connector.settings)
        assert TOKEN not in repr(connector.http.authenticator)

    def test_retry_warnings_carry_no_secret(self, tmp_path: Path) -> None:
        """The log of a retried request names the page and the failure only."""
        answers = iter([httpx.Response(503, text=f"echo {TOKEN}")])
        api = Api([invoice(1)])
        api.override = lambda request: (
            next(answers, None) if "invoices" in request.url.path else None
        )
        connector, _ = make(settings(), api, tmp_path)

        with structlog.testing.capture_logs() as logs:
            records(connector)

        assert any(entry["event"] == "retrying a request to the source" for entry in logs)
        assert TOKEN not in json.dumps(logs, default=str)


# -- customers and documents -----------------------------------------------------------------


class TestCustomers:
    def test_each_customer_is_fetched_once_per_read(self, tmp_path: Path) -> None:
        """Nine invoices of three customers: three customer requests."""
        api = Api([invoice(n) for n in range(1, 10)])
        connector, _ = make(settings(), api, tmp_path)

        assert len(records(connector)) == 9

        customers = [p for p in api.paths() if p.startswith("/v1/customers/")]
        assert sorted(customers) == ["/v1/customers/7", "/v1/customers/8", "/v1/customers/9"]
        assert connector.stats.customer_requests == 3
        assert connector.stats.customer_cache_hits == 6

    def test_a_missing_customer_quarantines_its_invoices_only(self, tmp_path: Path) -> None:
        """404 for one customer: its invoices are record errors; asked for once."""
        api = Api([invoice(n) for n in range(1, 7)])
        api.override = lambda request: (
            httpx.Response(404) if request.url.path == "/v1/customers/8" else None
        )
        connector, _ = make(settings(), api, tmp_path)

        items = list(connector.read())

        errors = [item for item in items if isinstance(item, RecordError)]
        assert [error.key for error in errors] == ["invoice 1 (id 901)", "invoice 4 (id 904)"]
        assert {error.field for error in errors} == {"customer"}
        assert "404" in errors[0].reason
        assert api.paths().count("/v1/customers/8") == 1

    def test_an_invoice_without_the_customer_reference_is_an_error(self, tmp_path: Path) -> None:
        """The message names the path the template needs."""
        api = Api([invoice(1, customerId=None)])
        connector, _ = make(settings(), api, tmp_path)

        [error] = list(connector.read())

        assert isinstance(error, RecordError)
        assert error.field == "customer"
        assert "'customerId'" in error.reason

    def test_a_customer_server_error_fails_the_read(self, tmp_path: Path) -> None:
        """Not a quarantine: the API is down, the read is incomplete."""
        api = Api([invoice(1)])
        api.override = lambda request: (
            httpx.Response(500) if "customers" in request.url.path else None
        )
        connector, _ = make(settings(), api, tmp_path)

        with pytest.raises(ConnectorError, match="customer"):
            list(connector.read())


class TestDocuments:
    def test_documents_load_only_when_asked(self, tmp_path: Path) -> None:
        """The read fetches no PDF; load() fetches it with the credentials."""
        api = Api([invoice(1), invoice(2)])
        connector, _ = make(settings(), api, tmp_path)

        got = records(connector)

        assert not any(path.endswith("/pdf") for path in api.paths())
        document = got[0].document
        assert document is not None
        assert document.name == "1.pdf"
        assert document.load().startswith(b"%PDF-")
        assert api.requests[-1].headers["accept"] == "application/pdf"
        assert api.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"

    def test_an_endpoint_template_names_the_pdf(self, tmp_path: Path) -> None:
        """document.path renders per invoice."""
        api = Api([invoice(1)])
        raw = settings(document={"path": "invoices/{invoice.id}/pdf"})
        connector, _ = make(raw, api, tmp_path)

        [record] = records(connector)
        assert record.document is not None
        record.document.load()

        assert api.paths()[-1] == "/v1/invoices/901/pdf"

    def test_an_invoice_without_a_url_has_no_document(self, tmp_path: Path) -> None:
        """A missing PDF URL is no copy, not an error."""
        api = Api([invoice(1, pdf=None)])
        connector, _ = make(settings(), api, tmp_path)

        [record] = records(connector)

        assert record.document is None

    def test_a_missing_pdf_is_an_invalid_document_a_failing_api_is_an_os_error(
        self, tmp_path: Path
    ) -> None:
        """404: the copy does not exist (quarantine); 503 after retries: try again later."""
        api = Api([invoice(1), invoice(2)])
        api.override = lambda request: (
            httpx.Response(404)
            if request.url.path == "/v1/invoices/901/pdf"
            else httpx.Response(503)
            if request.url.path == "/v1/invoices/902/pdf"
            else None
        )
        connector, _ = make(settings(), api, tmp_path)
        first, second = records(connector)
        assert first.document is not None
        assert second.document is not None

        with pytest.raises(InvalidRecordError, match="404"):
            first.document.load()
        with pytest.raises(RestDocumentError, match="503") as failure:
            second.document.load()
        assert isinstance(failure.value, OSError)

    def test_a_pdf_on_another_host_needs_listing_and_gets_no_token(self, tmp_path: Path) -> None:
        """Pre-signed storage URLs: only hosts in other_hosts, never with credentials."""
        seen: list[httpx.Request] = []
        api = Api([invoice(1, pdf="https://files.example.net/a.pdf")])

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "files.example.net":
                seen.append(request)
                return httpx.Response(200, content=minimal_pdf("x"))
            return api(request)

        connector, _ = make(settings(), handler, tmp_path)
        [record] = records(connector)
        assert record.document is not None
        with pytest.raises(InvalidRecordError, match="other_hosts"):
            record.document.load()
        assert seen == []

        listed, _ = make(
            settings(document={"url_path": "pdf", "other_hosts": ["files.example.net"]}),
            handler,
            tmp_path,
        )
        [record] = records(listed)
        assert record.document is not None
        assert record.document.load().startswith(b"%PDF-")
        assert "authorization" not in seen[0].headers


MIB = 1024 * 1024


class Body:
    """A streamed answer body of `size` bytes in 1 MiB chunks, counting what was taken."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.taken < self.size:
            chunk = b"x" * min(MIB, self.size - self.taken)
            self.taken += len(chunk)
            yield chunk


def pdf_answer(body: Body, *, announce: bool) -> Callable[[httpx.Request], httpx.Response | None]:
    """An API override answering every PDF request with `body`, its length announced or not."""

    def answer(request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.endswith("/pdf"):
            return None
        headers = {"Content-Length": str(body.size)} if announce else {}
        return httpx.Response(200, headers=headers, content=iter(body))

    return answer


class TestDocumentSize:
    def test_the_default_limit_is_20_mib(self) -> None:
        """`document.max_document_bytes` defaults to 20 MiB."""
        raw = settings()
        assert RestSettings.model_validate(raw).document is not None
        document = RestSettings.model_validate(raw).document
        assert document is not None
        assert document.max_document_bytes == 20 * MIB

    def test_a_25_mib_copy_is_refused_without_reading_it_all(self, tmp_path: Path) -> None:
        """An answer of 25 MiB with no announced length: the download stops just past 20 MiB,
        and the copy is invalid (the invoice waits), naming the limit."""
        body = Body(25 * MIB)
        api = Api([invoice(1)])
        api.override = pdf_answer(body, announce=False)
        connector, _ = make(settings(), api, tmp_path)
        [record] = records(connector)
        assert record.document is not None

        with pytest.raises(InvalidRecordError) as caught:
            record.document.load()

        assert caught.value.field == "document"
        assert caught.value.reason == (
            "1.pdf: the copy has more bytes than document.max_document_bytes (20971520); "
            "the download was stopped there"
        )
        assert body.taken <= 21 * MIB

    def test_an_announced_length_over_the_limit_is_refused_before_any_byte(
        self, tmp_path: Path
    ) -> None:
        """`Content-Length` over the limit: refused from the header, the body never read, and
        not retried (it would not get smaller)."""
        body = Body(25 * MIB)
        api = Api([invoice(1)])
        api.override = pdf_answer(body, announce=True)
        connector, sleeps = make(settings(), api, tmp_path)
        [record] = records(connector)
        assert record.document is not None

        with pytest.raises(InvalidRecordError) as caught:
            record.document.load()

        assert caught.value.reason == (
            "1.pdf: the copy has 26214400 bytes, more than document.max_document_bytes "
            "(20971520); not downloaded"
        )
        assert body.taken == 0
        assert [path for path in api.paths() if path.endswith("/pdf")] == ["/v1/invoices/901/pdf"]
        assert sleeps == []

    def test_a_configured_limit_applies_and_a_copy_at_it_loads(self, tmp_path: Path) -> None:
        """With `max_document_bytes` set, a copy one byte over is refused, one at it loads."""
        pdf = minimal_pdf("copy")
        api = Api([invoice(1)])
        api.override = lambda request: (
            httpx.Response(200, content=pdf) if request.url.path.endswith("/pdf") else None
        )
        for limit, loads in ((len(pdf) - 1, False), (len(pdf), True)):
            raw = settings(document={"url_path": "pdf", "max_document_bytes": limit})
            connector, _ = make(raw, api, tmp_path)
            [record] = records(connector)
            assert record.document is not None
            if loads:
                assert record.document.load() == pdf
            else:
                with pytest.raises(InvalidRecordError, match="max_document_bytes"):
                    record.document.load()

    def test_a_limit_must_be_positive(self) -> None:
        """A limit of zero or less is a settings error."""
        with pytest.raises(ValidationError, match="max_document_bytes"):
            RestSettings.model_validate(
                settings(document={"url_path": "pdf", "max_document_bytes": 0})
            )

    def test_over_real_http_the_rest_of_a_huge_copy_is_never_fetched(self, tmp_path: Path) -> None:
        """A local server streams a 100 MiB copy, chunked: with a 1 MiB limit the client hangs
        up early, so the server manages to send only a small part of it."""
        with HugeCopyServer(100 * MIB) as server:
            raw = settings(
                base_url=server.base_url,
                auth={"type": "none"},
                document={"url_path": "pdf", "max_document_bytes": MIB},
            )
            made = RestConnector.from_settings(raw, base_dir=tmp_path)
            assert isinstance(made, RestConnector)
            [record] = records(made)
            assert record.document is not None
            with pytest.raises(InvalidRecordError, match="max_document_bytes"):
                record.document.load()
            assert server.finished.wait(10)
        assert server.sent < 50 * MIB


class HugeCopyServer(ThreadingHTTPServer):
    """A real HTTP API on a free local port: one invoice, its customer, and a copy of `size`
    bytes streamed in chunks; `sent` counts what it managed to send before the client left."""

    daemon_threads = True

    def __init__(self, size: int) -> None:
        super().__init__(("127.0.0.1", 0), _HugeCopyHandler)
        self.size = size
        self.sent = 0
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1/"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()
        self.server_close()


class _HugeCopyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HugeCopyServer

    def log_message(self, *_: Any) -> None:  # quiet: nothing to see in test output
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.endswith("/pdf"):
            self._stream_copy()
            return
        data = {"data": [invoice(1)]} if path == "/v1/invoices" else customer(8)
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream_copy(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Transfer-Encoding", "chunked")  # no length to refuse it by
        self.end_headers()
        chunk = b"x" * 65536
        try:
            while self.server.sent < self.server.size:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.server.sent += len(chunk)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up, as it should
            self.close_connection = True
        finally:
            self.server.finished.set()


class TestPlugin:
    def test_rest_is_an_installed_connector_with_an_example(self) -> None:
        """The entry point and `init --source rest` example."""
        assert load_connector("rest") is RestConnector
        assert "[sources.settings.invoices.paging]" in EXAMPLE_SETTINGS

    def test_the_docs_show_the_example_init_writes(self) -> None:
        """The worked example in docs/sources/rest.md and `init --source rest` are the same
        settings."""
        docs = Path(__file__).resolve().parent.parent / "docs"
        page = (docs / "sources" / "rest.md").read_text("utf-8")
        block = page.split("```toml\n", 1)[1].split("```", 1)[0]
        shown = tomllib.loads(block)["sources"][0]
        written = tomllib.loads(EXAMPLE_SETTINGS)["sources"][0]

        assert shown["connector"] == written["connector"] == "rest"
        assert RestSettings.model_validate(shown["settings"]) == RestSettings.model_validate(
            written["settings"]
        )
