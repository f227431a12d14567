"""The Kravia simulator's state: the cases it holds with their documents and payments, and the
settlements paying money out, each with its wire views and its record in the data file."""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from kravia_sync.testing._sim_constants import _ACTIONS, STATUS_CLOSED, STATUS_STARTED
from kravia_sync.testing._sim_json import _iso, format_dotnet_time

# --- state ------------------------------------------------------------------------------------


@dataclass
class _Document:
    id: int
    type: str
    file_name: str
    content: bytes
    created: datetime

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class _Payment:
    """Money recorded against one case: a payment, a credit note or a Kravia payout."""

    id: int
    type: str
    accounting_payment_id: str | None
    on: date
    amount: Decimal  # as received: negative for a credit note
    applied: Decimal  # what reduced the capital, with the same sign
    registered: datetime
    settlement_id: int | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "accountingPaymentId": self.accounting_payment_id,
            "date": self.on.isoformat(),
            "amount": self.amount,
            "appliedAmount": self.applied,
            "settlementId": self.settlement_id,
            "registeredTime": format_dotnet_time(self.registered),
        }

    def to_record(self) -> dict[str, Any]:
        return self.view() | {"registeredTime": _iso(self.registered)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> _Payment:
        settlement = record.get("settlementId")
        return cls(
            id=int(record["id"]),
            type=str(record["type"]),
            accounting_payment_id=record["accountingPaymentId"],
            on=date.fromisoformat(record["date"]),
            amount=Decimal(record["amount"]),
            applied=Decimal(record["appliedAmount"]),
            registered=datetime.fromisoformat(record["registeredTime"]),
            settlement_id=None if settlement is None else int(settlement),
        )


@dataclass
class _Settlement:
    """A payout from Kravia to the creditor, covering money collected on one or more cases."""

    id: int
    on: date
    lines: list[tuple[int, Decimal]]  # (case id, amount)
    created: datetime
    internal_accounting_id: str | None = None

    @property
    def amount(self) -> Decimal:
        return sum((amount for _, amount in self.lines), Decimal(0))

    @property
    def booked(self) -> bool:
        return self.internal_accounting_id is not None

    def view(self, cases: Mapping[int, _Case]) -> dict[str, Any]:
        """The ASSUMED wire shape of one item of `GET settlements`."""
        return {
            "id": self.id,
            "settlementDate": self.on.isoformat(),
            "amount": self.amount,
            "currencyCode": next(
                (cases[case_id].currency_code for case_id, _ in self.lines if case_id in cases),
                "NOK",
            ),
            "isBooked": self.booked,
            "internalAccountingId": self.internal_accounting_id,
            "invoices": [
                {
                    "invoiceId": case_id,
                    "invoiceNo": cases[case_id].invoice_no if case_id in cases else None,
                    "accountingInvoiceId": (
                        cases[case_id].accounting_invoice_id if case_id in cases else None
                    ),
                    "amount": amount,
                }
                for case_id, amount in self.lines
            ],
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "date": self.on.isoformat(),
            "lines": [{"invoiceId": case_id, "amount": amount} for case_id, amount in self.lines],
            "created": _iso(self.created),
            "internalAccountingId": self.internal_accounting_id,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> _Settlement:
        return cls(
            id=int(record["id"]),
            on=date.fromisoformat(record["date"]),
            lines=[(int(line["invoiceId"]), Decimal(line["amount"])) for line in record["lines"]],
            created=datetime.fromisoformat(record["created"]),
            internal_accounting_id=record["internalAccountingId"],
        )


@dataclass
class _Case:
    id: int
    invoice_no: str
    accounting_invoice_id: str | None
    status: str
    currency_code: str
    original_amount: Decimal
    remaining_amount: Decimal
    debtor_name: str
    body: dict[str, Any]
    created: datetime
    updated: datetime
    documents: list[_Document] = field(default_factory=list)
    timeline: list[tuple[datetime, str]] = field(default_factory=list)
    payments: list[_Payment] = field(default_factory=list)
    started: datetime | None = None  # when collection was started, whatever came after

    @property
    def available_actions(self) -> list[str]:
        return [name for name, (needs, _) in _ACTIONS.items() if self.status == needs]

    @property
    def outstanding_amount(self) -> Decimal:
        """What the debtor still owes. The simulator charges no fees or interest, so this is
        the remaining capital; in Kravia it also holds fees and interest."""
        return self.remaining_amount

    def touch(self, now: datetime, event: str) -> None:
        self.updated = now
        self.timeline.append((now, event))

    def record(self, payment: _Payment, event: str) -> None:
        """Book money against the capital: `payment.applied` is already clamped (see
        `Simulator._apply_money`). A case whose capital reaches 0 is closed."""
        self.remaining_amount -= abs(payment.applied)
        self.payments.append(payment)
        self.touch(payment.registered, event)
        if self.remaining_amount == 0 and self.status != STATUS_CLOSED:
            self.status = STATUS_CLOSED
            self.touch(payment.registered, "Closed: nothing remains of the capital")

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "invoiceNo": self.invoice_no,
            "accountingInvoiceId": self.accounting_invoice_id,
            "status": self.status,
            "currencyCode": self.currency_code,
            "originalAmount": self.original_amount,
            "remainingAmount": self.remaining_amount,
            "outstandingAmount": self.outstanding_amount,
            "lastUpdatedTime": format_dotnet_time(self.updated),
        }

    def details(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "invoiceNo": self.invoice_no,
            "accountingInvoiceId": self.accounting_invoice_id,
            "status": self.status,
            "originalAmount": self.original_amount,
            "remainingAmount": self.remaining_amount,
            "outstandingAmount": self.outstanding_amount,
            "currencyCode": self.currency_code,
            "debtorName": self.debtor_name,
            "documents": [
                {"id": d.id, "type": d.type, "fileName": d.file_name, "size": len(d.content)}
                for d in self.documents
            ],
            "payments": [payment.view() for payment in self.payments],
            "availableActions": self.available_actions,
            "lastUpdatedTime": format_dotnet_time(self.updated),
            "timeline": [
                {"time": format_dotnet_time(moment), "event": event}
                for moment, event in self.timeline
            ],
        }

    def control_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "invoiceNo": self.invoice_no,
            "accountingInvoiceId": self.accounting_invoice_id,
            "status": self.status,
            "started": self.started is not None,
            "currencyCode": self.currency_code,
            "originalAmount": self.original_amount,
            "remainingAmount": self.remaining_amount,
            "outstandingAmount": self.outstanding_amount,
            "debtorName": self.debtor_name,
            "body": copy.deepcopy(self.body),
            "payments": [payment.view() for payment in self.payments],
            "documents": [
                {
                    "id": d.id,
                    "type": d.type,
                    "fileName": d.file_name,
                    "size": len(d.content),
                    "sha256": d.sha256,
                    "created": _iso(d.created),
                }
                for d in self.documents
            ],
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "lastUpdatedTime": format_dotnet_time(self.updated),
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "invoiceNo": self.invoice_no,
            "accountingInvoiceId": self.accounting_invoice_id,
            "status": self.status,
            "currencyCode": self.currency_code,
            "originalAmount": self.original_amount,
            "remainingAmount": self.remaining_amount,
            "debtorName": self.debtor_name,
            "body": self.body,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "documents": [
                {
                    "id": d.id,
                    "type": d.type,
                    "fileName": d.file_name,
                    "created": _iso(d.created),
                    "content": base64.b64encode(d.content).decode("ascii"),
                }
                for d in self.documents
            ],
            "timeline": [{"time": _iso(moment), "event": event} for moment, event in self.timeline],
            "payments": [payment.to_record() for payment in self.payments],
            "started": None if self.started is None else _iso(self.started),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> _Case:
        return cls(
            id=int(record["id"]),
            invoice_no=str(record["invoiceNo"]),
            accounting_invoice_id=record["accountingInvoiceId"],
            status=str(record["status"]),
            currency_code=str(record["currencyCode"]),
            original_amount=Decimal(record["originalAmount"]),
            remaining_amount=Decimal(record["remainingAmount"]),
            debtor_name=str(record["debtorName"]),
            body=dict(record["body"]),
            created=datetime.fromisoformat(record["created"]),
            updated=datetime.fromisoformat(record["updated"]),
            documents=[
                _Document(
                    id=int(d["id"]),
                    type=str(d["type"]),
                    file_name=str(d["fileName"]),
                    created=datetime.fromisoformat(d["created"]),
                    content=base64.b64decode(d["content"], validate=True),
                )
                for d in record["documents"]
            ],
            timeline=[
                (datetime.fromisoformat(item["time"]), str(item["event"]))
                for item in record["timeline"]
            ],
            payments=[_Payment.from_record(item) for item in record.get("payments", [])],
            started=_started_from_record(record),
        )


def _started_from_record(record: Mapping[str, Any]) -> datetime | None:
    """When collection started; older data files only tell it by the status."""
    if "started" in record:
        return None if record["started"] is None else datetime.fromisoformat(record["started"])
    return datetime.fromisoformat(record["updated"]) if record["status"] == STATUS_STARTED else None
