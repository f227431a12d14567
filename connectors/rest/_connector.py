"""The `rest` connector: reads invoices from a JSON API as its settings describe."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import quote

import httpx

from connectors.rest._auth import Authenticator
from connectors.rest._example import EXAMPLE_SETTINGS
from connectors.rest._http import BodyTooLargeError, HttpError, HttpSource, Session, same_origin
from connectors.rest._mapping import FieldMapping, compiled_path
from connectors.rest._paging import PageRequest, PageResponse, PagingError
from connectors.rest._paths import MISSING, JsonPath
from connectors.rest._settings import RestSettings
from connectors.rest._template import Clock, MissingValueError, Template
from kravia_sync import (
    CallableDocument,
    Connector,
    ConnectorError,
    ConnectorSettings,
    InvalidRecordError,
    PaymentRecord,
    RecordError,
    SourceRecord,
    get_logger,
)

__all__ = ["ReadStats", "RestConnector", "RestDocumentError"]

log = get_logger(__name__)

_GONE: Final = frozenset({404, 410})


class RestDocumentError(ConnectorError, OSError):
    """An invoice copy could not be fetched because the API failed (not because it has none).

    An `OSError` as well, so that the engine treats it like any unreadable copy: a new invoice
    waits (quarantined with this reason), an upload is retried with backoff.
    """


@dataclass(slots=True)
class ReadStats:
    """What the last read did (for logs, tests and benchmarks)."""

    pages: int = 0
    invoices: int = 0
    customer_requests: int = 0
    customer_cache_hits: int = 0


@dataclass(frozen=True, slots=True)
class _Listing:
    path: str
    params: dict[str, str]
    label: str  # " dated 2024-01-01 to 2024-12-31": after "invoices" in messages


@dataclass(frozen=True, slots=True)
class _Customer:
    fields: dict[str, object] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (field, reason) for every invoice of this customer


class RestConnector(Connector):
    """Reads invoices page by page from a JSON API, as `RestSettings` describe."""

    settings_model: ClassVar[type[ConnectorSettings]] = RestSettings
    example_config: ClassVar[str] = EXAMPLE_SETTINGS
    settings: RestSettings

    def __init__(self, settings: ConnectorSettings, *, base_dir: Path) -> None:
        if not isinstance(settings, RestSettings):
            kind = type(settings).__name__
            raise TypeError(f"{type(self).__name__} needs RestSettings, not {kind}")
        super().__init__(settings, base_dir=base_dir)
        self.settings = settings
        self._authenticator = self.make_authenticator(settings, base_dir)
        self.http = HttpSource(
            base_url=settings.base_url,
            authenticator=self._authenticator,
            rate_limit=settings.rate_limit,
            retry=settings.retry,
            timeout_seconds=settings.timeout_seconds,
            headers=settings.headers,
            secrets=self.secret_values,
        )
        invoices = settings.invoices
        self._invoice_path = Template(invoices.path)
        self._param_templates = invoices.templates()
        self._param_constants = invoices.constants()
        self._records_path = JsonPath(invoices.records_path)
        customer = settings.customer
        self._customer_path = (
            Template(customer.path, invoice_values=True) if customer is not None else None
        )
        self._customer_record = JsonPath(customer.record_path) if customer is not None else None
        document = settings.document
        self._document_path = (
            Template(document.path, invoice_values=True)
            if document is not None and document.path is not None
            else None
        )
        self.stats = ReadStats()

    def secret_values(self) -> list[str]:
        """The credentials (and any OAuth2 access token fetched so far)."""
        return self._authenticator.secrets()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.settings.base_url!r})"

    # -- hooks for connectors built on this one --------------------------------------------

    def make_authenticator(self, settings: RestSettings, base_dir: Path) -> Authenticator:
        """What adds credentials to the requests: the one `settings.auth` describes. A
        connector with a scheme of its own (Fiken's OAuth2 refresh tokens) overrides this."""
        return settings.auth.authenticator(base_dir)

    def review(
        self,
        key: str,  # noqa: ARG002 - for subclasses
        invoice: Mapping[str, Any],  # noqa: ARG002
        fields: dict[str, object],  # noqa: ARG002
    ) -> RecordError | bool:
        """An invoice, its own fields mapped, before its customer is fetched: True keeps it,
        False leaves it out (not an open invoice), a `RecordError` quarantines it."""
        return True

    def check(self) -> list[str] | None:
        """One request for the first page of invoices (nothing read from it): the problem when
        the API refuses the credentials or cannot be reached."""
        clock = Clock.current(self.timezone)
        params = dict(self._param_constants)
        params.update({name: t.render(clock) for name, t in self._param_templates.items()})
        first = self.settings.invoices.paging.pager().first(
            self._invoice_path.render(clock, escape=_segment), params
        )
        return self.http.probe(first.url, "the first invoices page", first.params)

    def listings(self, clock: Clock) -> Iterator[tuple[str, dict[str, str]]]:  # noqa: ARG002
        """The listings a read is made of, (a name for messages, extra query parameters): one;
        more for a source asked in slices (Tripletex). A read is whole only when each is."""
        yield "", {}

    # -- reading ---------------------------------------------------------------------------

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        """Yield one item per invoice, page by page (a subclass may add payment records);
        raise `ConnectorError` when the API fails (after the retries) or the pages do not add
        up, at any point of the read."""
        self.stats = ReadStats()
        clock = Clock.current(self.timezone)
        params = dict(self._param_constants)
        params.update({name: t.render(clock) for name, t in self._param_templates.items()})
        path = self._invoice_path.render(clock, escape=_segment)
        customers: dict[str, _Customer] = {}
        with self.http.session() as session:
            for label, extra in self.listings(clock):
                listing = _Listing(path, {**params, **extra}, label)
                yield from self._read_listing(listing, clock, session, customers)
        log.debug(
            "source read",
            base_url=self.settings.base_url,
            pages=self.stats.pages,
            invoices=self.stats.invoices,
            customer_requests=self.stats.customer_requests,
            customer_cache_hits=self.stats.customer_cache_hits,
        )

    def _read_listing(
        self,
        listing: _Listing,
        clock: Clock,
        session: Session,
        customers: dict[str, _Customer],
    ) -> Iterator[SourceRecord | RecordError]:
        invoices = self.settings.invoices
        pager = invoices.paging.pager()
        request: PageRequest | None = pager.first(listing.path, listing.params)
        page = 0
        while request is not None:
            page += 1
            if page > invoices.max_pages:
                raise ConnectorError(
                    f"the invoices{listing.label} need more than max_pages = "
                    f"{invoices.max_pages} pages; raise it if that is right (nothing of this "
                    "read is taken as gone)"
                )
            what = f"invoices{listing.label} page {page}"
            response, body = session.get_json(request.url, what=what, params=request.params)
            records = self._records_path.find(body)
            if not isinstance(records, list):
                path = self._records_path.text
                where = f" at {path!r}" if path else ""
                found = "nothing" if records is MISSING else type(records).__name__
                raise ConnectorError(
                    f"{what}: expected a list of invoices{where} in the answer, found "
                    f"{found} (check invoices.records_path)"
                )
            self.stats.pages += 1
            try:
                request = pager.next(
                    request,
                    PageResponse(str(response.url), response.headers, body, len(records)),
                )
            except PagingError as exc:
                raise ConnectorError(f"{what}: {exc}") from None
            for position, raw in enumerate(records, start=1):
                self.stats.invoices += 1
                where = f"{what}, invoice {position}"
                item = self._record(raw, where, clock, session, customers)
                if item is not None:
                    yield item
        try:
            pager.finish()
        except PagingError as exc:
            raise ConnectorError(f"the invoices{listing.label}: {exc}") from None

    def _record(
        self,
        raw: object,
        where: str,
        clock: Clock,
        session: Session,
        customers: dict[str, _Customer],
    ) -> SourceRecord | RecordError | None:
        if not isinstance(raw, dict):
            return RecordError(where, "record", f"is {type(raw).__name__}, not a JSON object")
        fields, error = _map(self.settings.fields, raw, "", self.timezone)
        key = _key(fields, where)
        if error is not None:
            return RecordError(key, *error)
        verdict = self.review(key, raw, fields)
        if isinstance(verdict, RecordError):
            return verdict
        if not verdict:
            return None
        return self._complete(key, raw, fields, clock=clock, session=session, customers=customers)

    def _complete(
        self,
        key: str,
        raw: Mapping[str, Any],
        fields: dict[str, object],
        *,
        clock: Clock,
        session: Session,
        customers: dict[str, _Customer],
    ) -> SourceRecord | RecordError:
        """The record with its customer's fields and its document."""
        if self._customer_path is not None:
            customer = self._customer(raw, clock, session, customers)
            if isinstance(customer, str):
                return RecordError(key, "customer", customer)
            if customer.error is not None:
                return RecordError(key, *customer.error)
            fields.update(customer.fields)
        document = self._document(raw, fields, clock)
        if isinstance(document, str):
            return RecordError(key, "document", document)
        return SourceRecord(key=key, fields=fields, document=document)

    # -- customers -------------------------------------------------------------------------

    def _customer(
        self,
        raw: Mapping[str, Any],
        clock: Clock,
        session: Session,
        customers: dict[str, _Customer],
    ) -> _Customer | str:
        template = self._customer_path
        assert template is not None  # noqa: S101 - the caller checks
        try:
            path = template.render(clock, raw, escape=_segment)
        except MissingValueError as exc:
            return f"{exc}, which the customer path {template.text!r} needs"
        cached = customers.get(path)
        if cached is not None:
            self.stats.customer_cache_hits += 1
            return cached
        self.stats.customer_requests += 1
        customer = self._fetch_customer(session, path)
        customers[path] = customer
        return customer

    def _fetch_customer(self, session: Session, path: str) -> _Customer:
        settings = self.settings.customer
        assert settings is not None  # noqa: S101 - the caller checks
        assert self._customer_record is not None  # noqa: S101
        try:
            _response, body = session.get_json(path, what=f"the customer {path}")
        except HttpError as exc:
            if exc.status in _GONE:
                return _Customer(error=("customer", str(exc)))
            raise
        found = self._customer_record.find(body)
        if not isinstance(found, dict):
            where = f" at {self._customer_record.text!r}" if self._customer_record.text else ""
            return _Customer(error=("customer", f"the answer to {path} has no object{where}"))
        fields, error = _map(settings.fields, found, f"the customer {path}: ", self.timezone)
        return _Customer(fields=fields, error=error)

    # -- documents -------------------------------------------------------------------------

    def _document(
        self, raw: Mapping[str, Any], fields: Mapping[str, object], clock: Clock
    ) -> CallableDocument | str | None:
        settings = self.settings.document
        if settings is None:
            return None
        if settings.url_path is not None:
            url = compiled_path(settings.url_path).find(raw)
            if url is MISSING or url is None or (isinstance(url, str) and not url.strip()):
                return None  # this invoice has no copy
            if not isinstance(url, str):
                return f"the document URL at {settings.url_path!r} is {url!r}, not text"
            url = url.strip()
        else:
            template = self._document_path
            assert template is not None  # noqa: S101 - settings guarantee path or url_path
            try:
                url = template.render(clock, raw, escape=_segment)
            except MissingValueError as exc:
                return f"{exc}, which the document path {template.text!r} needs"
        label = fields.get("invoice_number") or fields.get("accounting_invoice_id") or "invoice"
        name = f"{label}.pdf"
        return CallableDocument(name, functools.partial(self._load_document, url, name))

    def _load_document(self, url: str, name: str) -> bytes:
        """The bytes of one invoice copy: fetched when the engine needs them, never before."""
        settings = self.settings.document
        assert settings is not None  # noqa: S101 - only documents of a document setting exist
        base = self.http.base_url
        try:
            target = base.join(url)
        except httpx.InvalidURL:
            raise InvalidRecordError("document", f"{name}: {url!r} is not a URL") from None
        ours = same_origin(target, base)
        if not ours and target.host not in settings.other_hosts:
            raise InvalidRecordError(
                "document",
                f"{name}: the copy is on {target.host or 'no host'}, which is neither the API's "
                f"host ({base.host}) nor listed in document.other_hosts",
            )
        try:
            with self.http.session() as session:
                response = session.get(
                    str(target),
                    what=f"the copy {name}",
                    accept="application/pdf",
                    credentials=ours,
                    max_bytes=settings.max_document_bytes,
                )
        except BodyTooLargeError as exc:
            raise InvalidRecordError("document", _too_large_reason(name, exc)) from None
        except HttpError as exc:
            if exc.status in _GONE:
                raise InvalidRecordError("document", str(exc)) from None
            raise RestDocumentError(str(exc)) from None
        except ConnectorError as exc:  # e.g. the OAuth2 token endpoint failed
            raise RestDocumentError(str(exc)) from None
        return response.content


def _too_large_reason(name: str, exc: BodyTooLargeError) -> str:
    limit = f"document.max_document_bytes ({exc.limit})"
    if exc.announced is not None:
        return f"{name}: the copy has {exc.announced} bytes, more than {limit}; not downloaded"
    return f"{name}: the copy has more bytes than {limit}; the download was stopped there"


def _map(
    mappings: Mapping[str, FieldMapping],
    data: Mapping[str, Any],
    context: str,
    timezone: tzinfo,
) -> tuple[dict[str, object], tuple[str, str] | None]:
    """The record fields of `data`, and the first field that could not be mapped."""
    fields: dict[str, object] = {}
    error: tuple[str, str] | None = None
    for name, mapping in mappings.items():
        try:
            value = mapping.apply(data, timezone)
        except ValueError as exc:
            if error is None:
                error = (name, f"{context}{mapping.describe()}: {exc}")
            continue
        if value is not None:
            fields[name] = value
    return fields, error


def _key(fields: Mapping[str, object], where: str) -> str:
    """A stable name for people: the invoice number, and the source's id when it differs."""
    number = _text(fields.get("invoice_number"))
    own = _text(fields.get("accounting_invoice_id"))
    if number is None:
        return where if own is None else f"invoice id {own}"
    return f"invoice {number}" if own in {None, number} else f"invoice {number} (id {own})"


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def _segment(value: str) -> str:
    """An invoice value inside a path: escaped, so it stays one segment."""
    return quote(value, safe="")
