"""Paging: how the next page of invoices is asked for, and when the last one has been read.

Each strategy is a settings model (the `[sources.settings.invoices.paging]` table, chosen by
`type`) that makes a `Pager`: a small state machine without I/O. The connector asks it for the
first request, shows it every response, and asks for the next request until there is none;
then `finish` checks that what was read is what the API announced. A pager that sees the
collection change under it (the announced total moves, a cursor or link comes back) raises
`PagingError`: the read is then a failed read, never a complete one.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.rest._paths import MISSING, JsonPath

__all__ = [
    "CursorPaging",
    "LinkHeaderPaging",
    "NoPaging",
    "OffsetPaging",
    "PageNumberPaging",
    "PageRequest",
    "PageResponse",
    "Pager",
    "Paging",
    "PagingError",
]

_LINK: Final = re.compile(r"<(?P<url>[^>]*)>(?P<params>[^,<]*)")
_REL_NEXT: Final = re.compile(
    r""";\s*rel\s*=\s*"?(?:[^";]*\s)?next(?:\s[^";]*)?"?""", re.IGNORECASE
)


class PagingError(ValueError):
    """The pages do not add up: the read cannot be taken as complete."""


@dataclass(frozen=True, slots=True)
class PageRequest:
    """A page to fetch: a path relative to the base URL (or an absolute URL) and parameters."""

    url: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PageResponse:
    """What a pager needs to know of one response."""

    url: str
    headers: Mapping[str, str]  # case-insensitive (httpx.Headers)
    body: object
    count: int  # records on this page


class Pager(ABC):
    """One read's paging state."""

    def __init__(self) -> None:
        self.pages = 0
        self.records = 0

    @abstractmethod
    def first(self, url: str, params: Mapping[str, str]) -> PageRequest: ...

    def next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        """The request for the page after `response`, or None when it was the last."""
        self.pages += 1
        self.records += response.count
        return self._next(request, response)

    @abstractmethod
    def _next(self, request: PageRequest, response: PageResponse) -> PageRequest | None: ...

    def finish(self) -> None:  # noqa: B027 - most strategies have nothing to check
        """Raise `PagingError` when the pages read do not add up to what was announced."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Totals(_Model):
    """Where the API announces its totals (any of them, or none)."""

    total_pages_header: str | None = None
    total_pages_path: str | None = None
    total_records_header: str | None = None
    total_records_path: str | None = None
    digest_path: str | None = None
    """A value of each page that stays the same while the list does not change (Tripletex's
    `versionDigest`, "used to know if the paginated list has changed"): a different one on a
    later page fails the read. Pages without one (null) are not compared."""

    @field_validator("total_pages_path", "total_records_path", "digest_path")
    @classmethod
    def _is_path(cls, value: str | None) -> str | None:
        if value is not None:
            JsonPath(value)
        return value


class _Announced:
    """The totals a response announces; they must not change from page to page."""

    def __init__(self, settings: _Totals) -> None:
        self.settings = settings
        self.pages: int | None = None
        self.records: int | None = None
        self.digest: object = None

    def see(self, response: PageResponse) -> None:
        s = self.settings
        if s.digest_path is not None:
            digest = JsonPath(s.digest_path).find(response.body)
            if digest is not MISSING and digest is not None:
                if self.digest is not None and digest != self.digest:
                    raise PagingError(
                        f"{s.digest_path} changed from {self.digest!r} to {digest!r} during "
                        "the read: the invoices changed while they were read"
                    )
                self.digest = digest
        pages = _number(response, s.total_pages_header, s.total_pages_path, "total pages")
        records = _number(response, s.total_records_header, s.total_records_path, "total records")
        if pages is not None:
            if self.pages is not None and pages != self.pages:
                raise PagingError(
                    f"the page count changed from {self.pages} to {pages} during the read: "
                    "the invoices changed while they were read"
                )
            self.pages = pages
        if records is not None:
            if self.records is not None and records != self.records:
                raise PagingError(
                    f"the number of invoices changed from {self.records} to {records} during "
                    "the read: they changed while they were read"
                )
            self.records = records

    def check(self, read: int) -> None:
        if self.records is not None and read != self.records:
            raise PagingError(
                f"read {read} invoices but the API announced {self.records}: the invoices "
                "changed while they were read"
            )


def _number(response: PageResponse, header: str | None, path: str | None, what: str) -> int | None:
    raw: object = MISSING
    source = ""
    if header is not None:
        raw = response.headers.get(header, MISSING)
        source = f"header {header}"
    if raw is MISSING and path is not None:
        raw = JsonPath(path).find(response.body)
        source = f"{path!r} in the body"
    if raw is MISSING or raw is None:
        if header is None and path is None:
            return None
        raise PagingError(f"the response has no {what} ({source or 'not announced'})")
    text = str(raw).strip()
    if isinstance(raw, bool) or not text.isdigit():
        raise PagingError(f"the {what} ({source}) is {raw!r}, not a whole number")
    return int(text)


# -- strategies ------------------------------------------------------------------------------


class NoPaging(_Model):
    """One request returns every invoice."""

    type: Literal["none"]

    def pager(self) -> Pager:
        return _Single()


class _Single(Pager):
    def first(self, url: str, params: Mapping[str, str]) -> PageRequest:
        return PageRequest(url, dict(params))

    def _next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:  # noqa: ARG002
        return None


class PageNumberPaging(_Totals):
    """`?page=N&page_size=M`. With a page-count header or body field (Fiken's
    `Fiken-Api-Page-Count`) the read stops after the announced last page; without, at the
    first empty (or, with `stop_on_short_page`, short) page."""

    type: Literal["page_number"]
    page_param: str = "page"
    first_page: int = Field(default=1, ge=0)
    size_param: str | None = "page_size"
    page_size: int | None = Field(default=None, gt=0)
    stop_on_short_page: bool = True

    @model_validator(mode="after")
    def _size(self) -> PageNumberPaging:
        if self.size_param and self.page_size is None:
            raise ValueError("page_size is required with size_param (or set size_param = '')")
        return self

    def pager(self) -> Pager:
        return _PageNumbers(self)


class _PageNumbers(Pager):
    def __init__(self, settings: PageNumberPaging) -> None:
        super().__init__()
        self.settings = settings
        self.announced = _Announced(settings)
        self.page = settings.first_page

    def first(self, url: str, params: Mapping[str, str]) -> PageRequest:
        return self._request(url, params)

    def _request(self, url: str, params: Mapping[str, str]) -> PageRequest:
        s = self.settings
        query = {**params, s.page_param: str(self.page)}
        if s.size_param and s.page_size is not None:
            query[s.size_param] = str(s.page_size)
        return PageRequest(url, query)

    def _next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        s = self.settings
        self.announced.see(response)
        if response.count == 0:
            return None
        if self.announced.pages is not None:
            if self.pages >= self.announced.pages:
                return None
        elif self.announced.records is not None:
            if self.records >= self.announced.records:
                return None
        elif s.stop_on_short_page and s.page_size is not None and response.count < s.page_size:
            return None
        self.page += 1
        params = {k: v for k, v in request.params.items() if k != s.page_param}
        return self._request(request.url, params)

    def finish(self) -> None:
        if self.announced.pages is not None and self.pages < self.announced.pages:
            raise PagingError(
                f"the API announced {self.announced.pages} pages but page {self.page} was "
                "empty: the invoices changed while they were read"
            )
        self.announced.check(self.records)


class OffsetPaging(_Totals):
    """`?offset=N&limit=M`: the offset moves by the records each page returned."""

    type: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(default=100, gt=0)
    first_offset: int = Field(default=0, ge=0)
    stop_on_short_page: bool = True

    def pager(self) -> Pager:
        return _Offsets(self)


class _Offsets(Pager):
    def __init__(self, settings: OffsetPaging) -> None:
        super().__init__()
        self.settings = settings
        self.announced = _Announced(settings)
        self.offset = settings.first_offset

    def first(self, url: str, params: Mapping[str, str]) -> PageRequest:
        return self._request(url, params)

    def _request(self, url: str, params: Mapping[str, str]) -> PageRequest:
        s = self.settings
        query = {**params, s.offset_param: str(self.offset), s.limit_param: str(s.limit)}
        return PageRequest(url, query)

    def _next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        s = self.settings
        self.announced.see(response)
        if response.count == 0:
            return None
        self.offset += response.count
        if self.announced.records is not None:
            if self.records >= self.announced.records:
                return None
        elif s.stop_on_short_page and response.count < s.limit:
            return None
        return self._request(request.url, request.params)

    def finish(self) -> None:
        self.announced.check(self.records)


class CursorPaging(_Model):
    """The body names the next page: `cursor_path` holds a cursor for `cursor_param` (or,
    with `cursor_is_url`, the next page's URL). No cursor, null or blank: the last page."""

    type: Literal["cursor"]
    cursor_path: str
    cursor_param: str = "cursor"
    cursor_is_url: bool = False

    @field_validator("cursor_path")
    @classmethod
    def _is_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("cursor_path is empty")
        JsonPath(value)
        return value

    def pager(self) -> Pager:
        return _Cursors(self)


class _Cursors(Pager):
    def __init__(self, settings: CursorPaging) -> None:
        super().__init__()
        self.settings = settings
        self.seen: set[str] = set()

    def first(self, url: str, params: Mapping[str, str]) -> PageRequest:
        return PageRequest(url, dict(params))

    def _next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        s = self.settings
        cursor = JsonPath(s.cursor_path).find(response.body)
        if cursor is MISSING or cursor is None or (isinstance(cursor, str) and not cursor.strip()):
            return None
        if isinstance(cursor, dict | list | bool):
            raise PagingError(f"the cursor at {s.cursor_path!r} is {cursor!r}, not a value")
        text = str(cursor).strip()
        if text in self.seen:
            raise PagingError(f"the cursor {text!r} came back: the pages would never end")
        self.seen.add(text)
        if s.cursor_is_url:
            return PageRequest(_join(response.url, text), {})
        return PageRequest(request.url, {**request.params, s.cursor_param: text})


class LinkHeaderPaging(_Model):
    """RFC 8288 `Link: <…>; rel="next"` headers (GitHub-style); no next link: the last page."""

    type: Literal["link_header"]

    def pager(self) -> Pager:
        return _Links()


class _Links(Pager):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def first(self, url: str, params: Mapping[str, str]) -> PageRequest:
        return PageRequest(url, dict(params))

    def _next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:  # noqa: ARG002
        found = next_link(response.headers.get("link", ""))
        if found is None:
            return None
        link = _join(response.url, found)
        if link in self.seen:
            raise PagingError(f"the next link {link!r} came back: the pages would never end")
        self.seen.add(link)
        return PageRequest(link, {})


def _join(base: str, link: str) -> str:
    try:
        return urljoin(base, link)
    except ValueError as exc:
        raise PagingError(f"the next page's address {link!r} is not a URL ({exc})") from None


def next_link(header: str) -> str | None:
    """The URL of the `rel="next"` link in a `Link` header, if any."""
    for match in _LINK.finditer(header):
        if _REL_NEXT.search(match["params"]):
            return match["url"].strip()
    return None


Paging = Annotated[
    NoPaging | PageNumberPaging | OffsetPaging | CursorPaging | LinkHeaderPaging,
    Field(discriminator="type"),
]
