"""The Fiken simulator's data: one company's invoices, contacts, credit notes and payments in
the shapes of Fiken's API v2 (amounts in øre), a demo company, and the bookkeeping a test
does in Fiken (a payment, a credit note) with the sale's figures kept consistent.

How a credit note changes its invoice's `sale.outstandingBalance` is not documented by Fiken;
`FikenCompany.credit_reduces_balance` chooses: True (the default) lowers the balance and
settles an invoice credited in full; False leaves the invoice's sale as it was (the credit
note is only listed). The connector must be right under both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from stdnum.no import orgnr

from kravia_sync.testing import minimal_pdf

__all__ = ["FikenCompany", "demo_company", "oslo_today"]

BANK_ACCOUNT = "1920:10001"  # the ledger account a demo payment is booked to


@dataclass
class FikenCompany:
    """One company's data in Fiken's shapes (amounts in øre)."""

    slug: str
    invoices: list[dict[str, Any]]
    contacts: dict[int, dict[str, Any]]
    pdfs: dict[int, bytes] = field(default_factory=dict)
    credit_notes: list[dict[str, Any]] = field(default_factory=list)
    credit_reduces_balance: bool = True  # see the module's docstring
    organization_number: str = "921234566"
    _next_id: int = 7_000_000

    def unpaid_overdue(self, today: date, min_days: int = 14) -> list[dict[str, Any]]:
        """The invoices a pass must send to collection: unsettled, neither written off nor
        deleted, something still owed after their credit notes, due `min_days` ago or more."""
        return [
            invoice
            for invoice in self.invoices
            if not invoice["sale"]["settled"]
            and not invoice["sale"]["writeOff"]
            and not invoice["sale"]["deleted"]
            and self.owed(invoice) > 0
            and (today - date.fromisoformat(invoice["dueDate"])).days >= min_days
        ]

    def owed(self, invoice: dict[str, Any]) -> int:
        """What the debtor still owes on the invoice, in øre, after its credit notes."""
        outstanding: int = invoice["sale"]["outstandingBalance"]
        if self.credit_reduces_balance:
            return outstanding
        credited: int = sum(
            note["gross"]
            for note in self.credit_notes
            if note["associatedInvoiceId"] == invoice["invoiceId"]
        )
        return outstanding - credited

    # -- bookkeeping, as a person does it in Fiken ------------------------------------------

    def invoice(self, invoice_id: int) -> dict[str, Any]:
        for invoice in self.invoices:
            if invoice["invoiceId"] == invoice_id:
                return invoice
        raise KeyError(f"no invoice {invoice_id}")

    def sale(self, sale_id: int) -> dict[str, Any] | None:
        for invoice in self.invoices:
            if invoice["sale"]["saleId"] == sale_id:
                sale: dict[str, Any] = invoice["sale"]
                return sale
        return None

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def pay(self, invoice_id: int, amount: int, *, on: date) -> dict[str, Any]:
        """The debtor paid `amount` øre of the invoice: a sale payment (`salePayments`),
        `totalPaid` up, `outstandingBalance` down, settled at nothing left."""
        if amount <= 0:
            raise ValueError(f"a payment of {amount} øre")
        invoice = self.invoice(invoice_id)
        sale = invoice["sale"]
        payment = {
            "paymentId": self._new_id(),
            "date": on.isoformat(),
            "account": BANK_ACCOUNT,
            "amount": amount,
            "amountInNok": amount,
            "currency": invoice["currency"],
            "fee": 0,
        }
        sale.setdefault("salePayments", []).append(payment)
        sale["totalPaid"] += amount
        sale["totalPaidInCurrency"] += amount
        self._lower(invoice, amount, on)
        return payment

    def credit(self, invoice_id: int, amount: int | None = None, *, on: date) -> dict[str, Any]:
        """A credit note on the invoice: in full (`amount` None: the invoice's gross, as
        `POST /creditNotes/full` makes) or of `amount` øre (`POST /creditNotes/partial`).
        Listed at `/creditNotes` and in the invoice's `associatedCreditNotes`; the invoice's
        balance is lowered only when `credit_reduces_balance`."""
        invoice = self.invoice(invoice_id)
        gross = invoice["gross"] if amount is None else amount
        if gross <= 0:
            raise ValueError(f"a credit note of {gross} øre")
        net = gross * 4 // 5
        credit_note_id = self._new_id()
        number = 90_001 + len(self.credit_notes)
        contact = self.contacts.get(invoice["customer"]["contactId"], invoice["customer"])
        note: dict[str, Any] = {
            "creditNoteId": credit_note_id,
            "creditNoteNumber": number,
            "kid": invoice["kid"],
            "customer": {"contactId": contact["contactId"], "name": contact["name"]},
            "net": net,
            "vat": gross - net,
            "gross": gross,
            "netInNok": net,
            "vatInNok": gross - net,
            "grossInNok": gross,
            "creditNoteText": f"Kreditnota for faktura {invoice['invoiceNumber']}",
            "yourReference": "",
            "ourReference": "",
            "orderReference": "",
            "address": dict(invoice["address"]),
            "lines": [
                {
                    "net": net,
                    "vat": gross - net,
                    "vatType": "HIGH",
                    "gross": gross,
                    "vatInPercent": 25,
                    "quantity": 1,
                    "description": "Kreditert",
                }
            ],
            "currency": invoice["currency"],
            "issueDate": on.isoformat(),
            "lastModifiedDate": on.isoformat(),
            "settled": True,
            "associatedInvoiceId": invoice_id,
            "sale": {
                "saleId": self._new_id(),
                "lastModifiedDate": on.isoformat(),
                "saleNumber": f"K{number}",
                "date": on.isoformat(),
                "kind": "invoice",
                "settled": True,
                "settledDate": on.isoformat(),
                "writeOff": False,
                "totalPaid": 0,
                "totalPaidInCurrency": 0,
                "outstandingBalance": 0,
                "currency": invoice["currency"],
                "salePayments": [],
                "deleted": False,
            },
        }
        self.credit_notes.append(note)
        invoice["associatedCreditNotes"].append(credit_note_id)
        invoice["lastModifiedDate"] = on.isoformat()
        if self.credit_reduces_balance:
            self._lower(invoice, gross, on)
        else:
            invoice["sale"]["lastModifiedDate"] = on.isoformat()
        return note

    @staticmethod
    def _lower(invoice: dict[str, Any], amount: int, on: date) -> None:
        sale = invoice["sale"]
        sale["outstandingBalance"] -= amount
        sale["lastModifiedDate"] = on.isoformat()
        if sale["outstandingBalance"] <= 0 and not sale["settled"]:
            sale["settled"] = True
            sale["settledDate"] = on.isoformat()


def _org_number(seed: int) -> str:
    candidate = 910_000_000 + seed * 97
    while not orgnr.is_valid(str(candidate)):
        candidate += 1
    return str(candidate)


def demo_company(
    *,
    invoices: int = 300,
    customers: int = 60,
    slug: str = "fiken-demo-as",
    today: date | None = None,
    seed: int = 7,
    pdf_every: int = 1,
    with_settled: bool = True,
) -> FikenCompany:
    """`invoices` invoices of `customers` customers, every tenth one of each kind:

    settled (paid); not due yet; 5 days overdue (too young for collection); and 20 to 140 days
    overdue, some partly paid. Every other customer is a business (a valid organisation
    number); countries are written as Fiken users do, as names ("Norge") or codes ("NO").
    Every `pdf_every`-th invoice has a PDF (0: none). Without `with_settled`, the tenth that
    would be settled is overdue and unpaid like most.
    """
    rng = random.Random(seed)
    today = today or oslo_today()
    contacts: dict[int, dict[str, Any]] = {}
    for index in range(customers):
        contact_id = 5_000_000 + index
        business = index % 2 == 0
        contacts[contact_id] = {
            "contactId": contact_id,
            "createdDate": (today - timedelta(days=400)).isoformat(),
            "lastModifiedDate": (today - timedelta(days=30)).isoformat(),
            "name": f"Kunde {index + 1} {'AS' if business else 'Ødegård'}",
            "email": f"kunde{index + 1}@example.no",
            "organizationNumber": _org_number(index) if business else None,
            "customerNumber": 10_001 + index,
            "customerAccountCode": f"1500:{10_001 + index}",
            "customer": True,
            "supplier": False,
            "language": "NORWEGIAN",
            "inactive": False,
            "daysUntilInvoicingDueDate": 14,
            "address": {
                "streetAddress": f"Storgata {index % 90 + 1}",
                "streetAddressLine2": "",
                "city": "Oslo",
                "postCode": f"{150 + index % 40:04d}",
                # The spec's example writes the English name; Norwegian users type "Norge".
                "country": ("Norway", "Norge", "NO")[index % 3],
            },
            "groups": [],
        }
    contact_ids = sorted(contacts)
    company = FikenCompany(slug=slug, invoices=[], contacts=contacts)
    for index in range(invoices):
        invoice_id = 1_000_000 + index
        number = 10_001 + index
        kind = index % 10
        if kind == 1:
            due = today + timedelta(days=10)
        elif kind == 2:
            due = today - timedelta(days=5)
        else:
            due = today - timedelta(days=20 + rng.randrange(120))
        issue = due - timedelta(days=14)
        net = rng.randrange(50_000, 5_000_000)
        vat = net // 4
        gross = net + vat
        settled = kind == 0 and with_settled
        paid = gross if settled else (gross // 3 if kind == 5 else 0)
        contact = contacts[contact_ids[index % len(contact_ids)]]
        invoice: dict[str, Any] = {
            "invoiceId": invoice_id,
            "createdDate": issue.isoformat(),
            "lastModifiedDate": issue.isoformat(),
            "invoiceNumber": number,
            "kid": f"{number}{index % 10}",
            "issueDate": issue.isoformat(),
            "dueDate": due.isoformat(),
            "originalDueDate": due.isoformat(),
            "net": net,
            "vat": vat,
            "gross": gross,
            "netInNok": net,
            "vatInNok": vat,
            "grossInNok": gross,
            "cash": False,
            "invoiceText": f"Faktura {number}",
            "yourReference": "",
            "ourReference": "",
            "orderReference": "",
            "address": dict(contact["address"]),
            "lines": [
                {
                    "net": net,
                    "vat": vat,
                    "vatType": "HIGH",
                    "gross": gross,
                    "vatInPercent": 25,
                    "quantity": 1,
                    "description": "Konsulenttimer",
                }
            ],
            "currency": "NOK",
            "bankAccountNumber": "15032080119",
            "sentManually": False,
            "associatedCreditNotes": [],
            "attachments": [],
            "customer": {"contactId": contact["contactId"], "name": contact["name"]},
            "sale": {
                "saleId": 2_000_000 + index,
                "lastModifiedDate": issue.isoformat(),
                "saleNumber": str(number),
                "date": issue.isoformat(),
                "kind": "invoice",
                "netAmount": net,
                "vatAmount": vat,
                "settled": settled,
                "settledDate": due.isoformat() if settled else None,
                "writeOff": False,
                "totalPaid": paid,
                "totalPaidInCurrency": paid,
                "outstandingBalance": gross - paid,
                "currency": "NOK",
                "salePayments": [
                    {
                        "paymentId": 3_000_000 + index,
                        "date": (due if settled else today - timedelta(days=3)).isoformat(),
                        "account": BANK_ACCOUNT,
                        "amount": paid,
                        "amountInNok": paid,
                        "currency": "NOK",
                        "fee": 0,
                    }
                ]
                if paid
                else [],
                "dueDate": due.isoformat(),
                "kid": f"{number}{index % 10}",
                "deleted": False,
            },
        }
        if pdf_every and index % pdf_every == 0:
            company.pdfs[invoice_id] = minimal_pdf(f"Faktura {number}")
        company.invoices.append(invoice)
    return company


def oslo_today() -> date:
    return datetime.now(ZoneInfo("Europe/Oslo")).date()
