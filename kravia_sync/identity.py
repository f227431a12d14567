"""Does Kravia already have this invoice? Pure judgement over what Kravia's search reported.

Kravia documents no idempotency key, so the engine never registers an accountingInvoiceId
before it has looked at what Kravia holds (the mirror of Kravia's cases,
`kravia_sync.engine.mirror`).
This module decides from those look-ups alone; it fails closed: whatever could be the same
invoice but cannot be told apart is `Unknown`, never `Absent`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Absent", "Adopt", "KnownCase", "Several", "Unknown", "Verdict", "identity_verdict"]


@dataclass(frozen=True, slots=True)
class KnownCase:
    """One case Kravia reported, as far as identity goes."""

    kravia_id: int
    accounting_invoice_id: str | None  # None: the answer carried none we could read
    invoice_number: str | None


@dataclass(frozen=True, slots=True)
class Absent:
    """Kravia has no case that could be this invoice: it may be registered."""


@dataclass(frozen=True, slots=True)
class Adopt:
    """Kravia has exactly one case with this accountingInvoiceId: it is this invoice's."""

    kravia_id: int


@dataclass(frozen=True, slots=True)
class Several:
    """Kravia holds several cases with this accountingInvoiceId: a person must choose."""

    kravia_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unknown:
    """Kravia holds a case that may be this invoice, and nothing tells: a person decides."""

    reason: str
    kravia_ids: tuple[int, ...]
    # The cases' search items carried no accountingInvoiceId: their details may tell.
    unreadable: bool = False


Verdict = Absent | Adopt | Several | Unknown


def identity_verdict(
    accounting_invoice_id: str,
    invoice_number: str,
    *,
    fallback_id: str,
    known: Iterable[KnownCase],
) -> Verdict:
    """Judge whether Kravia already has the invoice `accounting_invoice_id`.

    `known`: Kravia's cases with this accountingInvoiceId or this invoice number (others
    cannot matter). `fallback_id`: the accountingInvoiceId the source gives an invoice that
    carries no id of its own (its prefix and invoice number), so a case registered under it
    before the source had an id for this invoice is recognised.

    1. Cases with this very id: one is adopted, several go to a person.
    2. A case with this invoice number whose id we could not read may be this invoice.
    3. A case with this invoice number registered under the fallback id (when this invoice
       now has an id of its own) may be this invoice, registered before its id appeared.
    Anything else with the same invoice number belongs to another source's invoice (another
    prefix): it cannot be this one.
    """
    cases = list(known)
    same_id = sorted(
        {case.kravia_id for case in cases if case.accounting_invoice_id == accounting_invoice_id}
    )
    if len(same_id) == 1:
        return Adopt(same_id[0])
    if same_id:
        return Several(tuple(same_id))
    same_number = [case for case in cases if case.invoice_number == invoice_number]
    unreadable = sorted(c.kravia_id for c in same_number if c.accounting_invoice_id is None)
    if unreadable:
        return Unknown(
            f"Kravia holds case {_ids(unreadable)} with invoice number {invoice_number!r} and "
            "no accountingInvoiceId we can read: it may be this invoice. If it is, resolve "
            "with --as kravia:<id>; if not, --as new",
            tuple(unreadable),
            unreadable=True,
        )
    if fallback_id != accounting_invoice_id:
        earlier = sorted(c.kravia_id for c in same_number if c.accounting_invoice_id == fallback_id)
        if earlier:
            return Unknown(
                f"Kravia holds case {_ids(earlier)} registered as {fallback_id!r} (this invoice "
                f"number, from before the invoice had the id {accounting_invoice_id!r}): it "
                "may be this invoice. If it is, resolve with --as kravia:<id>; if not, --as new",
                tuple(earlier),
            )
    return Absent()


def _ids(ids: list[int]) -> str:
    return ", ".join(str(kravia_id) for kravia_id in ids)
