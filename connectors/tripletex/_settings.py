"""The settings of a `tripletex` source, the example `init --source tripletex` writes, and the
`rest` settings that read Tripletex as they say."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

from pydantic import Field, field_validator, model_validator

from connectors.rest import RestSettings, RetrySettings
from kravia_sync import ConnectorSettings

__all__ = [
    "EXAMPLE_SETTINGS",
    "INVOICE_FIELDS",
    "TRIPLETEX_API",
    "TripletexSettings",
    "invoice_windows",
    "rest_settings",
]

TRIPLETEX_API: Final = "https://tripletex.no/v2/"
# GET /invoice: `count` "defaults to 1000" in the spec; a page is never asked for more.
TRIPLETEX_PAGE_SIZE: Final = 1000
# The spec's Fields section: a referenced object comes as {id, url} unless the expression names
# it, level by level. The invoice's own fields, its currency's code, and its customer with the
# customer's postal address and that address's country: everything read, in one answer.
INVOICE_FIELDS: Final = (
    "id,invoiceNumber,invoiceDate,invoiceDueDate,kid,amount,amountCurrency,"
    "amountOutstanding,amountCurrencyOutstanding,isCreditNote,isCredited,creditedInvoice,"
    "currency(code),"
    "customer(id,name,organizationNumber,customerNumber,isPrivateIndividual,email,"
    "invoiceEmail,overdueNoticeEmail,"
    "postalAddress(addressLine1,addressLine2,postalCode,city,country(isoAlpha2Code)))"
)
RATE_LIMIT_REMAINING: Final = "X-Rate-Limit-Remaining"
RATE_LIMIT_RESET: Final = "X-Rate-Limit-Reset"

EXAMPLE_SETTINGS: Final = """\
[[sources]]
name = "tripletex"               # a short, stable name; it keys the state of this source
connector = "tripletex"
id_prefix = ""                   # prepended to each accountingInvoiceId (Tripletex's invoice id)
[sources.settings]
# The consumer token (Tripletex issues it to the integration) and an employee token (an
# administrator makes it in Tripletex: the user's settings, tab "API access"). Name an
# environment variable holding each, or a file (relative to this file). Both, and every
# session token made from them, are redacted from every log line and message.
consumer_token_env = "TRIPLETEX_CONSUMER_TOKEN"
employee_token_env = "TRIPLETEX_EMPLOYEE_TOKEN"
# consumer_token_file = "/run/secrets/tripletex_consumer_token"
# employee_token_file = "/run/secrets/tripletex_employee_token"
#
# Tripletex lists invoices only by invoice date: every read asks for each window of
# window_days from start_date up to today. Invoices dated before start_date are never read:
# choose a date before your oldest unpaid invoice, and never move it later.
start_date = "2020-01-01"
# window_days = 365
#
# company_id = 0                 # 0: the employee's own company; an accountant's client's id
# base_url = "https://tripletex.no/v2/"   # the test host: https://api-test.tripletex.tech/v2/
# page_size = 1000               # invoices per request (Tripletex's default count)
# session_days = 1               # a session is asked to last this many days beyond today
# documents = true               # send each invoice's PDF (GET /invoice/{id}/pdf) to Kravia
# timeout_seconds = 30
# requests_per_second = 10       # unset: only Tripletex's X-Rate-Limit-* headers pace it
# [sources.settings.retry]       # 429, 5xx and dropped connections, per request
# attempts = 5
# backoff_seconds = 0.5
"""


class TripletexSettings(ConnectorSettings):
    """Settings of the Tripletex connector (`[sources.settings]` of a `tripletex` source)."""

    consumer_token_env: str | None = None
    consumer_token_file: Path | None = None
    employee_token_env: str | None = None
    employee_token_file: Path | None = None
    company_id: int = Field(default=0, ge=0)
    """The Basic username: 0 for the employee's own company, or an accounting office's
    client's company id."""
    start_date: date
    """The first invoice date read; nothing dated earlier is ever read."""
    window_days: int = Field(default=365, ge=1, le=3660)
    base_url: str = TRIPLETEX_API
    """Tripletex's API; another URL for its test host or a test server."""
    page_size: int = Field(default=TRIPLETEX_PAGE_SIZE, ge=1, le=10_000)
    session_days: int = Field(default=1, ge=1, le=365)
    requests_per_second: float | None = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    documents: bool = True
    credit_notes: bool = True
    """Send each credit note (an invoice with `isCreditNote`) to Kravia as a credit note."""
    credit_notes_since: date | None = None
    """Credit notes issued before this day are counted in the amounts only, never sent (for a
    source read before by a hand-written `rest` configuration: see docs/sources/tripletex.md)."""

    @model_validator(mode="after")
    def _one_of_each_token(self) -> TripletexSettings:
        for name in ("consumer_token", "employee_token"):
            env = getattr(self, f"{name}_env")
            file = getattr(self, f"{name}_file")
            if (env is None) == (file is None):
                raise ValueError(
                    f"give {name}_env (an environment variable) or {name}_file, exactly one"
                )
            if env is not None and not env.strip():
                raise ValueError(f"{name}_env is empty: give the name of an environment variable")
        return self

    @field_validator("start_date")
    @classmethod
    def _sensible_start(cls, value: date) -> date:
        if value.year < 1900:
            raise ValueError("start_date is before 1900")
        return value

    @field_validator("base_url")
    @classmethod
    def _slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


def invoice_windows(start: date, end: date, days: int) -> list[tuple[date, date]]:
    """Windows `[from, to)` of at most `days` days covering `start` up to `end` (exclusive):
    `invoiceDateFrom` is inclusive and `invoiceDateTo` exclusive in the spec."""
    windows: list[tuple[date, date]] = []
    cursor = start
    while cursor < end:
        upper = min(end, cursor + timedelta(days=days))
        windows.append((cursor, upper))
        cursor = upper
    return windows


def rest_settings(settings: TripletexSettings) -> RestSettings:
    """The `rest` settings that read Tripletex's invoices as `settings` say (credentials aside:
    the connector makes the session itself)."""
    raw: dict[str, Any] = {
        "base_url": settings.base_url,
        "timeout_seconds": settings.timeout_seconds,
        "rate_limit": {
            "requests_per_second": settings.requests_per_second,
            "max_in_flight": 1,
            "remaining_header": RATE_LIMIT_REMAINING,
            "reset_header": RATE_LIMIT_RESET,
        },
        "retry": settings.retry,
        "invoices": {
            "path": "invoice",
            "params": {"fields": INVOICE_FIELDS},
            "records_path": "values",
            "paging": {
                "type": "offset",
                "offset_param": "from",
                "limit_param": "count",
                "limit": settings.page_size,
                # fullResultSize is "not exact" (deprecated): pages run until a short one.
                "digest_path": "versionDigest",
            },
        },
        "fields": {
            "accounting_invoice_id": {"path": "id", "transform": "text"},
            "invoice_number": {"path": "invoiceNumber", "transform": "text"},
            "invoice_date": {"path": "invoiceDate", "transform": "date"},
            "due_date": {"path": "invoiceDueDate", "transform": "date"},
            # Decimal kroner (the spec's amounts are numbers of the currency, not øre).
            "amount": {"path": "amountOutstanding", "transform": "decimal"},
            "currency": "currency.code",
            "debtor_name": "customer.name",
            "debtor_number": {"path": "customer.customerNumber", "transform": "text"},
            "organization_number": {"path": "customer.organizationNumber", "transform": "text"},
            "debtor_type": {
                "path": "customer.isPrivateIndividual",
                "transform": "boolean",
                "if_true": "private",
                "if_false": "business",
            },
            "address_line1": "customer.postalAddress.addressLine1",
            "address_line2": "customer.postalAddress.addressLine2",
            "postal_code": {"path": "customer.postalAddress.postalCode", "transform": "text"},
            "city": "customer.postalAddress.city",
            "country": {
                "path": "customer.postalAddress.country.isoAlpha2Code",
                "transform": "country",
            },
        },
    }
    if settings.documents:
        raw["document"] = {"path": "invoice/{invoice.id}/pdf"}
    return RestSettings.model_validate(raw)
