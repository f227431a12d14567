"""A Tripletex company's data in the shapes of Tripletex's OpenAPI description: customers with
their postal addresses and countries, outgoing invoices (amounts in decimal kroner) and credit
notes. Every resource carries `id` and `url`: the simulator shows it as `{id, url}` unless the
`fields` expression expands it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from stdnum.no import orgnr

from kravia_sync.testing.kit import minimal_pdf

__all__ = ["RESOURCE_HOST", "TripletexCompany", "demo_company", "oslo_today", "resource_url"]

RESOURCE_HOST: Final = "tripletex.no/v2"  # the form of the spec's example urls
_CENT: Final = Decimal("0.01")
_COUNTRIES: Final = {
    "NO": (161, "Norge", "NOR"),
    "SE": (170, "Sverige", "SWE"),
}
_CURRENCIES: Final = {"NOK": 1, "EUR": 2, "SEK": 3}


def resource_url(kind: str, resource_id: int) -> str:
    return f"{RESOURCE_HOST}/{kind}/{resource_id}"


def oslo_today() -> date:
    return datetime.now(ZoneInfo("Europe/Oslo")).date()


def _ref(kind: str, resource_id: int, **fields: Any) -> dict[str, Any]:  # noqa: ANN401
    return {"id": resource_id, "version": 1, "url": resource_url(kind, resource_id), **fields}


def country(code: str) -> dict[str, Any]:
    number, name, alpha3 = _COUNTRIES[code]
    return _ref(
        "country",
        number,
        name=name,
        displayName=name,
        isoAlpha2Code=code,
        isoAlpha3Code=alpha3,
        isoNumericCode=str(number),
    )


def currency(code: str) -> dict[str, Any]:
    return _ref("currency", _CURRENCIES[code], code=code, description=code, factor=1)


@dataclass
class TripletexCompany:
    """One company: its customers, its invoices (credit notes among them) and their PDFs."""

    customers: dict[int, dict[str, Any]]
    invoices: list[dict[str, Any]] = field(default_factory=list)
    pdfs: dict[int, bytes] = field(default_factory=dict)
    next_id: int = 3_000_000

    def to_collect(self, today: date, min_days: int = 14) -> list[dict[str, Any]]:
        """The invoices a pass must send to collection: not credit notes, in NOK, with money
        outstanding, due `min_days` ago or more."""
        return [
            invoice
            for invoice in self.invoices
            if not invoice["isCreditNote"]
            and invoice["currency"]["code"] == "NOK"
            and invoice["amountOutstanding"] > 0
            and (today - date.fromisoformat(invoice["invoiceDueDate"])).days >= min_days
        ]

    def invoice(self, invoice_id: int) -> dict[str, Any]:
        for invoice in self.invoices:
            if invoice["id"] == invoice_id:
                return invoice
        raise KeyError(f"no invoice {invoice_id}")

    def add_invoice(
        self,
        *,
        customer_id: int,
        invoice_date: date,
        due_date: date,
        amount: Decimal,
        currency_code: str = "NOK",
        credited: int | None = None,
        pdf: bool = True,
    ) -> dict[str, Any]:
        """A charged invoice (or, with `credited`, a credit note on that invoice: its amount
        negative, applied to the credited invoice's outstanding amount)."""
        self.next_id += 1
        invoice_id = self.next_id
        number = invoice_id - 3_000_000 + 10_000
        amount = amount.quantize(_CENT)
        excluding = (amount / Decimal("1.25")).quantize(_CENT)
        invoice: dict[str, Any] = _ref(
            "invoice",
            invoice_id,
            invoiceNumber=number,
            invoiceDate=invoice_date.isoformat(),
            customer=self.customers[customer_id],
            creditedInvoice=credited,
            isCredited=False,
            invoiceDueDate=due_date.isoformat(),
            kid=f"{number:08d}{number % 7}",
            invoiceComment="",
            comment="",
            orders=[_ref("order", 4_000_000 + invoice_id)],
            voucher=_ref("ledger/voucher", 5_000_000 + invoice_id),
            deliveryDate=invoice_date.isoformat(),
            amount=amount,
            amountCurrency=amount,
            amountExcludingVat=excluding,
            amountExcludingVatCurrency=excluding,
            amountRoundoff=Decimal("0.00"),
            amountRoundoffCurrency=Decimal("0.00"),
            amountOutstanding=Decimal("0.00") if credited is not None else amount,
            amountCurrencyOutstanding=Decimal("0.00") if credited is not None else amount,
            amountOutstandingTotal=Decimal("0.00") if credited is not None else amount,
            amountCurrencyOutstandingTotal=Decimal("0.00") if credited is not None else amount,
            sumRemits=Decimal("0.00"),
            currency=currency(currency_code),
            isCreditNote=credited is not None,
            isCharged=True,
            isApproved=True,
            postings=[],
            reminders=[],
            invoiceRemarks="",
            documentId=6_000_000 + invoice_id,
            ehfSendStatus="DO_NOT_SEND",
        )
        self.invoices.append(invoice)
        if pdf:
            self.pdfs[invoice_id] = minimal_pdf(f"Faktura {number}")
        if credited is not None:
            original = self.invoice(credited)
            original["isCredited"] = True
            self.reduce(credited, -amount)
        return invoice

    def reduce(self, invoice_id: int, by: Decimal) -> None:
        """Money paid or credited: the invoice's outstanding amounts drop by `by`."""
        invoice = self.invoice(invoice_id)
        for name in (
            "amountOutstanding",
            "amountCurrencyOutstanding",
            "amountOutstandingTotal",
            "amountCurrencyOutstandingTotal",
        ):
            invoice[name] = max(Decimal("0.00"), invoice[name] - by).quantize(_CENT)


def _org_number(seed: int) -> str:
    candidate = 920_000_000 + seed * 89
    while not orgnr.is_valid(str(candidate)):
        candidate += 1
    return str(candidate)


def _customer(index: int, today: date) -> dict[str, Any]:
    customer_id = 7_000_000 + index
    business = index % 2 == 0
    name = f"Kunde {index + 1} {'AS' if business else 'Nordmann'}"
    code = "SE" if index % 25 == 24 else "NO"
    postal = f"{150 + index % 40:04d}" if code == "NO" else f"{11_120 + index:05d}"
    return _ref(
        "customer",
        customer_id,
        name=name,
        organizationNumber=_org_number(index) if business else "",
        supplierNumber=0,
        customerNumber=20_001 + index,
        isSupplier=False,
        isCustomer=True,
        isInactive=False,
        email=f"kunde{index + 1}@example.no",
        invoiceEmail=f"faktura{index + 1}@example.no" if index % 3 == 0 else "",
        overdueNoticeEmail=f"purring{index + 1}@example.no" if index % 6 == 0 else "",
        phoneNumber="",
        isPrivateIndividual=not business,
        postalAddress=_ref(
            "address",
            8_000_000 + index,
            addressLine1=f"Storgata {index % 90 + 1}",
            addressLine2="",
            postalCode=postal,
            city="Oslo" if code == "NO" else "Stockholm",
            country=country(code),
        ),
        physicalAddress=_ref("address", 8_500_000 + index),
        language="NO",
        currency=currency("NOK"),
        accountManager=_ref("employee", 9_000_001),
        changes=[],
        createdDate=(today - timedelta(days=900)).isoformat(),
    )


def demo_company(
    *,
    invoices: int = 300,
    customers: int = 60,
    today: date | None = None,
    seed: int = 11,
    spread_days: int = 120,
    pdf_every: int = 1,
    foreign_every: int = 50,
) -> TripletexCompany:
    """`invoices` invoices of `customers` customers, by the last digit of their position:

    0 settled (nothing outstanding); 1 not due yet; 2 five days overdue (too young for
    collection); 3 partly paid; 4 partly credited by a credit note (itself an invoice in the
    list, `isCreditNote`); 5 to 9 overdue and unpaid, due 20 to `spread_days` + 20 days ago. Every
    `foreign_every`-th (0: none) overdue one is in EUR. Customers alternate business (a valid
    organisation number) and private (`isPrivateIndividual`); a few live in Sweden.
    """
    rng = random.Random(seed)
    today = today or oslo_today()
    company = TripletexCompany({7_000_000 + i: _customer(i, today) for i in range(customers)})
    ids = sorted(company.customers)
    for index in range(invoices):
        kind = index % 10
        if kind == 1:
            due = today + timedelta(days=10)
        elif kind == 2:
            due = today - timedelta(days=5)
        else:
            due = today - timedelta(days=20 + rng.randrange(max(1, spread_days)))
        amount = Decimal(rng.randrange(50_000, 5_000_000)) / 100
        foreign = foreign_every and index % foreign_every == 7
        invoice = company.add_invoice(
            customer_id=ids[index % len(ids)],
            invoice_date=due - timedelta(days=14),
            due_date=due,
            amount=amount,
            currency_code="EUR" if foreign else "NOK",
            pdf=bool(pdf_every) and index % pdf_every == 0,
        )
        if kind == 0:
            company.reduce(invoice["id"], amount)
        elif kind == 3:
            company.reduce(invoice["id"], (amount / 3).quantize(_CENT))
        elif kind == 4:
            company.add_invoice(
                customer_id=invoice["customer"]["id"],
                invoice_date=due,
                due_date=due,
                amount=-(amount / 4).quantize(_CENT),
                credited=invoice["id"],
                pdf=False,
            )
    return company
