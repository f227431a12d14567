"""The Kravia simulator's money operations as a mixin of `Simulator`: `invoice/payment`,
`invoice/creditnote`, `GET settlements` and `PATCH settlements/{id}/bookkeep`."""

from __future__ import annotations

from decimal import Decimal

from starlette.requests import Request

from kravia_sync.testing._sim_constants import CREDIT_NOTE_TYPE
from kravia_sync.testing._sim_http import _json_body, _Outcome, _parse_bool, _problem, _query
from kravia_sync.testing._sim_store import _SimulatorState
from kravia_sync.testing._sim_validation import _MoneyRequest, validate_money


class _MoneyOperations(_SimulatorState):
    """The API operations on money: payments, credit notes and settlements."""

    async def _payment(self, request: Request, body: bytes) -> _Outcome:
        return await self._money(request, body, credit_note=False)

    async def _credit_note(self, request: Request, body: bytes) -> _Outcome:
        return await self._money(request, body, credit_note=True)

    async def _money(self, request: Request, body: bytes, *, credit_note: bool) -> _Outcome:
        """`invoice/payment` and `invoice/creditnote`: validate, then take each line off its
        case's capital (at most what remains). NOT de-duplicated by AccountingPaymentId."""
        parsed = _json_body(request, body)
        if isinstance(parsed, _Outcome):
            return parsed
        errors, money = validate_money(parsed, credit_note=credit_note)
        if money is None:
            return _problem(400, errors)
        with self._lock:
            unknown = {
                f"Invoices[{index}].InvoiceId": [f"Invoice {line.invoice_id} was not found."]
                for index, line in enumerate(money.lines)
                if line.invoice_id not in self._cases
            }
            if unknown:
                return _problem(400, unknown)
            self._apply_money(money)
            self._save()
        return _Outcome(200, {"success": True}, processed=True)

    def _apply_money(self, money: _MoneyRequest) -> None:
        now = self._tick()
        sign = Decimal(-1) if money.type == CREDIT_NOTE_TYPE else Decimal(1)
        label = "Credit note" if money.type == CREDIT_NOTE_TYPE else "Direct payment"
        applied_lines: list[tuple[int, Decimal, Decimal]] = []
        for line in money.lines:
            case = self._cases[line.invoice_id]
            applied = sign * min(abs(line.amount), case.remaining_amount)
            payment = self._new_payment(
                money.type,
                money.accounting_payment_id,
                on=money.on,
                amount=line.amount,
                applied=applied,
                now=now,
            )
            case.record(
                payment,
                f"{label} {money.accounting_payment_id}: {line.amount} (applied {applied})",
            )
            applied_lines.append((line.invoice_id, line.amount, applied))
            self._changed(line.invoice_id)
        self._log_money(
            money.type,
            money.accounting_payment_id,
            on=money.on,
            description=money.description,
            lines=applied_lines,
            now=now,
        )

    async def _list_settlements(self, request: Request, _body: bytes) -> _Outcome:
        """`GET settlements?ExcludeClosed=true`: payouts, without the booked ones if asked."""
        exclude_closed = False
        text = _query(request, "ExcludeClosed")
        if text is not None:
            parsed = _parse_bool(text)
            if parsed is None:
                return _problem(
                    400, {"ExcludeClosed": [f"The value '{text}' is not valid for ExcludeClosed."]}
                )
            exclude_closed = parsed
        with self._lock:
            items = [
                self._settlements[key].view(self._cases)
                for key in sorted(self._settlements)
                if not (exclude_closed and self._settlements[key].booked)
            ]
        return _Outcome(200, {"totalCount": len(items), "items": items}, processed=True)

    async def _bookkeep(self, request: Request, _body: bytes) -> _Outcome:
        """`PATCH settlements/{id}/bookkeep?internalAccountingId=`: mark a settlement booked.
        Booking it again under the same id is a no-op; under another id it is refused."""
        settlement_id: int = request.path_params["id"]
        accounting_id = _query(request, "internalAccountingId")
        if accounting_id is None or not accounting_id.strip():
            return _problem(
                400, {"InternalAccountingId": ["The InternalAccountingId field is required."]}
            )
        with self._lock:
            settlement = self._settlements.get(settlement_id)
            if settlement is None:
                return _problem(404)
            if settlement.booked and settlement.internal_accounting_id != accounting_id:
                booked_as = settlement.internal_accounting_id
                message = f"Settlement {settlement_id} is already booked as {booked_as}."
                return _problem(400, {"InternalAccountingId": [message]})
            settlement.internal_accounting_id = accounting_id
            self._save()
        return _Outcome(200, {"success": True}, processed=True)
