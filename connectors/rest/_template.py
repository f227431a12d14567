"""Templates: the small expression language of query parameters and per-invoice paths.

A template is text with placeholders in braces; `{{` and `}}` are literal braces.

=========================  ===============================================================
``{today}``                today's date in ``policy.timezone``, ISO (``2025-03-01``)
``{today - 14d}``          14 days before today; units ``d`` (days) and ``w`` (weeks)
``{today + 1w}``           a week after today
``{now}``                  the time the read started, ISO 8601 in UTC with its offset
``{now - 2h}``             units ``s``, ``m``, ``h``, ``d``, ``w``
``{today - 14d:%d.%m.%Y}`` any of the above in a ``strftime`` format (after the colon)
``{invoice.customer.id}``  a value of the invoice being read (per-invoice paths only);
                           inserted into a path, it is escaped, so it can never add a path
                           segment or a query string
=========================  ===============================================================

`today` and `now` are taken once per read, so every page of one read asks the same question.
Anything else in braces is a settings error, reported when the configuration is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo

from connectors.rest._paths import MISSING, JsonPath

__all__ = ["TIMEZONE", "Clock", "MissingValueError", "Template"]

TIMEZONE: Final = ZoneInfo("Europe/Oslo")

_CLOCK_EXPRESSION: Final = re.compile(
    r"(?P<name>today|now)(?:\s*(?P<sign>[+-])\s*(?P<amount>\d{1,6})\s*(?P<unit>[smhdw]))?"
)
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE_UNITS: Final = frozenset({"d", "w"})
_INVOICE_PREFIX: Final = "invoice."


@dataclass(frozen=True, slots=True)
class Clock:
    """The moment a read started: `today` on the creditor's calendar (`timezone`, Oslo's
    unless the connector was given `policy.timezone`) and `now` in UTC."""

    now: datetime
    timezone: tzinfo = TIMEZONE

    @classmethod
    def current(cls, timezone: tzinfo = TIMEZONE) -> Clock:
        return cls(datetime.now(UTC), timezone)

    @property
    def today(self) -> date:
        return self.now.astimezone(self.timezone).date()


class MissingValueError(ValueError):
    """A per-invoice template refers to a value the invoice does not have."""

    def __init__(self, path: JsonPath, found: object) -> None:
        what = "no value" if found is MISSING or found is None else f"{type(found).__name__}"
        super().__init__(f"the invoice has {what} at {path.text!r}")
        self.path = path


@dataclass(frozen=True, slots=True)
class _ClockPart:
    name: str
    offset: timedelta
    format: str | None

    def render(self, clock: Clock) -> str:
        if self.name == "today":
            day = clock.today + self.offset
            return day.strftime(self.format) if self.format else day.isoformat()
        moment = clock.now + self.offset
        return moment.strftime(self.format) if self.format else moment.isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class _InvoicePart:
    path: JsonPath

    def render(self, invoice: object) -> str:
        value = self.path.find(invoice)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int | Decimal):
            return str(value)
        raise MissingValueError(self.path, value)


_Part = str | _ClockPart | _InvoicePart


class Template:
    """A parsed template; `ValueError` on construction names what is wrong with it."""

    __slots__ = ("_parts", "text")

    def __init__(self, text: str, *, invoice_values: bool = False) -> None:
        self.text = text
        self._parts = _parse(text, invoice_values=invoice_values)

    @property
    def uses_invoice(self) -> bool:
        return any(isinstance(part, _InvoicePart) for part in self._parts)

    @property
    def is_constant(self) -> bool:
        return all(isinstance(part, str) for part in self._parts)

    def render(
        self,
        clock: Clock,
        invoice: object = None,
        *,
        escape: Callable[[str], str] | None = None,
    ) -> str:
        """The text for one read (and one invoice); `MissingValueError` when an invoice value
        it needs is absent. `escape` is applied to invoice values only."""
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, _ClockPart):
                out.append(part.render(clock))
            else:
                value = part.render(invoice)
                out.append(escape(value) if escape is not None else value)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def _parse(text: str, *, invoice_values: bool) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    literal: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char in "{}" and text[position : position + 2] == char * 2:
            literal.append(char)
            position += 2
            continue
        if char == "}":
            raise ValueError(f"{text!r}: a lone '}}' (write '}}}}' for a literal brace)")
        if char != "{":
            literal.append(char)
            position += 1
            continue
        end = text.find("}", position)
        if end < 0:
            raise ValueError(f"{text!r}: '{{' without its '}}' (write '{{{{' for a literal brace)")
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_placeholder(text[position + 1 : end], text, invoice_values=invoice_values))
        position = end + 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def _placeholder(inner: str, text: str, *, invoice_values: bool) -> _Part:
    expression, colon, fmt = inner.partition(":")
    expression = expression.strip()
    if expression.startswith(_INVOICE_PREFIX):
        if not invoice_values:
            raise ValueError(
                f"{text!r}: {{{expression}}} refers to an invoice, but this template is "
                "rendered once per read (use it in a per-invoice path)"
            )
        if colon:
            raise ValueError(f"{text!r}: an invoice value takes no format")
        return _InvoicePart(JsonPath(expression.removeprefix(_INVOICE_PREFIX)))
    match = _CLOCK_EXPRESSION.fullmatch(expression)
    if match is None:
        known = "today, today - 14d, now, now - 2h" + (", invoice.<path>" if invoice_values else "")
        raise ValueError(f"{text!r}: {{{inner}}} is not an expression ({known})")
    if colon and not fmt.strip():
        raise ValueError(f"{text!r}: the format after ':' is empty")
    if colon:
        try:
            datetime(2000, 1, 2, 3, 4, 5, tzinfo=UTC).strftime(fmt)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {fmt!r} is not a strftime format ({exc})") from None
    return _ClockPart(match["name"], _offset(match, text), fmt if colon else None)


def _offset(match: re.Match[str], text: str) -> timedelta:
    name, unit = match["name"], match["unit"]
    if unit is None:
        return timedelta()
    if name == "today" and unit not in _DATE_UNITS:
        raise ValueError(f"{text!r}: today moves in days (d) or weeks (w), not {unit!r}")
    offset = timedelta(**{_UNITS[unit]: int(match["amount"])})
    return -offset if match["sign"] == "-" else offset
