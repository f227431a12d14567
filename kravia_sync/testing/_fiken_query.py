"""The Fiken simulator's list queries: the filters Fiken's spec gives `GET .../invoices` and
`GET .../creditNotes`, and their paging. Any other query parameter is refused (400) by the
simulator, so a filter is never ignored in silence. Pure: no I/O."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

__all__ = [
    "CREDIT_NOTE_PARAMETERS",
    "DEFAULT_PAGE_SIZE",
    "INVOICE_PARAMETERS",
    "MAX_PAGE_SIZE",
    "credit_note_matches",
    "invoice_matches",
    "page_of",
    "whole",
]

MAX_PAGE_SIZE: Final = 100
DEFAULT_PAGE_SIZE: Final = 25
_COMPARISONS: Final[tuple[tuple[str, Callable[[Any, Any], bool]], ...]] = (
    ("", operator.eq),
    ("Le", operator.le),
    ("Lt", operator.lt),
    ("Ge", operator.ge),
    ("Gt", operator.gt),
)
_INVOICE_DATES: Final = ("issueDate", "dueDate", "lastModified")
_CREDIT_NOTE_DATES: Final = ("issueDate", "lastModified")


def _dated(names: Iterable[str]) -> set[str]:
    return {f"{name}{suffix}" for name in names for suffix, _ in _COMPARISONS}


# GET /companies/{slug}/invoices: page, pageSize, issueDate*, lastModified*, dueDate*,
# customerId, settled, invoiceNumber (orderReference and invoiceDraftUuid are not simulated).
INVOICE_PARAMETERS: Final = frozenset(
    {"page", "pageSize", "settled", "customerId", "invoiceNumber"} | _dated(_INVOICE_DATES)
)
# GET /companies/{slug}/creditNotes: page, pageSize, issueDate*, lastModified*, customerId,
# settled.
CREDIT_NOTE_PARAMETERS: Final = frozenset(
    {"page", "pageSize", "settled", "customerId"} | _dated(_CREDIT_NOTE_DATES)
)


def whole(text: str | None) -> int | None:
    """A query parameter as a whole number, or None."""
    if text is None or not text.strip().lstrip("-").isdigit():
        return None
    return int(text)


def page_of(
    query: Mapping[str, str], known: frozenset[str], total: int
) -> tuple[slice, dict[str, str]] | str:
    """The slice of the matches a list query asks for, and the paging headers; or why it is
    refused (a 400)."""
    page = whole(query.get("page"))
    size = whole(query.get("pageSize"))
    if ("page" in query and page is None) or ("pageSize" in query and size is None):
        return "page and pageSize must be whole numbers"
    unknown = sorted(set(query) - known)
    if unknown:
        return f"unsupported query parameter: {unknown[0]}"
    page = page or 0
    size = DEFAULT_PAGE_SIZE if size is None else size
    if size < 1 or size > MAX_PAGE_SIZE or page < 0:
        return f"pageSize must be 1 to {MAX_PAGE_SIZE}"
    headers = {
        "Fiken-Api-Page": str(page),
        "Fiken-Api-Page-Size": str(size),
        "Fiken-Api-Page-Count": str(math.ceil(total / size)),
        "Fiken-Api-Result-Count": str(total),
    }
    return slice(page * size, (page + 1) * size), headers


def _dates_match(
    query: Mapping[str, str], names: Iterable[str], value_of: Callable[[str], str]
) -> bool:
    for name in names:
        for suffix, test in _COMPARISONS:
            bound = query.get(f"{name}{suffix}")
            if bound is not None and not test(value_of(name), bound):
                return False
    return True


def _settled_matches(query: Mapping[str, str], settled: object) -> bool:
    wanted = query.get("settled")
    return wanted is None or (wanted.lower() == "true") == bool(settled)


def invoice_matches(invoice: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    """Whether an invoice passes the list's filters (`lastModified` is its sale's)."""

    def value_of(name: str) -> str:
        if name == "lastModified":
            return str(invoice["sale"]["lastModifiedDate"])
        return str(invoice[name])

    if not _settled_matches(query, invoice["sale"]["settled"]):
        return False
    if not _dates_match(query, _INVOICE_DATES, value_of):
        return False
    customer = query.get("customerId")
    if customer is not None and str(invoice["customer"]["contactId"]) != customer:
        return False
    number = query.get("invoiceNumber")
    return number is None or str(invoice["invoiceNumber"]) == number


def credit_note_matches(note: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    """Whether a credit note passes the list's filters."""

    def value_of(name: str) -> str:
        return str(note["lastModifiedDate" if name == "lastModified" else name])

    if not _settled_matches(query, note.get("settled")):
        return False
    if not _dates_match(query, _CREDIT_NOTE_DATES, value_of):
        return False
    customer = query.get("customerId")
    return customer is None or str(note["customer"]["contactId"]) == customer
