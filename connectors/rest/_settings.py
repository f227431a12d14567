"""The settings of a `rest` source: the `[sources.settings]` table, validated on load."""

from __future__ import annotations

from typing import Final

import httpx
from pydantic import Field, field_validator, model_validator

from connectors.rest._auth import Auth, NoAuth
from connectors.rest._http import RateLimitSettings, RetrySettings
from connectors.rest._mapping import FieldMapping
from connectors.rest._paging import NoPaging, Paging
from connectors.rest._paths import JsonPath
from connectors.rest._template import Template
from kravia_sync import RECORD_FIELDS, REQUIRED_FIELDS, ConnectorSettings

__all__ = [
    "CustomerSettings",
    "DocumentSettings",
    "InvoicesSettings",
    "RestSettings",
]

_RESERVED_HEADERS: Final = frozenset({"authorization", "cookie", "host", "content-length"})
_MIB: Final = 1024 * 1024


class _Section(ConnectorSettings):
    """A table of the settings (unknown keys fail, like every settings model)."""


def _check_fields(value: dict[str, FieldMapping]) -> dict[str, FieldMapping]:
    for field in value:
        if field not in RECORD_FIELDS:
            raise ValueError(
                f"{field!r} is not a record field; known fields: {', '.join(RECORD_FIELDS)}"
            )
    return value


class InvoicesSettings(_Section):
    """Where the invoices are: `[sources.settings.invoices]`."""

    path: str
    """The endpoint, relative to `base_url`; may use `{today}`-style expressions."""
    params: dict[str, str | int | bool] = Field(default_factory=dict)
    """Query parameters; text values may use `{today - 14d}`-style expressions."""
    records_path: str = ""
    """Where the list of invoices is in the body (empty: the body is the list)."""
    paging: Paging = Field(default_factory=lambda: NoPaging(type="none"))
    max_pages: int = Field(default=10_000, gt=0)
    """A read that would need more pages fails (a guard against paging that never ends)."""

    @field_validator("path")
    @classmethod
    def _path_template(cls, value: str) -> str:
        if "://" in value:
            raise ValueError("give the path relative to base_url, not a full URL")
        Template(value)
        return value

    @field_validator("params")
    @classmethod
    def _param_templates(cls, value: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for item in value.values():
            if isinstance(item, str):
                Template(item)
        return value

    @field_validator("records_path")
    @classmethod
    def _records_path(cls, value: str) -> str:
        JsonPath(value)
        return value

    def templates(self) -> dict[str, Template]:
        return {
            name: Template(value) for name, value in self.params.items() if isinstance(value, str)
        }

    def constants(self) -> dict[str, str]:
        return {
            name: ("true" if value else "false") if isinstance(value, bool) else str(value)
            for name, value in self.params.items()
            if not isinstance(value, str)
        }


class CustomerSettings(_Section):
    """The customer's details from another endpoint, one request per distinct customer:
    `[sources.settings.customer]`."""

    path: str
    """A per-invoice path such as `contacts/{invoice.customer.id}`; its rendered text is the
    cache key, so each customer is fetched once per read."""
    record_path: str = ""
    """Where the customer object is in the body (empty: the body is the object)."""
    fields: dict[str, FieldMapping] = Field(default_factory=dict)
    """Record fields read from the customer object."""

    @field_validator("path")
    @classmethod
    def _path_template(cls, value: str) -> str:
        if "://" in value:
            raise ValueError("give the path relative to base_url, not a full URL")
        if not Template(value, invoice_values=True).uses_invoice:
            raise ValueError(
                "the customer path must use a value of the invoice, such as "
                "{invoice.customerId}; otherwise every invoice gets the same customer"
            )
        return value

    @field_validator("record_path")
    @classmethod
    def _record_path(cls, value: str) -> str:
        JsonPath(value)
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, FieldMapping]) -> dict[str, FieldMapping]:
        if not value:
            raise ValueError("map at least one record field from the customer")
        return _check_fields(value)


class DocumentSettings(_Section):
    """The invoice PDF: `[sources.settings.document]`. Give `url_path` (a field of the invoice
    holding the PDF's URL) or `path` (a per-invoice endpoint template)."""

    url_path: str | None = None
    path: str | None = None
    other_hosts: list[str] = Field(default_factory=list)
    """Hosts other than the API's that may serve the PDF (e.g. pre-signed storage URLs).
    They are sent no credentials. A URL on any other host is refused."""
    max_document_bytes: int = Field(default=20 * _MIB, gt=0)
    """A bigger PDF is refused (the invoice waits, quarantined with the reason); the download
    stops as soon as the announced length or the bytes received pass this."""

    @model_validator(mode="after")
    def _one_source(self) -> DocumentSettings:
        if (self.url_path is None) == (self.path is None):
            raise ValueError("give url_path or path, exactly one")
        if self.url_path is not None:
            JsonPath(self.url_path)
        if self.path is not None:
            if "://" in self.path:
                raise ValueError("give the path relative to base_url, not a full URL")
            if not Template(self.path, invoice_values=True).uses_invoice:
                raise ValueError("the document path must use a value of the invoice")
        return self


class RestSettings(ConnectorSettings):
    """Settings of the declarative REST connector (`[sources.settings]` of a `rest` source)."""

    base_url: str
    """The API's base URL; paths are relative to it. Credentials are sent to its host only."""
    auth: Auth = Field(default_factory=NoAuth)
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers; not secrets (credentials belong in `auth`)."""
    timeout_seconds: float = Field(default=30.0, gt=0)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    invoices: InvoicesSettings
    fields: dict[str, FieldMapping]
    """Record field → where it is in each invoice object."""
    customer: CustomerSettings | None = None
    document: DocumentSettings | None = None

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError):
            raise ValueError("not a URL such as https://api.example.com/v2/") from None
        if url.scheme not in {"https", "http"} or not url.host:
            raise ValueError("base_url must be an http(s) URL such as https://api.example.com/v2/")
        if url.userinfo:
            raise ValueError("base_url must not hold credentials: configure them in auth")
        if url.query or url.fragment:
            raise ValueError("base_url must not have a query or fragment: use invoices.params")
        return value if value.endswith("/") else value + "/"

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"the header {name!r} cannot be set here (credentials: auth)")
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, FieldMapping]) -> dict[str, FieldMapping]:
        return _check_fields(value)

    @model_validator(mode="after")
    def _complete(self) -> RestSettings:
        from_customer = set(self.customer.fields) if self.customer is not None else set()
        both = sorted(set(self.fields) & from_customer)
        if both:
            raise ValueError(
                f"{', '.join(both)} mapped both from the invoice and from the customer: "
                "map each field once"
            )
        missing = [f for f in REQUIRED_FIELDS if f not in self.fields and f not in from_customer]
        if missing:
            raise ValueError(
                f"no mapping for the required field{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}: every invoice would be invalid"
            )
        return self
