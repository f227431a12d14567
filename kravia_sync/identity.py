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

__all__ = [
    "Absent",
    "Adopt",
    "KnownCase",
    "OwnIds",
    "Several",
    "Unknown",
    "Verdict",
    "identity_verdict",
]


@dataclass(frozen=True, slots=True)
class KnownCase:
    """One case Kravia reported, as far as identity goes."""

    kravia_id: int
    accounting_invoice_id: str | None  # None: the answer carried none we could read
    invoice_number: str | None
    # Whether the state store holds this case (of any source): under its accountingInvoiceId,
    # as the same invoice (its Kravia id or its invoice number).
    stored: bool = False


@dataclass(frozen=True, slots=True)
class OwnIds:
    """The accountingInvoiceIds a source may have given its invoices, for a source whose
    invoice numbers name one invoice each: those with its prefix, but not those with another
    source's longer prefix (that source's)."""

    prefix: str = ""
    other_prefixes: tuple[str, ...] = ()

    def may_be(self, accounting_invoice_id: str) -> bool:
        """Whether the source may have given one of its invoices this id."""
        if not accounting_invoice_id.startswith(self.prefix):
            return False
        return not any(
            len(other) > len(self.prefix) and accounting_invoice_id.startswith(other)
            for other in self.other_prefixes
        )


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
    own_ids: OwnIds | None = None,
) -> Verdict:
    """Judge whether Kravia already has the invoice `accounting_invoice_id`.

    `known`: Kravia's cases with this accountingInvoiceId or this invoice number (others
    cannot matter). `fallback_id`: the accountingInvoiceId the source gives an invoice that
    carries no id of its own (its prefix and invoice number), so a case registered under it
    before the source had an id for this invoice is recognised. `own_ids`: the ids the
    source may have given its invoices, where its invoice numbers name one invoice each
    (None: they do not, or the source is not known).

    1. Cases with this very id: one is adopted, several go to a person; but where numbers
       name invoices (`own_ids`), a case with this id and another invoice number is another
       invoice's (the source gave its id to this one), and goes to a person too.
    2. A case with this invoice number whose id we could not read may be this invoice.
    3. A case with this invoice number registered under the fallback id (when this invoice
       now has an id of its own) may be this invoice, registered before its id appeared.
    4. A case with this invoice number registered under another id the source may have given
       it, which the state store does not know, may be this invoice, registered before its id
       changed (the state store, which kept the id it had, was lost or restored from an older
       copy). A case the state store knows is another invoice's: of this source, the read
       would have taken the invoice for that case (`kravia_sync.engine.drift`).
    Anything else with the same invoice number belongs to another source's invoice (another
    prefix): it cannot be this one.
    """
    cases = list(known)
    if own_ids is not None:
        other = _of_another_invoice(accounting_invoice_id, invoice_number, cases)
        if other is not None:
            return other
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
    return _registered_before(accounting_invoice_id, fallback_id, same_number, own_ids)


def _registered_before(
    accounting_invoice_id: str,
    fallback_id: str,
    same_number: list[KnownCase],
    own_ids: OwnIds | None,
) -> Verdict:
    """Rules 3 and 4 of `identity_verdict`: Kravia's cases with this invoice number under the
    fallback id, or under another id the source may have given it that the state store does
    not know."""
    if fallback_id != accounting_invoice_id:
        earlier = sorted(c.kravia_id for c in same_number if c.accounting_invoice_id == fallback_id)
        if earlier:
            return Unknown(
                f"Kravia holds case {_ids(earlier)} registered as {fallback_id!r} (this invoice "
                f"number, from before the invoice had the id {accounting_invoice_id!r}): it "
                "may be this invoice. If it is, resolve with --as kravia:<id>; if not, --as new",
                tuple(earlier),
            )
    if own_ids is None:
        return Absent()
    renamed = [
        case
        for case in same_number
        if case.accounting_invoice_id not in {None, accounting_invoice_id, fallback_id}
        and not case.stored
        and own_ids.may_be(str(case.accounting_invoice_id))
    ]
    if not renamed:
        return Absent()
    ids = sorted(case.kravia_id for case in renamed)
    names = ", ".join(sorted({repr(case.accounting_invoice_id) for case in renamed}))
    return Unknown(
        f"Kravia holds case {_ids(ids)} registered as {names} with invoice number "
        f"{renamed[0].invoice_number!r}, which the state store does not know (lost, or "
        f"restored from an older copy?): it may be this invoice, from before its id became "
        f"{accounting_invoice_id!r}. If it is, resolve with --as kravia:<id>; if not, "
        "--as new",
        tuple(ids),
    )


def _of_another_invoice(
    accounting_invoice_id: str, invoice_number: str, cases: list[KnownCase]
) -> Unknown | None:
    """Kravia's cases with this id registered for another invoice number, as a verdict."""
    other = [
        case
        for case in cases
        if case.accounting_invoice_id == accounting_invoice_id
        and case.invoice_number is not None
        and case.invoice_number != invoice_number
    ]
    if not other:
        return None
    ids = sorted({case.kravia_id for case in other})
    numbers = ", ".join(sorted({repr(case.invoice_number) for case in other}))
    return Unknown(
        f"Kravia holds case {_ids(ids)} as {accounting_invoice_id!r} for invoice number "
        f"{numbers}, and this invoice has the number {invoice_number!r}: one id cannot name "
        "two invoices. Give this invoice an id of its own in the source; resolving it --as new "
        "would register a second case with this accountingInvoiceId",
        tuple(ids),
    )


def _ids(ids: list[int]) -> str:
    return ", ".join(str(kravia_id) for kravia_id in ids)
