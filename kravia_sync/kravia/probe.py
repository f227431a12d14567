"""What Kravia's answers look like against what the engine assumes: pure judgements.

`kravia-sync check --probe` and the first-contact canary make a few calls and hand the
answers here; each function turns answers into findings (assumption, what came back, and
whether it holds). Every check is made with the readers the engine itself uses
(`kravia_sync.kravia.answers`), so a finding that holds means the engine reads that answer. What
came back is shown as its shape only (key names and JSON types), never values: no personal
data reaches a report, a log line or the state store. The canary's own judgements and the
recorded contract are in `kravia_sync.kravia.contract`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from kravia_sync.kravia.answers import (
    RawAnswer,
    available_actions,
    details_summary,
    dotnet_time_zone,
    field_of,
    has_invoice_document,
    parse_dotnet_time,
    parse_http_date,
    parse_register_id,
    parse_search_items,
    parse_settlements,
    read_amount,
    recorded_payments,
)
from kravia_sync.kravia.assumptions import (
    DETAILS_ACTIONS_KEY,
    DETAILS_DOCUMENTS_KEY,
    DETAILS_PAYMENTS_KEY,
    DETAILS_REMAINING_CAPITAL_KEY,
    DETAILS_STATUS_KEY,
)
from kravia_sync.kravia.errors import KraviaError

__all__ = [
    "ZONE_TOLERANCE",
    "Finding",
    "Verdict",
    "details_findings",
    "differing",
    "field_shape",
    "register_finding",
    "register_findings",
    "sample_of",
    "search_findings",
    "settlements_findings",
    "shape_of",
    "shape_tree",
    "zone_finding",
]

# A `lastUpdatedTime` more than this far outside the Date headers around it is on another
# clock or zone (zones differ by 30 minutes at the least; clocks of one service by seconds).
ZONE_TOLERANCE = timedelta(minutes=10)
_KNOWN_STATUSES = frozenset({"registered", "collectionstarted", "paused", "closed"})


class Verdict(StrEnum):
    HOLDS = "holds"
    DIFFERS = "differs"  # the engine cannot read it, or reads it wrong
    NOT_SEEN = "not seen"  # the answer did not show it (the engine then treats it as unknown)


@dataclass(frozen=True, slots=True)
class Finding:
    """One assumption, what came back (shape only) and whether it holds."""

    assumption: str
    seen: str
    verdict: Verdict
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "assumption": self.assumption,
            "seen": self.seen,
            "verdict": self.verdict.value,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            str(data["assumption"]),
            str(data["seen"]),
            Verdict(data["verdict"]),
            str(data.get("note", "")),
        )


def differing(findings: Iterable[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.verdict is Verdict.DIFFERS]


# --- shapes -----------------------------------------------------------------------------------


def shape_of(value: object, *, depth: int = 3) -> str:
    """Key names and JSON types of `value`, never its values: `{id: int, items: [{…}]}`."""
    if isinstance(value, Mapping):
        if depth <= 0:
            return "{…}"
        inner = ", ".join(
            f"{key}: {shape_of(item, depth=depth - 1)}" for key, item in value.items()
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        if depth <= 0:
            return "[…]"
        kinds = list(dict.fromkeys(shape_of(item, depth=depth - 1) for item in value))
        return "[" + " | ".join(kinds[:3]) + (" | …" if len(kinds) > 3 else "") + "]"
    return _type_name(value)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, Decimal | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def shape_tree(value: object) -> object:
    """The shape as JSON (stored with a contract): types for scalars."""
    if isinstance(value, Mapping):
        return {str(key): shape_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape_tree(value[0])] if value else []
    return _type_name(value)


def sample_of(tree: object) -> object:
    """A value of the stored shape `tree` (for judging a stored answer again with the
    engine's current readers): 1 for an int, "x" for a string, …"""
    if isinstance(tree, Mapping):
        return {key: sample_of(item) for key, item in tree.items()}
    if isinstance(tree, list):
        return [sample_of(item) for item in tree]
    return {"int": 1, "number": Decimal(1), "string": "x", "bool": True}.get(str(tree))


def _keys(value: object) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(str(key) for key in value) + "}"
    return shape_of(value, depth=1)


def field_shape(item: Mapping[str, Any], name: str, *, depth: int = 2) -> str:
    value = field_of(item, name)
    present = any(str(key).lower() == name.lower() for key in item)
    return f"{name}: {shape_of(value, depth=depth)}" if present else f"no {name}"


# --- register ---------------------------------------------------------------------------------


def register_findings(answer: RawAnswer | None) -> list[Finding]:
    """The register answer carries the new case's integer id (a bare integer, `id` or
    `invoiceId`; two that disagree are refused)."""
    assumption = "register: the answer carries the new integer id (bare, id or invoiceId)"
    if answer is None or not 200 <= answer.status < 300:
        return [Finding(assumption, "no answer", Verdict.NOT_SEEN)]
    return [register_finding(assumption, answer.body, shape_of(answer.body, depth=1))]


def register_finding(assumption: str, body: object, seen: str) -> Finding:
    try:
        parse_register_id(body)
    except ValueError as exc:
        return Finding(assumption, seen, Verdict.DIFFERS, _no_values(str(exc)))
    return Finding(assumption, seen, Verdict.HOLDS)


def _no_values(message: str) -> str:
    """A reader's message without the answer it quotes (which may hold personal data)."""
    return message.split(":", 1)[0]


# --- search -----------------------------------------------------------------------------------


def search_findings(answer: RawAnswer) -> list[Finding]:
    """A search page: its envelope, every item identifiable, items carrying an
    accountingInvoiceId, `lastUpdatedTime` readable and on UTC, and the Date header."""
    findings = [_date_finding(answer)]
    envelope = "search: a list, or one under items, data or value"
    try:
        items = parse_search_items(answer.body)
    except (ValueError, KraviaError) as exc:
        seen = shape_of(answer.body, depth=2)
        reason = _no_values(str(exc))
        findings.append(Finding(envelope, seen, Verdict.DIFFERS, reason))
        return findings
    findings.append(Finding(envelope, _keys(answer.body), Verdict.HOLDS))
    raw_items = _raw_items(answer.body)
    identify = "search: each item has an integer id (id or invoiceId)"
    if not raw_items:
        findings.append(Finding(identify, "no items", Verdict.NOT_SEEN, "no case in Kravia yet"))
        return findings
    first = raw_items[0]
    findings.append(Finding(identify, _id_shape(first), Verdict.HOLDS))
    with_aid = all(any(key.lower() == "accountinginvoiceid" for key in raw) for raw in raw_items)
    findings.append(
        Finding(
            "search: items carry accountingInvoiceId",
            field_shape(first, "accountingInvoiceId"),
            Verdict.HOLDS if with_aid else Verdict.NOT_SEEN,
            "" if with_aid else "the engine reads such a case's details to identify it",
        )
    )
    served = parse_http_date(answer.date)
    findings.append(
        zone_finding(
            items[0].updated,
            not_before=None,
            not_after=served,
            assumption="search: lastUpdatedTime is readable and UTC",
        )
    )
    return findings


def _raw_items(body: object) -> list[Mapping[str, Any]]:
    if isinstance(body, list):
        return [item for item in body if isinstance(item, Mapping)]
    if isinstance(body, Mapping):
        for value in body.values():
            if isinstance(value, list):
                return [item for item in value if isinstance(item, Mapping)]
    return []


def _id_shape(item: Mapping[str, Any]) -> str:
    for name in ("id", "invoiceId"):
        if any(str(key).lower() == name.lower() for key in item):
            return field_shape(item, name)
    return "no id"


def _date_finding(answer: RawAnswer) -> Finding:
    assumption = "answers carry a Date header (Kravia's clock)"
    if parse_http_date(answer.date) is not None:
        return Finding(assumption, "Date: HTTP date", Verdict.HOLDS)
    return Finding(
        assumption,
        "no Date" if answer.date is None else "Date: unreadable",
        Verdict.NOT_SEEN,
        "the engine then measures search windows by the newest lastUpdatedTime",
    )


def zone_finding(
    updated: str | None,
    *,
    not_before: datetime | None,
    not_after: datetime | None,
    assumption: str = "lastUpdatedTime is UTC",
) -> Finding:
    """Whether a `lastUpdatedTime` is read right (in the zone it names, else as UTC): as read,
    it falls between the Date headers around it (`not_before`: before the update; `not_after`:
    after it), within ZONE_TOLERANCE."""
    if updated is None:
        return Finding(assumption, "no lastUpdatedTime", Verdict.NOT_SEEN)
    zone = dotnet_time_zone(updated)
    seen = "timestamp" + (f" with zone {zone}" if zone else ", no zone")
    moment = parse_dotnet_time(updated)
    if moment is None:
        return Finding(assumption, "unreadable timestamp", Verdict.DIFFERS, "not a .NET time")
    if not_after is not None and moment > not_after + ZONE_TOLERANCE:
        ahead = round((moment - not_after).total_seconds() / 60)
        return Finding(
            assumption,
            seen,
            Verdict.DIFFERS,
            f"{ahead} min ahead of Kravia's Date header: a local time, not UTC",
        )
    if not_before is not None and moment < not_before - ZONE_TOLERANCE:
        behind = round((not_before - moment).total_seconds() / 60)
        return Finding(
            assumption,
            seen,
            Verdict.DIFFERS,
            f"{behind} min behind Kravia's Date header: a local time, not UTC",
        )
    if not_after is None:
        return Finding(assumption, seen, Verdict.NOT_SEEN, "no Date header to compare with")
    return Finding(assumption, seen, Verdict.HOLDS)


# --- details ----------------------------------------------------------------------------------


def details_findings(answer: RawAnswer) -> list[Finding]:
    """A case's details: the case identifiable, its status, capital, documents, available
    actions and payments, each as the engine reads them."""
    body = answer.body
    if not isinstance(body, Mapping):
        return [
            Finding("details: an object", shape_of(body, depth=1), Verdict.DIFFERS, "not an object")
        ]
    findings: list[Finding] = []
    try:
        details_summary(body)
    except KraviaError:
        findings.append(
            Finding(
                "details: the case's id and accountingInvoiceId or invoiceNo",
                _keys(body),
                Verdict.DIFFERS,
            )
        )
    else:
        findings.append(
            Finding(
                "details: the case's id and accountingInvoiceId or invoiceNo",
                _id_shape(body),
                Verdict.HOLDS,
            )
        )
    status = field_of(body, DETAILS_STATUS_KEY)
    known = isinstance(status, str) and status.lower() in _KNOWN_STATUSES
    findings.append(
        Finding(
            "details: status is Registered, CollectionStarted, Paused or Closed",
            field_shape(body, DETAILS_STATUS_KEY),
            Verdict.HOLDS if known else Verdict.DIFFERS,
            "" if known else "another status leaves whether the case is closed unknown",
        )
    )
    capital = read_amount(field_of(body, DETAILS_REMAINING_CAPITAL_KEY))
    findings.append(
        Finding(
            "details: remainingAmount is an exact amount",
            field_shape(body, DETAILS_REMAINING_CAPITAL_KEY),
            Verdict.HOLDS if capital is not None else Verdict.DIFFERS,
            "" if capital is not None else "the capital left is then unknown",
        )
    )
    findings.append(_documents_finding(body))
    actions = available_actions(body)
    findings.append(
        Finding(
            "details: availableActions (names, objects naming them, or an object of booleans)",
            field_shape(body, DETAILS_ACTIONS_KEY),
            Verdict.HOLDS if actions is not None else Verdict.DIFFERS,
            "" if actions is not None else "whether Start is done is then unknown",
        )
    )
    payments = recorded_payments(body)
    findings.append(
        Finding(
            "details: payments, each with type, accountingPaymentId, date, amount",
            field_shape(body, DETAILS_PAYMENTS_KEY, depth=3),
            Verdict.HOLDS if payments is not None else Verdict.DIFFERS,
            "" if payments is not None else "whether a payment was recorded is then unknown",
        )
    )
    return findings


def _documents_finding(body: Mapping[str, Any]) -> Finding:
    assumption = "details: documents, each with type or documentType"
    seen = field_shape(body, DETAILS_DOCUMENTS_KEY, depth=3)
    if field_of(body, DETAILS_DOCUMENTS_KEY) is None:
        note = "a lost upload answer is then settled by sending the copy again"
        return Finding(assumption, seen, Verdict.NOT_SEEN, note)
    if has_invoice_document(body) is None:
        note = "a list we cannot read: whether the copy is there is unknown"
        return Finding(assumption, seen, Verdict.DIFFERS, note)
    return Finding(assumption, seen, Verdict.HOLDS)


# --- settlements ------------------------------------------------------------------------------


def settlements_findings(answer: RawAnswer) -> list[Finding]:
    """`GET settlements`: a list (or one under items), each settlement readable in full."""
    assumption = "settlements: id, settlementDate, amount, isBooked, invoices of each"
    seen = shape_of(answer.body, depth=3)
    try:
        settlements = parse_settlements(answer.body)
    except ValueError as exc:
        return [Finding(assumption, seen, Verdict.DIFFERS, _no_values(str(exc)))]
    if not settlements:
        return [Finding(assumption, seen, Verdict.NOT_SEEN, "no unbooked settlement to look at")]
    return [Finding(assumption, seen, Verdict.HOLDS)]
