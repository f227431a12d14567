"""Tripletex's `fields` expression, as its OpenAPI description's "Fields" section states it.

`*` means every field of that object; `name` names one; `name(...)` names one and selects the
fields of the object it refers to. A referenced object that is not expanded that way comes as
`{"id": …, "url": …}` — "just `project` returns `"project": {"id": 12345, "url": …}`" — even
when `*` brings it. Lists of referenced objects follow the same rule, element by element.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["FieldsError", "Selection", "parse_fields", "shape"]

_NAME: Final = re.compile(r"\*|[A-Za-z_][A-Za-z0-9_]*")

# name → its sub-selection (None: the name alone; a reference then stays {id, url})
Selection = dict[str, "Selection | None"]


class FieldsError(ValueError):
    """The expression is malformed or names a field the object does not have."""


def parse_fields(text: str) -> Selection:
    """The selection `text` describes; `FieldsError` when it is not an expression."""
    selection, position = _list(text, 0)
    if position != len(text):
        raise FieldsError(f"unexpected {text[position]!r} at position {position} of {text!r}")
    return selection


def _list(text: str, position: int) -> tuple[Selection, int]:
    selection: Selection = {}
    while True:
        while position < len(text) and text[position] == " ":
            position += 1
        match = _NAME.match(text, position)
        if match is None:
            raise FieldsError(f"expected a field name at position {position} of {text!r}")
        name = match.group()
        position = match.end()
        sub: Selection | None = None
        if position < len(text) and text[position] == "(":
            if name == "*":
                raise FieldsError(f"'*' takes no sub-fields in {text!r}")
            sub, position = _list(text, position + 1)
            if position >= len(text) or text[position] != ")":
                raise FieldsError(f"a '(' without its ')' in {text!r}")
            position += 1
        selection[name] = sub
        while position < len(text) and text[position] == " ":
            position += 1
        if position < len(text) and text[position] == ",":
            position += 1
            continue
        return selection, position


def is_reference(value: object) -> bool:
    """A Tripletex resource (it has a `url`): shown as `{id, url}` unless expanded."""
    return isinstance(value, dict) and "url" in value and "id" in value


def shape(resource: dict[str, Any], selection: Selection) -> dict[str, Any]:
    """`resource` as an answer shows it under `selection` (fields in the resource's order)."""
    for name in selection:
        if name != "*" and name not in resource:
            raise FieldsError(f"{name!r} is not a field of this object")
    everything = "*" in selection
    shown: dict[str, Any] = {}
    for name, value in resource.items():
        if not everything and name not in selection:
            continue
        shown[name] = _value(value, selection.get(name))
    return shown


def _value(value: object, sub: Selection | None) -> object:
    if isinstance(value, list):
        return [_value(item, sub) for item in value]
    if is_reference(value):
        assert isinstance(value, dict)  # noqa: S101 - is_reference says so
        if sub is None:
            return {"id": value["id"], "url": value["url"]}
        return shape(value, sub)
    if isinstance(value, dict):  # a plain value object: shown as it is
        return dict(value)
    return value
