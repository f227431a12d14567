"""The Kravia simulator's case operations as a mixin of `Simulator`: `invoice/register`, a
case's document, action and details, `invoice/search`, and the creditor's webhook setting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from starlette.requests import Request

from kravia_sync.testing._sim_constants import (
    _ABSENT,
    _ACTIONS,
    _CONVERT,
    ACTION_PAUSE,
    ACTION_RESUME,
    ACTION_START,
    DEFAULT_TOP,
    DOCUMENT_TYPES,
    MAX_TOP,
    ORDER_BY_LAST_UPDATED,
    STATUS_REGISTERED,
)
from kravia_sync.testing._sim_http import (
    _body_error,
    _json_body,
    _Outcome,
    _parse_bool,
    _parse_int,
    _problem,
    _query,
    _read_document,
)
from kravia_sync.testing._sim_json import _ci, _loads, _ticks, parse_dotnet_time
from kravia_sync.testing._sim_shapes import _register_answer, _shaped_details, _shaped_search
from kravia_sync.testing._sim_state import _Case, _Document
from kravia_sync.testing._sim_store import _SimulatorState
from kravia_sync.testing._sim_validation import _Errors, _optional_string, validate_register
from kravia_sync.testing._sim_webhooks import validate_setting


class _CaseOperations(_SimulatorState):
    """The API operations on cases (the money ones are in `_sim_money`)."""

    # --- internals: the operations ---

    async def _register(self, request: Request, body: bytes) -> _Outcome:
        parsed = _json_body(request, body)
        if isinstance(parsed, _Outcome):
            return parsed
        errors, registration = validate_register(parsed, self._creditor_id)
        if registration is None or not isinstance(parsed, dict):
            return _problem(400, errors)
        with self._lock:
            now = self._tick()
            case = _Case(
                id=self._next_id,
                invoice_no=registration.invoice_no,
                accounting_invoice_id=registration.accounting_invoice_id,
                status=STATUS_REGISTERED,
                currency_code=registration.currency_code,
                original_amount=registration.original_amount,
                remaining_amount=registration.original_amount,
                debtor_name=registration.debtor_name,
                body=parsed,
                created=now,
                updated=now,
                timeline=[(now, "Registered")],
            )
            self._next_id += 1
            self._cases[case.id] = case
            self._changed(case.id)
            self._save()
        payload = {
            "id": case.id,
            "invoiceNo": case.invoice_no,
            "accountingInvoiceId": case.accounting_invoice_id,
            "status": case.status,
        }
        return _Outcome(200, _register_answer(payload, self._shape.register_shape), processed=True)

    async def _document(self, request: Request, body: bytes) -> _Outcome:
        case_id: int = request.path_params["id"]
        errors = _Errors()
        doc_type = _query(request, "type")
        if doc_type is None:
            errors.add("Type", "The Type field is required.")
        elif doc_type not in DOCUMENT_TYPES:
            errors.add("Type", f"The value '{doc_type}' is not valid for Type.")
        content, file_name, problem = await _read_document(request, body)
        if problem is not None:
            errors.add("File", problem)
        elif not content.startswith(b"%PDF-"):
            errors.add("File", "The file is not a PDF document.")
        if errors.items or doc_type is None:
            return _problem(400, errors.items)
        with self._lock:
            case = self._cases.get(case_id)
            if case is None:
                return _problem(404)
            now = self._tick()
            document = _Document(
                id=self._next_document_id,
                type=doc_type,
                file_name=file_name or f"{doc_type.lower()}-{case_id}.pdf",
                content=content,
                created=now,
            )
            self._next_document_id += 1
            case.documents.append(document)
            case.updated = now
            case.timeline.append((now, f"Document added ({doc_type})"))
            self._changed(case_id)
            self._save()
        return _Outcome(200, {"id": document.id}, processed=True)

    async def _action(self, request: Request, body: bytes) -> _Outcome:
        case_id: int = request.path_params["id"]
        errors = _Errors()
        action = _query(request, "action")
        if action is None:
            errors.add("Action", "The Action field is required.")
        elif action not in _ACTIONS:
            errors.add("Action", f"The value '{action}' is not valid for Action.")
        message: str | None = None
        if body.strip():
            try:
                parsed = _loads(body)
            except ValueError:
                return _problem(400, _body_error(body))
            if not isinstance(parsed, dict):
                errors.add("$", _CONVERT.format("the action request (a JSON object)"))
            else:
                message = _optional_string(errors, "Message", _ci(parsed).get("message", _ABSENT))
        if errors.items or action is None:
            return _problem(400, errors.items)
        with self._lock:
            case = self._cases.get(case_id)
            if case is None:
                return _problem(404)
            if action not in case.available_actions:
                # Kravia does not publish what Start on an already started case answers; this
                # 400 is the simulator's stand-in for that answer (and for any action the
                # case's status does not allow).
                return _problem(
                    400, {"Action": [f"Action {action} is not available for this invoice."]}
                )
            now = self._tick()
            _, case.status = _ACTIONS[action]
            if action == ACTION_START:
                case.started = now
            event = _ACTION_EVENTS[action] + (f": {message}" if message else "")
            case.touch(now, event)
            self._changed(case_id)
            self._save()
        return _Outcome(200, {"success": True}, processed=True)

    async def _search(self, request: Request, _body: bytes) -> _Outcome:
        errors = _Errors()
        ascending = True
        text = _query(request, "byAscending")
        if text is not None:
            parsed_bool = _parse_bool(text)
            if parsed_bool is None:
                errors.add("ByAscending", f"The value '{text}' is not valid for ByAscending.")
            else:
                ascending = parsed_bool
        since: int | None = None
        text = _query(request, "lastUpdatedTime")
        if text is not None and text.strip():
            since = parse_dotnet_time(text)
            if since is None:
                errors.add(
                    "LastUpdatedTime", f"The value '{text}' is not valid for LastUpdatedTime."
                )
        text = _query(request, "orderBy")
        if text is not None:
            order_by = _parse_int(text)
            if order_by is None:
                errors.add("OrderBy", f"The value '{text}' is not valid for OrderBy.")
            elif order_by != ORDER_BY_LAST_UPDATED:
                errors.add(
                    "OrderBy",
                    f"The simulator only implements orderBy={ORDER_BY_LAST_UPDATED} "
                    "(last-updated time).",
                )
        skip = self._paging(errors, request, "skip", 0, minimum=0)
        top = min(self._paging(errors, request, "top", DEFAULT_TOP, minimum=1), MAX_TOP)
        if errors.items:
            return _problem(400, errors.items)
        with self._lock:
            matching = [
                case
                for case in self._cases.values()
                if since is None or _ticks(case.updated) >= since
            ]
            matching.sort(key=lambda case: (case.updated, case.id), reverse=not ascending)
            items = [case.summary() for case in matching[skip : skip + top]]
            payload = _shaped_search(items, len(matching), self._shape)
        return _Outcome(200, payload, processed=True)

    @staticmethod
    def _paging(errors: _Errors, request: Request, name: str, default: int, *, minimum: int) -> int:
        text = _query(request, name)
        if text is None:
            return default
        value = _parse_int(text)
        key = name[0].upper() + name[1:]
        if value is None:
            errors.add(key, f"The value '{text}' is not valid for {key}.")
            return default
        if value < minimum:
            errors.add(key, f"The field {key} must be at least {minimum}.")
            return default
        return value

    async def _details(self, request: Request, _body: bytes) -> _Outcome:
        case_id: int = request.path_params["id"]
        with self._lock:
            case = self._cases.get(case_id)
            if case is None:
                return _problem(404)
            view = _shaped_details(case.details(), self._shape)
            return _Outcome(200, view, processed=True)

    async def _configure_webhook(self, request: Request, body: bytes) -> _Outcome:
        """`PUT creditor/{id}/webhook` {"secret", "enabled", "url"}: one per creditor."""
        parsed = _json_body(request, body)
        if isinstance(parsed, _Outcome):
            return parsed
        creditor_id: int = request.path_params["id"]
        if self._creditor_id is not None and creditor_id != self._creditor_id:
            return _problem(404)
        errors, setting = validate_setting(parsed)
        if setting is None:
            return _problem(400, errors)
        with self._lock:
            self._webhook = setting
        return _Outcome(200, {"success": True}, processed=True)


_ACTION_EVENTS: Final[Mapping[str, str]] = {
    ACTION_START: "Collection started",
    ACTION_PAUSE: "Collection paused",
    ACTION_RESUME: "Collection resumed",
}
