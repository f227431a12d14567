"""The Fiken connector: unpaid invoices from Fiken's API v2 (api.fiken.no/api/v2).

A preset of the `rest` connector, from Fiken's published OpenAPI description (2.0.0):

* Auth: a personal API token (`token_env` or `token_file`; it never expires), for a company's
  own use, or OAuth2 (`[oauth]`), which Fiken asks of third parties: a person consents once
  (`kravia-sync auth fiken`), and the connector then renews its access token from the stored
  refresh token, storing each rotated one before use (`connectors._fiken_oauth`). Both are
  sent as `Authorization: Bearer`. `check()` asks for the company (`GET /companies/{slug}`).
* Invoices: `GET /companies/{companySlug}/invoices?settled=false` — "returns all invoices that
  have not been fully settled" — paged with `page` (from 0) and `pageSize` (at most 100), the
  totals in `Fiken-Api-Page-Count` and `Fiken-Api-Result-Count`. The read fails (nothing is
  taken as gone) when those totals change during the read or do not match what was read.
* Fields: `invoiceId` (the accountingInvoiceId: Fiken's primary key), `invoiceNumber`,
  `issueDate`, `dueDate`, `currency`, `invoiceText`, and the outstanding balance
  `sale.outstandingBalance` in øre (Fiken: "Amounts are always represented as a number, and
  specifies the number of cents"). Invoices whose sale is settled, written off
  (`sale.writeOff`: a loss registered, e.g. after collection failed) or deleted (`sale.deleted`:
  reversed), or whose outstanding balance is zero, are left out: there is nothing to collect.
  One already in Kravia is then gone from the source: flagged for a person, never sent again.
* The customer: `GET /companies/{companySlug}/contacts/{contactId}` for the invoice's
  `customer.contactId`, once per customer per read — `name`, `customerNumber`,
  `organizationNumber` (a business debtor when present), `email`, `address.streetAddress`,
  `streetAddressLine2`, `postCode`, `city`, `country` (a name such as "Norge" or a code).
* The PDF: `invoicePdf.downloadUrl` ("for use with API credentials"), fetched only when the
  engine sends it to Kravia, with the token only if it is on the API's host.
* Limits: Fiken allows "a single concurrent API-request" (more "may result in a 429") and
  "API calls may be slowed if you execute more than 4 requests per second": one request at a
  time, at most `requests_per_second` (4) started per second; 429 and `Retry-After` honoured.

What Fiken's description leaves open is listed in the README ("The Fiken source").
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Final

from pydantic import Field, field_validator, model_validator

from connectors._fiken_oauth import FikenOAuth, FikenOAuthSettings
from connectors.rest import RestConnector, RestSettings, RetrySettings
from connectors.rest._auth import Authenticator
from kravia_sync import ConnectorSettings, RecordError

__all__ = [
    "EXAMPLE_SETTINGS",
    "FIKEN_API",
    "FikenConnector",
    "FikenOAuthSettings",
    "FikenSettings",
    "rest_settings",
]

FIKEN_API: Final = "https://api.fiken.no/api/v2/"
FIKEN_MAX_PAGE_SIZE: Final = 100
FIKEN_REQUESTS_PER_SECOND: Final = 4.0

EXAMPLE_SETTINGS: Final = """\
[[sources]]
name = "fiken"                   # a short, stable name; it keys the state of this source
connector = "fiken"
id_prefix = ""                   # prepended to each accountingInvoiceId (Fiken's invoiceId)
[sources.settings]
# The company's slug, as in https://fiken.no/foretak/<slug>/ (GET /companies lists them).
company_slug = "fiken-demo-as"
# A personal API token (Fiken: Rediger konto -> API -> Personlige API-nøkler), for your own
# company: name an environment variable holding it, or a file (relative to this file). It is
# redacted from every log line and message.
token_env = "FIKEN_TOKEN"
# token_file = "/run/secrets/fiken_token"
#
# Or, instead of a token, OAuth2 (what Fiken asks of third parties acting for a company): the
# app's client id and secret, and where the refresh token is kept. Run
# `kravia-sync auth fiken` once to consent; the connector renews its access from then on.
# [sources.settings.oauth]
# client_id = "your-app-client-id"
# client_secret_env = "FIKEN_CLIENT_SECRET"     # or client_secret_file
# redirect_uri = "http://127.0.0.1:8765/callback"   # one of the app's redirect URLs
# refresh_token_file = "fiken-refresh-token"    # relative to this file; written 0600
#
# Fiken allows one request at a time and slows down beyond 4 requests per second.
# requests_per_second = 4
# page_size = 100                # invoices per page (Fiken's maximum is 100)
# documents = true               # send each invoice's PDF (invoicePdf) to Kravia
# timeout_seconds = 30
# [sources.settings.retry]       # 429, 5xx and dropped connections, per request
# attempts = 5
# backoff_seconds = 0.5
"""


class FikenSettings(ConnectorSettings):
    """Settings of the Fiken connector (`[sources.settings]` of a `fiken` source)."""

    company_slug: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200)
    token_env: str | None = None
    token_file: Path | None = None
    oauth: FikenOAuthSettings | None = None
    base_url: str = FIKEN_API
    """Fiken's API; another URL only for a test server."""
    page_size: int = Field(default=FIKEN_MAX_PAGE_SIZE, ge=1, le=FIKEN_MAX_PAGE_SIZE)
    requests_per_second: float = Field(default=FIKEN_REQUESTS_PER_SECOND, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    documents: bool = True

    @model_validator(mode="after")
    def _one_token(self) -> FikenSettings:
        given = [self.token_env, self.token_file, self.oauth]
        if sum(value is not None for value in given) != 1:
            raise ValueError(
                "give a personal API token (token_env, an environment variable, or token_file) "
                "or OAuth2 (an [oauth] table), exactly one"
            )
        return self

    @field_validator("base_url")
    @classmethod
    def _slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


def rest_settings(settings: FikenSettings) -> RestSettings:
    """The `rest` settings that read Fiken as `settings` say."""
    company = f"companies/{settings.company_slug}"
    auth: dict[str, object] = {"type": "bearer"}
    if settings.token_env is not None:
        auth["token_env"] = settings.token_env
    elif settings.token_file is not None:
        auth["token_file"] = settings.token_file
    else:  # OAuth2: FikenConnector.make_authenticator gives the credentials
        auth = {"type": "none"}
    raw: dict[str, Any] = {
        "base_url": settings.base_url,
        "auth": auth,
        "timeout_seconds": settings.timeout_seconds,
        "rate_limit": {
            "requests_per_second": settings.requests_per_second,
            "max_in_flight": 1,
        },
        "retry": settings.retry,
        "invoices": {
            "path": f"{company}/invoices",
            "params": {"settled": False},
            "paging": {
                "type": "page_number",
                "page_param": "page",
                "first_page": 0,
                "size_param": "pageSize",
                "page_size": settings.page_size,
                "total_pages_header": "Fiken-Api-Page-Count",
                "total_records_header": "Fiken-Api-Result-Count",
            },
        },
        "fields": {
            "accounting_invoice_id": {"path": "invoiceId", "transform": "text"},
            "invoice_number": {"path": "invoiceNumber", "transform": "text"},
            "invoice_date": {"path": "issueDate", "transform": "date"},
            "due_date": {"path": "dueDate", "transform": "date"},
            "amount": {"path": "sale.outstandingBalance", "transform": "minor_units"},
            "currency": "currency",
            "description": "invoiceText",
        },
        "customer": {
            "path": f"{company}/contacts/{{invoice.customer.contactId}}",
            "fields": {
                "debtor_name": "name",
                "debtor_number": {"path": "customerNumber", "transform": "text"},
                "organization_number": "organizationNumber",
                "debtor_email": "email",
                "address_line1": "address.streetAddress",
                "address_line2": "address.streetAddressLine2",
                "postal_code": "address.postCode",
                "city": "address.city",
                "country": {"path": "address.country", "transform": "country"},
            },
        },
    }
    if settings.documents:
        raw["document"] = {"url_path": "invoicePdf.downloadUrl"}
    return RestSettings.model_validate(raw)


class FikenConnector(RestConnector):
    """Reads a Fiken company's unpaid invoices, their customers and their PDFs."""

    settings_model: ClassVar[type[ConnectorSettings]] = FikenSettings
    example_config: ClassVar[str] = EXAMPLE_SETTINGS

    def __init__(self, settings: ConnectorSettings, *, base_dir: Path) -> None:
        if not isinstance(settings, FikenSettings):
            raise TypeError(f"FikenConnector needs FikenSettings, not {type(settings).__name__}")
        self.fiken = settings
        super().__init__(rest_settings(settings), base_dir=base_dir)

    def __repr__(self) -> str:
        return f"FikenConnector(company_slug={self.fiken.company_slug!r})"

    def make_authenticator(self, settings: RestSettings, base_dir: Path) -> Authenticator:
        """OAuth2 refresh tokens when `[oauth]` is set, else the personal API token."""
        if self.fiken.oauth is not None:
            return FikenOAuth(self.fiken.oauth, base_dir)
        return super().make_authenticator(settings, base_dir)

    def check(self) -> list[str] | None:
        """`GET /companies/{slug}`: the credentials are accepted and reach the company."""
        slug = self.fiken.company_slug
        problems = self.http.probe(f"companies/{slug}", f"the company {slug}")
        if any("answered 403" in problem or "answered 404" in problem for problem in problems):
            problems.append(
                f"the credentials do not reach the company {slug}: check company_slug; with "
                "OAuth2, a company must be among those the consent covers (Fiken: Rediger "
                "konto -> Sikkerhet -> Apper du har gitt tilgang til)"
            )
        return problems

    def review(
        self, key: str, invoice: Mapping[str, Any], fields: dict[str, object]
    ) -> RecordError | bool:
        """Leave out what has nothing to collect (settled, written off, deleted, nothing
        outstanding); quarantine what Fiken's documentation does not let us read safely (the
        outstanding balance of an invoice in another currency)."""
        sale = invoice.get("sale")
        if isinstance(sale, Mapping) and (
            sale.get("settled") is True
            # A loss registered (e.g. COLLECTION_FAILED) or a reversed sale: nothing to collect.
            or sale.get("writeOff") not in {None, False}
            or sale.get("deleted") is True
        ):
            return False
        amount = fields.get("amount")
        if isinstance(amount, Decimal) and amount == 0:
            return False
        currency = fields.get("currency")
        if isinstance(currency, str) and currency.strip().upper() not in {"", "NOK"}:
            return RecordError(
                key,
                "currency",
                f"the invoice is in {currency}: Fiken does not document whether "
                "sale.outstandingBalance is then in NOK or in the invoice's currency, so it is "
                "not sent; register it by hand",
            )
        return True
