"""Dotted paths into parsed JSON: `customer.address.city`, `lines.0.amount`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Final

__all__ = ["MISSING", "JsonPath"]


class _Missing(Enum):
    """The value at a path that leads nowhere (distinct from a JSON null)."""

    MISSING = "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing.MISSING


class JsonPath:
    """A dotted path: names of object members, or list positions written as numbers.

    The empty path is the value itself. A member whose name contains a dot cannot be reached
    (no JSON API we know uses such names); a segment made of digits is a list position when
    the value there is a list, else a member name.
    """

    __slots__ = ("segments", "text")

    def __init__(self, text: str) -> None:
        stripped = text.strip()
        segments = tuple(stripped.split(".")) if stripped else ()
        if any(not segment.strip() or segment != segment.strip() for segment in segments):
            raise ValueError(f"{text!r} is not a dotted path such as customer.address.city")
        self.text = stripped
        self.segments = segments

    def find(self, data: object) -> object:
        """The value at this path in `data`, or `MISSING`."""
        value = data
        for segment in self.segments:
            if isinstance(value, Mapping):
                if segment not in value:
                    return MISSING
                value = value[segment]
            elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
                if not segment.isdigit() or int(segment) >= len(value):
                    return MISSING
                value = value[int(segment)]
            else:
                return MISSING
        return value

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"

    def __str__(self) -> str:
        return self.text or "(the whole value)"
