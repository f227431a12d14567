"""The Kravia simulator's constants: the operations it counts, the first ids it hands out, the
names of claims, documents, actions, payments and statuses (the ASSUMED ones marked), its paging
and size limits, its data file's format, and the patterns, messages and media types its
validation and answers use."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

__all__ = [
    "ACTION_PAUSE",
    "ACTION_RESUME",
    "ACTION_START",
    "CLAIM_TYPE",
    "COLLECTED_TYPE",
    "CREDIT_NOTE_TYPE",
    "DATA_FILE_FORMAT",
    "DEFAULT_TOP",
    "DOCUMENT_TYPES",
    "FIRST_CASE_ID",
    "FIRST_DOCUMENT_ID",
    "FIRST_PAYMENT_ID",
    "FIRST_SETTLEMENT_ID",
    "MAX_BODY_BYTES",
    "MAX_TOP",
    "MUTATING_OPERATIONS",
    "OPERATIONS",
    "ORDER_BY_LAST_UPDATED",
    "PAYMENT_TYPE",
    "STATUS_CLOSED",
    "STATUS_PAUSED",
    "STATUS_REGISTERED",
    "STATUS_STARTED",
]

OPERATIONS: Final[tuple[str, ...]] = (
    "register",
    "document",
    "action",
    "search",
    "details",
    "payment",
    "creditnote",
    "settlements",
    "bookkeep",
    "webhook",
)
MUTATING_OPERATIONS: Final[frozenset[str]] = frozenset(
    {"register", "document", "action", "payment", "creditnote", "bookkeep", "webhook"}
)

FIRST_CASE_ID: Final = 1_000_001
FIRST_DOCUMENT_ID: Final = 500_001
FIRST_PAYMENT_ID: Final = 700_001
FIRST_SETTLEMENT_ID: Final = 90_001
CLAIM_TYPE: Final = "CollectionCase"
DOCUMENT_TYPES: Final = frozenset({"Invoice"})
ACTION_START: Final = "Start"
# ASSUMED (unpublished in Kravia's guides): the names of the pause and resume actions.
ACTION_PAUSE: Final = "Pause"
ACTION_RESUME: Final = "Resume"
# ASSUMED: how a payment is typed in a case's details.
PAYMENT_TYPE: Final = "Payment"  # the debtor paid the creditor directly (invoice/payment)
CREDIT_NOTE_TYPE: Final = "CreditNote"  # the creditor credited the claim (invoice/creditnote)
COLLECTED_TYPE: Final = "Collected"  # the debtor paid Kravia, which paid the creditor out
ORDER_BY_LAST_UPDATED: Final = 11
DEFAULT_TOP: Final = 20
MAX_TOP: Final = 100
MAX_BODY_BYTES: Final = 25 * 1024 * 1024
# ASSUMED: case status names. Registered until Start; Closed once the capital reaches 0.
STATUS_REGISTERED: Final = "Registered"
STATUS_STARTED: Final = "CollectionStarted"
STATUS_PAUSED: Final = "Paused"
STATUS_CLOSED: Final = "Closed"
# action -> (the status it needs, the status it leads to)
_ACTIONS: Final[Mapping[str, tuple[str, str]]] = {
    ACTION_START: (STATUS_REGISTERED, STATUS_STARTED),
    ACTION_PAUSE: (STATUS_STARTED, STATUS_PAUSED),
    ACTION_RESUME: (STATUS_PAUSED, STATUS_STARTED),
}
DATA_FILE_FORMAT: Final = "kravia-sync-simulator/2"
_OLDER_DATA_FILE_FORMATS: Final = frozenset({"kravia-sync-simulator/1"})

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TICKS_PER_SECOND: Final = 10_000_000
_MAX_DECIMAL: Final = Decimal(79228162514264337593543950335)  # System.Decimal.MaxValue
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_CONVERT: Final = "The JSON value could not be converted to {}."

_DATE_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,7})?)?"
)
_DOTNET_TIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,7}))?)?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?"
)
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
_COUNTRY_RE: Final = re.compile(r"[A-Z]{2}")
_ORGNR_RE: Final = re.compile(r"[0-9]{9}")
_INT_RE: Final = re.compile(r"[+-]?[0-9]{1,18}")

_PROBLEM_TYPES: Final[Mapping[int, tuple[str, str]]] = {
    400: ("https://tools.ietf.org/html/rfc9110#section-15.5.1", "Bad Request"),
    401: ("https://tools.ietf.org/html/rfc9110#section-15.5.2", "Unauthorized"),
    404: ("https://tools.ietf.org/html/rfc9110#section-15.5.5", "Not Found"),
    413: ("https://tools.ietf.org/html/rfc9110#section-15.5.14", "Content Too Large"),
    415: ("https://tools.ietf.org/html/rfc9110#section-15.5.16", "Unsupported Media Type"),
    429: ("https://tools.ietf.org/html/rfc6585#section-4", "Too Many Requests"),
    500: (
        "https://tools.ietf.org/html/rfc9110#section-15.6.1",
        "An error occurred while processing your request.",
    ),
}
_VALIDATION_TITLE: Final = "One or more validation errors occurred."
_JSON_TYPE: Final = "application/json; charset=utf-8"
_PROBLEM_TYPE: Final = "application/problem+json; charset=utf-8"

_ABSENT: Final = object()
