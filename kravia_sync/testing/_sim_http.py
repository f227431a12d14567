"""The Kravia simulator's requests and answers: an API call's outcome, ASP.NET-style problem
answers and 5xx bodies, query and body parsing, the `/_sim/payout` and `/_sim/webhook` bodies,
and reading an uploaded document (multipart or base64 in JSON)."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from kravia_sync.testing._sim_constants import (
    _INT_RE,
    _JSON_TYPE,
    _PROBLEM_TYPE,
    _PROBLEM_TYPES,
    _VALIDATION_TITLE,
    MAX_BODY_BYTES,
)
from kravia_sync.testing._sim_json import _ci, _loads


@dataclass
class _Outcome:
    status: int
    payload: object
    processed: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = _JSON_TYPE


def _trace_id() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def _problem(status: int, errors: Mapping[str, list[str]] | None = None) -> _Outcome:
    problem_type, title = _PROBLEM_TYPES.get(status, _PROBLEM_TYPES[400])
    body: dict[str, Any] = {"type": problem_type, "title": title, "status": status}
    if errors:
        body["title"] = _VALIDATION_TITLE
        body["errors"] = {key: list(messages) for key, messages in errors.items()}
    body["traceId"] = _trace_id()
    return _Outcome(status, body, media_type=_PROBLEM_TYPE)


def _query(request: Request, name: str) -> str | None:
    """A query parameter by name, case-insensitively (ASP.NET binding); the first one wins."""
    wanted = name.lower()
    return next(
        (value for key, value in request.query_params.multi_items() if key.lower() == wanted),
        None,
    )


def _parse_bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    return {"true": True, "false": False}.get(lowered)


def _parse_int(text: str) -> int | None:
    stripped = text.strip()
    return int(stripped) if _INT_RE.fullmatch(stripped) else None


def _body_error(body: bytes) -> dict[str, list[str]]:
    if not body.strip():
        return {"$": ["A non-empty request body is required."]}
    return {"$": ["The request body is not valid JSON."]}


def _claim_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("claimId: an integer is required")
    return value


def _json_body(request: Request, body: bytes) -> object:
    """The parsed JSON body, or the problem to answer (415 for another media type, 400)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return _problem(415)
    try:
        return _loads(body)
    except ValueError:
        return _problem(400, _body_error(body))


def _payout_request(data: Mapping[str, object]) -> tuple[list[tuple[int, Decimal]], date | None]:
    """The lines and date of a `/_sim/payout` body (keys case-insensitive)."""
    folded = _ci(data)
    items = folded.get("invoices")
    if items is None:
        items = [{"invoiceId": folded.get("invoiceid"), "amount": folded.get("amount")}]
    if not isinstance(items, list):
        raise TypeError("invoices must be a list of {invoiceId, amount}")
    lines: list[tuple[int, Decimal]] = []
    for item in items:
        line = _ci(_require_object(item, "each payout line"))
        case_id, amount = line.get("invoiceid"), line.get("amount")
        if isinstance(case_id, bool) or not isinstance(case_id, int):
            raise TypeError(f"invoiceId must be an integer, not {case_id!r}")
        if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
            raise TypeError(f"amount must be a number, not {amount!r}")
        lines.append((case_id, Decimal(amount)))
    raw_date = folded.get("date")
    if raw_date is None:
        return lines, None
    if not isinstance(raw_date, str):
        raise TypeError("date must be a YYYY-MM-DD string")
    return lines, date.fromisoformat(raw_date)


def _server_error(status: int) -> _Outcome:
    """A 5xx the way different layers answer it: ASP.NET JSON, a proxy's HTML, plain text."""
    if status == 502:
        html = b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
        return _Outcome(502, html, media_type="text/html; charset=utf-8")
    if status == 503:
        return _Outcome(503, b"Service Unavailable", media_type="text/plain; charset=utf-8")
    return _problem(500)


def _require_object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a JSON object")
    return value


_Read = tuple[bytes, str | None, str | None]  # content, file name, problem


async def _read_document(request: Request, body: bytes) -> _Read:
    """The `file` part of a multipart body or, leniently, base64 in a JSON body (the guide)."""
    lowered = request.headers.get("content-type", "").lower()
    if lowered.startswith("multipart/form-data") and "boundary=" in lowered:
        return await _read_multipart(request)
    return _read_json_document(body)


async def _read_multipart(request: Request) -> _Read:
    try:
        async with request.form(max_part_size=MAX_BODY_BYTES) as form:
            for key, value in form.multi_items():
                if key.lower() != "file":
                    continue
                if isinstance(value, UploadFile):
                    return await value.read(), value.filename, None
                return _decode_base64(str(value), None)
    except (HTTPException, ValueError):
        return b"", None, "The multipart body could not be read."
    return b"", None, "The File field is required."


def _read_json_document(body: bytes) -> _Read:
    try:
        parsed = _loads(body)
    except ValueError:
        parsed = None
    data = _ci(parsed) if isinstance(parsed, dict) else {}
    value = data.get("file")
    name = data.get("filename")
    if not isinstance(value, str) or not value:
        return b"", None, "The File field is required (a multipart part named 'file')."
    return _decode_base64(value, name if isinstance(name, str) and name else None)


def _decode_base64(value: str, name: str | None) -> tuple[bytes, str | None, str | None]:
    try:
        return base64.b64decode(value.strip(), validate=True), name, None
    except (binascii.Error, ValueError):
        return b"", None, "The File field is not valid base64."
