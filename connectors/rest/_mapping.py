"""From a JSON object to the flat record: one `FieldMapping` per canonical field.

A mapping reads a value at a dotted path (or takes a constant) and transforms it:

* ``auto`` (the default): text, whole numbers, exact decimals and booleans as they are;
* ``text``: numbers as text (``10023`` → ``"10023"``);
* ``date``: ISO dates and date-times (a date-time with an offset counts on Oslo's calendar),
  or text in the ``format`` given (``strptime``, e.g. ``%d.%m.%Y``);
* ``minor_units``: a whole number of øre/cents → an exact amount (``123450`` → ``1234.50``),
  ``decimals`` places (2 unless given); anything not a whole number is refused;
* ``decimal``: a JSON number, or text with a decimal comma or point, as an exact amount;
* ``boolean``: ``true``/``false`` (also ``"yes"``, ``"1"``, …) → ``if_true``/``if_false``;
* ``country``: an ISO 3166 code (alpha-2 or alpha-3) or a country's English or Norwegian
  name → the alpha-2 code; anything else is passed on for the model to refuse.

Absent values, JSON nulls and blank text leave the field out (``default`` fills it). JSON
numbers are parsed as `Decimal`, never as binary floats.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

import pycountry
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.rest._paths import MISSING, JsonPath
from connectors.rest._template import TIMEZONE
from kravia_sync import parse_amount

__all__ = ["FieldMapping", "Transform", "compiled_path"]

Transform = Literal["auto", "text", "date", "minor_units", "decimal", "boolean", "country"]

_TRUE: Final = frozenset({"true", "yes", "y", "1", "ja", "j"})
_FALSE: Final = frozenset({"false", "no", "n", "0", "nei"})
_WHOLE: Final = re.compile(r"[+-]?\d+")
# Countries as Norwegian systems write them (pycountry knows the English names).
_NORWEGIAN_NAMES: Final = {
    "norge": "NO",
    "noreg": "NO",
    "sverige": "SE",
    "danmark": "DK",
    "finland": "FI",
    "island": "IS",
    "tyskland": "DE",
    "storbritannia": "GB",
    "nederland": "NL",
    "frankrike": "FR",
    "spania": "ES",
    "polen": "PL",
    "usa": "US",
}


class FieldMapping(BaseModel):
    """Where one canonical field comes from. In TOML a plain string is a `path`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    """A dotted path into the JSON object (`customer.address.city`, `lines.0.text`)."""
    value: str | None = None
    """A constant instead of a path (e.g. `currency = { value = "NOK" }`)."""
    transform: Transform = "auto"
    format: str | None = None
    """For `date`: a `strptime` format; ISO when not given."""
    decimals: int = Field(default=2, ge=0, le=6)
    """For `minor_units`: how many decimals the minor unit has."""
    if_true: str = "true"
    if_false: str = "false"
    default: str | None = None
    """The value when the path has none."""

    @model_validator(mode="before")
    @classmethod
    def _plain_string_is_a_path(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic's input
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> FieldMapping:
        if (self.path is None) == (self.value is None):
            raise ValueError("give either path or value")
        if self.path is not None:
            JsonPath(self.path)
        if self.format is not None and self.transform != "date":
            raise ValueError("format is for transform = 'date'")
        return self

    def describe(self) -> str:
        return f"value {self.value!r}" if self.path is None else f"path {self.path!r}"

    def apply(self, data: object, timezone: tzinfo = TIMEZONE) -> object:
        """The field's value from `data` (None: leave the field out); `ValueError` with a
        reason a person can act on when the value cannot be what the field needs. A
        timestamp with an offset becomes the date it falls on in `timezone` (the creditor's)."""
        raw: object = self.value
        if self.path is not None:
            raw = compiled_path(self.path).find(data)
        if raw is MISSING or raw is None or (isinstance(raw, str) and not raw.strip()):
            raw = self.default
            if raw is None:
                return None
        if isinstance(raw, dict | list):
            kind = "an object" if isinstance(raw, dict) else "a list"
            raise ValueError(f"is {kind}, not a single value")
        return _TRANSFORMS[self.transform](self, raw, timezone)


@functools.lru_cache(maxsize=1024)
def compiled_path(text: str) -> JsonPath:
    """The parsed `JsonPath` of `text` (parsed once, used for every record)."""
    return JsonPath(text)


def _auto(_mapping: FieldMapping, raw: object, _timezone: tzinfo) -> object:
    return raw.strip() if isinstance(raw, str) else raw


def _text(_mapping: FieldMapping, raw: object, _timezone: tzinfo) -> object:
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is a boolean, not text")
    return raw.strip() if isinstance(raw, str) else str(raw)


def _date(mapping: FieldMapping, raw: object, timezone: tzinfo) -> date:
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not a date")
    text = raw.strip()
    try:
        if mapping.format is not None:
            return datetime.strptime(text, mapping.format).date()  # noqa: DTZ007 - a calendar date
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        expected = mapping.format or "an ISO date (YYYY-MM-DD)"
        raise ValueError(f"{raw!r} is not a date in the format {expected}") from None
    if moment.tzinfo is not None:
        return moment.astimezone(timezone).date()
    return moment.date()


def _minor_units(mapping: FieldMapping, raw: object, _timezone: tzinfo) -> Decimal:
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not an amount")
    whole: int | None = None
    if isinstance(raw, int):
        whole = raw
    elif isinstance(raw, Decimal) and raw.is_finite() and raw == raw.to_integral_value():
        whole = int(raw)
    elif isinstance(raw, str) and _WHOLE.fullmatch(raw.strip()):
        whole = int(raw.strip())
    if whole is None:
        raise ValueError(
            f"{raw!r} is not a whole number of minor units (øre/cents); refusing to round money"
        )
    return Decimal(whole).scaleb(-mapping.decimals)


def _decimal(_mapping: FieldMapping, raw: object, _timezone: tzinfo) -> Decimal:
    try:
        return parse_amount(raw)
    except (ValueError, InvalidOperation) as exc:
        raise ValueError(str(exc)) from None


def _boolean(mapping: FieldMapping, raw: object, _timezone: tzinfo) -> str:
    if isinstance(raw, bool):
        truth = raw
    elif isinstance(raw, int | Decimal) and raw in {0, 1}:
        truth = bool(raw)
    elif isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        truth = raw.strip().lower() in _TRUE
    else:
        raise ValueError(f"{raw!r} is not a boolean (true/false)")
    return mapping.if_true if truth else mapping.if_false


def _country(_mapping: FieldMapping, raw: object, _timezone: tzinfo) -> object:
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    known = _NORWEGIAN_NAMES.get(text.casefold())
    if known is not None:
        return known
    try:
        country = pycountry.countries.lookup(text)
    except LookupError:
        return text  # the model says what is wrong with it
    return str(country.alpha_2)


_TRANSFORMS: Final = {
    "auto": _auto,
    "text": _text,
    "date": _date,
    "minor_units": _minor_units,
    "decimal": _decimal,
    "boolean": _boolean,
    "country": _country,
}
