"""Reading Kravia's answers: search items, details, the money recorded on a case, settlements.

Pure functions over parsed JSON, through the names in `kravia_sync.kravia.assumptions`; an
answer in a shape they cannot read is reported as such, never guessed at."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

import httpx

from kravia_sync.kravia.assumptions import (
    ACTION_NAME_KEYS,
    ACTION_START,
    CLOSED_STATUSES,
    DETAILS_ACTIONS_KEY,
    DETAILS_DOCUMENTS_KEY,
    DETAILS_OUTSTANDING_KEY,
    DETAILS_PAYMENTS_KEY,
    DETAILS_REMAINING_CAPITAL_KEY,
    DETAILS_STATUS_KEY,
    DOCUMENT_TYPE_INVOICE,
    DOCUMENT_TYPE_KEYS,
    OPEN_STATUSES,
    PAYMENT_AMOUNT_KEY,
    PAYMENT_APPLIED_KEY,
    PAYMENT_DATE_KEY,
    PAYMENT_ID_KEY,
    PAYMENT_TYPE_KEY,
    PAYMENT_TYPES,
    REGISTER_ID_KEYS,
    SEARCH_ID_KEYS,
    SEARCH_ITEMS_KEYS,
    SEARCH_TOTAL_KEYS,
    SETTLEMENT_BOOKED_KEY,
    SETTLEMENT_DATE_KEY,
    SETTLEMENT_ITEMS_KEYS,
    SETTLEMENT_LINES_KEY,
    SETTLEMENT_REFERENCE_KEY,
    STARTED_STATUSES,
)
from kravia_sync.kravia.errors import Failure, KraviaError
from kravia_sync.lifecycle import Details

__all__ = [
    "CaseStanding",
    "MoneyLine",
    "PaymentKind",
    "RawAnswer",
    "RecordedPayment",
    "SearchItem",
    "Settlement",
    "available_actions",
    "can_start",
    "case_progress",
    "case_standing",
    "details_summary",
    "dotnet_time_zone",
    "field_of",
    "has_invoice_document",
    "json_answer",
    "loads_exact",
    "parse_dotnet_time",
    "parse_http_date",
    "parse_register_id",
    "parse_search_items",
    "parse_settlements",
    "payment_recorded",
    "read_amount",
    "read_search_item",
    "recorded_payments",
    "reports_closed",
    "search_item_list",
    "search_total",
]


@dataclass(frozen=True, slots=True)
class SearchItem:
    kravia_id: int
    accounting_invoice_id: str | None
    invoice_number: str | None
    status: str | None
    updated: str | None
    remaining_capital: Decimal | None = None  # None when the item does not say
    outstanding: Decimal | None = None


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """One answer as Kravia sent it, for checking its shape (`KraviaClient.look`, and the
    answers a watcher sees): the operation, the HTTP status, the `Date` header as sent, and
    the body parsed exactly (None when it is not JSON)."""

    operation: str
    status: int
    date: str | None
    body: object

    @classmethod
    def of(cls, operation: str, response: httpx.Response) -> RawAnswer:
        try:
            body = loads_exact(response.content) if response.content else None
        except ValueError:
            body = None
        return cls(operation, response.status_code, response.headers.get("Date"), body)


@dataclass(frozen=True, slots=True)
class MoneyLine:
    """An amount on one Kravia case. Positive in our model, whatever sign Kravia wants."""

    kravia_id: int
    amount: Decimal

    def __post_init__(self) -> None:
        if isinstance(self.kravia_id, bool) or not isinstance(self.kravia_id, int):
            raise TypeError(f"a Kravia id is an integer, not {self.kravia_id!r}")
        if not isinstance(self.amount, Decimal):
            raise TypeError(f"an amount is a Decimal, not {type(self.amount).__name__}")
        if not self.amount.is_finite() or self.amount <= 0:
            raise ValueError(f"an amount on case {self.kravia_id} must be above 0: {self.amount}")


class PaymentKind(StrEnum):
    """What kind of money a case's details record."""

    PAYMENT = "payment"  # the debtor paid the creditor directly (we sent it)
    CREDIT_NOTE = "credit_note"  # the creditor credited the claim (we sent it)
    COLLECTED = "collected"  # the debtor paid Kravia (Kravia's own; never ours to send)
    UNKNOWN = "unknown"  # a type we do not recognise


@dataclass(frozen=True, slots=True)
class RecordedPayment:
    """Money Kravia lists on a case. `amount` is positive (a credit note's sign is dropped);
    `applied` is the part that reduced the capital, None when the details do not say."""

    accounting_payment_id: str | None
    amount: Decimal
    paid_on: date | None
    kind: PaymentKind
    applied: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CaseStanding:
    """Where a case stands, as its details say. Every field is None when they do not say."""

    status: str | None
    remaining_capital: Decimal | None
    outstanding: Decimal | None
    closed: bool | None
    payments: list[RecordedPayment] | None  # None: no readable list of payments


@dataclass(frozen=True, slots=True)
class Settlement:
    """A payout from Kravia to the creditor."""

    id: int
    settled_on: date | None
    amount: Decimal
    lines: list[MoneyLine]
    booked: bool | None
    reference: str | None = None  # the internalAccountingId it was booked under, when told


def parse_register_id(body: object) -> int:
    """The new case's id from a register answer; ValueError when there is none, or when two
    keys give different ones (never a guess between them)."""
    if isinstance(body, int) and not isinstance(body, bool):
        return body
    ids: dict[str, int] = {}
    if isinstance(body, dict):
        for key, value in body.items():
            if key.lower() in {name.lower() for name in REGISTER_ID_KEYS}:
                parsed = _int_id(value)
                if parsed is None:
                    raise ValueError(f"Kravia's register answer has {key} = {str(value)[:50]!r}")
                ids[key] = parsed
    if len(set(ids.values())) > 1:
        named = ", ".join(f"{key} = {value}" for key, value in ids.items())
        raise ValueError(f"Kravia's register answer names two different ids: {named}")
    if ids:
        return next(iter(ids.values()))
    raise ValueError(f"no invoice id in Kravia's register answer: {str(body)[:200]}")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number Kravia can mean")


def loads_exact(content: bytes | str) -> Any:  # noqa: ANN401 - JSON value
    """Parse JSON with every fractional number as an exact Decimal (never through a float)."""
    return json.loads(content, parse_float=Decimal, parse_constant=_reject_constant)


def json_answer(response: httpx.Response) -> Any:  # noqa: ANN401 - JSON value
    try:
        return loads_exact(response.content)
    except ValueError as exc:
        raise KraviaError(
            Failure.TRANSIENT, f"Kravia's answer is not JSON: {response.text[:200]}"
        ) from exc


def _listed(body: object, keys: Sequence[str], what: str) -> list[Any]:
    """The list an answer carries: the answer itself, or under one of `keys`."""
    if isinstance(body, list):
        items: object = body
    elif isinstance(body, dict):
        items = next((body[key] for key in keys if key in body), None)
    else:
        items = None
    if not isinstance(items, list):
        raise ValueError(f"unrecognised {what} answer: {str(body)[:200]}")
    return items


def search_total(body: object) -> int | None:
    """How many cases match in all, where the search answer says (ASSUMED: `totalCount` or
    `count` beside the list); None otherwise."""
    if not isinstance(body, dict):
        return None
    value = _first_ci(body, SEARCH_TOTAL_KEYS)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def search_item_list(body: object) -> list[dict[str, Any]]:
    items = _listed(body, SEARCH_ITEMS_KEYS, "search")
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"Kravia's search answer has an item we cannot read: {item!r:.200}")
    return items


def _get_ci(item: Mapping[str, Any], name: str) -> Any:  # noqa: ANN401 - JSON value
    """A property by name, case-insensitively (ASP.NET serialisers vary)."""
    if name in item:
        return item[name]
    lowered = name.lower()
    return next((value for key, value in item.items() if key.lower() == lowered), None)


def details_summary(details: Mapping[str, Any]) -> SearchItem:
    """What a case's details say of the case the way a search item does (ASSUMED: the
    details carry the search item's fields); KraviaError (transient) when it cannot be
    identified."""
    return read_search_item(details)


def read_search_item(item: Mapping[str, Any]) -> SearchItem:
    """One search item; KraviaError (transient) when it has no readable Kravia id, or neither
    an accountingInvoiceId nor an invoice number: such a case could be any invoice."""
    raw_id = _first_ci(item, SEARCH_ID_KEYS)
    kravia_id = _int_id(raw_id)
    aid = _get_ci(item, "accountingInvoiceId")
    number = _get_ci(item, "invoiceNo")
    if kravia_id is None or (aid in {None, ""} and number in {None, ""}):
        raise KraviaError(
            Failure.TRANSIENT,
            f"Kravia's search answer has a case we cannot identify: {str(dict(item))[:200]}",
        )
    status = _get_ci(item, DETAILS_STATUS_KEY)
    updated = _get_ci(item, "lastUpdatedTime")
    return SearchItem(
        kravia_id=kravia_id,
        accounting_invoice_id=None if aid in {None, ""} else str(aid),
        invoice_number=None if number in {None, ""} else str(number),
        status=None if status is None else str(status),
        updated=None if updated is None else str(updated),
        remaining_capital=_decimal(_get_ci(item, DETAILS_REMAINING_CAPITAL_KEY)),
        outstanding=_decimal(_get_ci(item, DETAILS_OUTSTANDING_KEY)),
    )


def parse_search_items(body: object) -> list[SearchItem]:
    """Every item of one search answer (`search_updated_since` reads each page this way);
    ValueError or KraviaError (transient) when the answer or an item cannot be read."""
    return [read_search_item(item) for item in search_item_list(body)]


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP `Date` header as an aware UTC datetime, or None when missing or unreadable."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_dotnet_time(text: str | None) -> datetime | None:
    """Kravia's `lastUpdatedTime` (a .NET timestamp, up to 7 digits of fraction) as an aware
    datetime: in the zone it names ("Z" or an offset such as "+01:00"), and where it names
    none (the guide's form), ASSUMED UTC. None when it cannot be read."""
    if not text:
        return None
    body = text.strip()
    zone = dotnet_time_zone(body)
    if zone is not None:
        body = body[: len(body) - len(zone)]
    head, _, fraction = body.partition(".")
    if fraction and not fraction.isdigit():
        return None
    try:
        moment = datetime.fromisoformat(head)
        offset = (
            UTC
            if zone in {None, "Z", "z"}
            else datetime.fromisoformat(f"2000-01-01T00:00{zone}").tzinfo
        )
    except ValueError:
        return None
    if moment.tzinfo is not None or offset is None:
        return None
    moment = moment.replace(tzinfo=offset, microsecond=int((fraction + "000000")[:6]))
    return moment.astimezone(UTC)


def dotnet_time_zone(text: str | None) -> str | None:
    """The zone a `lastUpdatedTime` text names: "Z", an offset such as "+01:00" (as written),
    or None when it names none (the guide's form, read as UTC)."""
    if not text:
        return None
    body = text.strip()
    if body.endswith(("Z", "z")):
        return body[-1]
    time_part = body.partition("T")[2]
    for sign in ("+", "-"):
        if sign in time_part:
            return sign + time_part.rpartition(sign)[2]
    return None


def field_of(item: Mapping[str, Any], name: str) -> Any:  # noqa: ANN401 - JSON value
    """A property of one of Kravia's answers by name, matched as the engine matches it
    (case-insensitively)."""
    return _get_ci(item, name)


def _decimal(value: object) -> Decimal | None:
    """An exact amount from a JSON value; None when it is not one.

    A float means the answer was parsed lossily (use `loads_exact`): that is a bug, not data.
    """
    if isinstance(value, float):
        raise TypeError("amounts must be parsed exactly (json.loads(..., parse_float=Decimal))")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except ArithmeticError:
            return None
        return parsed if parsed.is_finite() else None
    return None


def _date_of(value: object) -> date | None:
    """The calendar date of `2024-07-16` or `2024-07-16T00:00:00[...]`; None otherwise."""
    if not isinstance(value, str) or len(value) < 10 or value[10:11] not in {"", "T", " "}:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _int_id(value: object) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _closed(status: str | None) -> bool | None:
    if status is None:
        return None
    lowered = status.lower()
    if lowered in CLOSED_STATUSES:
        return True
    return False if lowered in OPEN_STATUSES else None


def reports_closed(status: str | None) -> bool:
    """Whether a case status Kravia reported names a closed case (an unknown status does
    not)."""
    return _closed(status) is True


def _recorded_payment(entry: object) -> RecordedPayment | None:
    """One entry of the details' payments; None when it cannot be read."""
    if not isinstance(entry, dict):
        return None
    raw_type = _get_ci(entry, PAYMENT_TYPE_KEY)
    kind = PaymentKind(PAYMENT_TYPES.get(str(raw_type).lower(), PaymentKind.UNKNOWN))
    amount = _decimal(_get_ci(entry, PAYMENT_AMOUNT_KEY))
    applied = _decimal(_get_ci(entry, PAYMENT_APPLIED_KEY))
    if amount is None:
        return None
    if kind is PaymentKind.CREDIT_NOTE:  # Kravia takes credit notes as negative amounts
        amount, applied = abs(amount), None if applied is None else abs(applied)
    elif amount < 0 or (applied is not None and applied < 0):
        return None  # a negative payment (a reversal?) is not something we can interpret
    raw_id = _get_ci(entry, PAYMENT_ID_KEY)
    return RecordedPayment(
        accounting_payment_id=None if raw_id is None or raw_id == "" else str(raw_id),
        amount=amount,
        paid_on=_date_of(_get_ci(entry, PAYMENT_DATE_KEY)),
        kind=kind,
        applied=applied,
    )


def read_amount(value: object) -> Decimal | None:
    """An amount as the engine reads it from Kravia's answers; None when it cannot be read."""
    return _decimal(value)


def recorded_payments(details: Mapping[str, Any]) -> list[RecordedPayment] | None:
    """The details' payments as the engine reads them (see `case_standing`)."""
    return _recorded_payments(_get_ci(details, DETAILS_PAYMENTS_KEY))


def _recorded_payments(value: object) -> list[RecordedPayment] | None:
    """The payments, or None when there is no list or any entry cannot be read: a partial
    list could hide the very payment someone is looking for."""
    if not isinstance(value, list):
        return None
    payments = [_recorded_payment(entry) for entry in value]
    return None if None in payments else [p for p in payments if p is not None]


def case_standing(details: Mapping[str, Any]) -> CaseStanding:
    """Where a case stands according to its details (`KraviaClient.details`). What the
    details do not say is None, never a guess."""
    raw_status = _get_ci(details, DETAILS_STATUS_KEY)
    status = None if raw_status is None else str(raw_status)
    return CaseStanding(
        status=status,
        remaining_capital=_decimal(_get_ci(details, DETAILS_REMAINING_CAPITAL_KEY)),
        outstanding=_decimal(_get_ci(details, DETAILS_OUTSTANDING_KEY)),
        closed=_closed(status),
        payments=_recorded_payments(_get_ci(details, DETAILS_PAYMENTS_KEY)),
    )


def payment_recorded(
    standing: CaseStanding, accounting_payment_id: str, *, kind: PaymentKind | None = None
) -> bool | None:
    """Whether Kravia lists our payment or credit note `accounting_payment_id` on the case.

    None when that cannot be told: the details list no payments, or an entry that could be
    ours carries no id (or, with `kind`, carries our id but no recognisable type). False only
    when every entry that could be ours is listed with another id. Give `kind` when payment
    and credit note ids may coincide in the source.
    """
    if standing.payments is None:
        return None
    could_be_ours = [
        p
        for p in standing.payments
        if p.kind is not PaymentKind.COLLECTED
        and (kind is None or p.kind in {kind, PaymentKind.UNKNOWN})
    ]
    same_id = [p for p in could_be_ours if p.accounting_payment_id == accounting_payment_id]
    if any(kind is None or p.kind is kind for p in same_id):
        return True
    if same_id or any(p.accounting_payment_id is None for p in could_be_ours):
        return None
    return False


def _settlement_line(item: object) -> MoneyLine:
    if not isinstance(item, dict):
        raise ValueError(f"unrecognised settlement line: {str(item)[:200]}")
    kravia_id = _int_id(_get_ci(item, "invoiceId"))
    amount = _decimal(_get_ci(item, "amount"))
    if kravia_id is None or amount is None or amount <= 0:
        raise ValueError(f"unrecognised settlement line: {str(item)[:200]}")
    return MoneyLine(kravia_id, amount)


def _settlement(item: object) -> Settlement:
    if not isinstance(item, dict):
        raise ValueError(f"unrecognised settlement: {str(item)[:200]}")
    settlement_id = _int_id(_get_ci(item, "id"))
    amount = _decimal(_get_ci(item, "amount"))
    lines = _get_ci(item, SETTLEMENT_LINES_KEY)
    if settlement_id is None or amount is None or not isinstance(lines, list):
        raise ValueError(f"unrecognised settlement: {str(item)[:200]}")
    booked = _get_ci(item, SETTLEMENT_BOOKED_KEY)
    reference = _get_ci(item, SETTLEMENT_REFERENCE_KEY)
    return Settlement(
        id=settlement_id,
        settled_on=_date_of(_get_ci(item, SETTLEMENT_DATE_KEY)),
        amount=amount,
        lines=[_settlement_line(line) for line in lines],
        booked=booked if isinstance(booked, bool) else None,
        reference=reference if isinstance(reference, str) and reference.strip() else None,
    )


def parse_settlements(body: object) -> list[Settlement]:
    """Settlements from a `GET settlements` answer (parsed with `loads_exact`). ValueError
    when any of it cannot be read: a payout we cannot see must not pass unnoticed."""
    return [_settlement(item) for item in _listed(body, SETTLEMENT_ITEMS_KEYS, "settlements")]


def _first_ci(item: Mapping[str, Any], names: Sequence[str]) -> Any:  # noqa: ANN401 - JSON
    """The first of these properties the item has (case-insensitively), or None."""
    for name in names:
        value = _get_ci(item, name)
        if value is not None:
            return value
    return None


def has_invoice_document(details: Mapping[str, Any]) -> bool | None:
    """Whether the case has an invoice copy; None when the details do not say (no list of
    documents, or a document whose type cannot be read)."""
    documents = _get_ci(details, DETAILS_DOCUMENTS_KEY)
    if not isinstance(documents, list):
        return None
    types = [
        _first_ci(doc, DOCUMENT_TYPE_KEYS) if isinstance(doc, dict) else None for doc in documents
    ]
    if any(str(kind).lower() == DOCUMENT_TYPE_INVOICE.lower() for kind in types):
        return True
    return None if any(kind is None for kind in types) else False


def available_actions(details: Mapping[str, Any]) -> frozenset[str] | None:
    """The actions the case offers, lower-cased; None when the details do not say in a shape
    we know (see DETAILS_ACTIONS_KEY)."""
    actions = _get_ci(details, DETAILS_ACTIONS_KEY)
    if isinstance(actions, dict):
        if not all(isinstance(offered, bool) for offered in actions.values()):
            return None
        return frozenset(str(name).lower() for name, offered in actions.items() if offered)
    if not isinstance(actions, list):
        return None
    names: set[str] = set()
    for action in actions:
        name = _first_ci(action, ACTION_NAME_KEYS) if isinstance(action, dict) else action
        if not isinstance(name, str):
            return None  # an entry we cannot read could be Start
        names.add(name.lower())
    return frozenset(names)


def can_start(details: Mapping[str, Any]) -> bool | None:
    """Whether Start is still available; None when the details do not say."""
    actions = available_actions(details)
    if actions is None:
        return None
    if isinstance(_get_ci(details, DETAILS_ACTIONS_KEY), dict):
        listed = {str(name).lower() for name in _get_ci(details, DETAILS_ACTIONS_KEY)}
        if ACTION_START.lower() not in listed:
            return None  # an object of booleans that does not mention Start says nothing
    return ACTION_START.lower() in actions


def case_progress(details: Mapping[str, Any]) -> Details:
    """What a case's details tell of its copy and its start (each None when they do not)."""
    status = _get_ci(details, DETAILS_STATUS_KEY)
    started: bool | None = None
    if isinstance(status, str) and status.lower() in STARTED_STATUSES:
        started = True
    else:
        startable = can_start(details)
        if startable is not None:
            started = not startable
    return Details(documented=has_invoice_document(details), started=started)
