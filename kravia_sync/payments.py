"""Payments and credit notes after registration: the canonical model and its lifecycle.

A source reports money that reduced what a debtor owes in one of two ways:

* as **payment records** (`PaymentRecord`, flat fields `PAYMENT_FIELDS`): a payment or credit
  note with the source's own id, date, amount and the invoice it covers. One payment spread
  over several invoices is several records with one `payment_id`;
* only through **outstanding amounts**: the invoice's amount drops. The drop becomes a
  payment whose id is derived from the invoice and the two amounts (`derived_payment`).

Each is forwarded to Kravia at most once, journaled like a register. The decisions here are
pure: no I/O. The rules, in order:

1. A payment first seen while an invoice it covers is not yet sent to Kravia is *netted*: the
   invoice's amount, which is what the debtor owes now, already leaves it out. Never sent.
2. A payment the configured payout rule recognises (Kravia's own payouts to the creditor, as
   booked in the creditor's books) is a *payout*: never sent back to Kravia.
3. Otherwise it waits until every invoice it covers is in Kravia, is clamped to the capital
   Kravia says is left, and is sent. A lost answer is settled by reading the case's details,
   never by sending again blindly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from kravia_sync.errors import InvalidRecordError
from kravia_sync.field_limits import PAYMENT_FIELD_LIMITS, check_text_fields
from kravia_sync.lifecycle import backing_off
from kravia_sync.model import money, parse_amount, parse_date, record_accounting_id

__all__ = [
    "PAYMENT_FIELDS",
    "REQUIRED_PAYMENT_FIELDS",
    "Payment",
    "PaymentKind",
    "PaymentLine",
    "PaymentPhase",
    "PaymentState",
    "PaymentStep",
    "PayoutRule",
    "clamp_lines",
    "derived_payment",
    "group_payments",
    "is_credit_note_record",
    "is_payment_record",
    "limit_to_owed",
    "payment_arrived",
]

# The flat payment record format: field names connectors (and folder files) use.
PAYMENT_FIELDS: tuple[str, ...] = (
    "payment_id",
    "kind",
    "date",
    "amount",
    "invoice_number",
    "accounting_invoice_id",
    "description",
    "payer",
    "reference",
    "kid",
    "account",
)
REQUIRED_PAYMENT_FIELDS: tuple[str, ...] = ("payment_id", "date", "amount")
# An id that marks a record as a payment rather than an invoice.
PAYMENT_MARKER = "payment_id"
DERIVED_PREFIX = "ks-drop-"
CHANGED_AFTER_SENT = "changed in the source after it was sent to Kravia"


def is_payment_record(fields: Mapping[str, object]) -> bool:
    """A flat record is a payment record when it carries a `payment_id`."""
    return PAYMENT_MARKER in fields


class PaymentKind(StrEnum):
    PAYMENT = "payment"  # paid directly to the creditor
    CREDIT_NOTE = "credit_note"  # the creditor credited (part of) the invoice


def is_credit_note_record(fields: Mapping[str, object]) -> bool:
    """A flat payment record of kind credit note (any spelling `kind` accepts)."""
    try:
        return _kind(fields.get("kind")) is PaymentKind.CREDIT_NOTE
    except ValueError:
        return False


def _kind(value: object) -> PaymentKind:
    if value is None or (isinstance(value, str) and not value.strip()):
        return PaymentKind.PAYMENT
    text = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {"creditnote": "credit_note", "credit": "credit_note", "kreditnota": "credit_note"}
    text = aliases.get(text, text)
    if text not in PaymentKind.__members__.values():
        raise ValueError(f"{value!r} is neither payment nor credit_note")
    return PaymentKind(text)


class Payment(BaseModel):
    """One payment or credit note's share of one invoice, validated."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True, extra="forbid")

    payment_id: str = Field(min_length=1)
    kind: Annotated[PaymentKind, BeforeValidator(_kind)] = PaymentKind.PAYMENT
    paid_on: Annotated[date, BeforeValidator(parse_date)]
    amount: Annotated[Decimal, BeforeValidator(parse_amount)]
    accounting_invoice_id: str = Field(min_length=1)
    description: str | None = None
    payer: str | None = None
    reference: str | None = None
    kid: str | None = None
    account: str | None = None

    @field_validator("amount")
    @classmethod
    def _positive_money(cls, value: Decimal) -> Decimal:
        value = abs(value)  # a credit note may come as a negative amount; its size counts
        if value == 0:
            raise ValueError("the amount must not be zero")
        return money(value)

    @classmethod
    def from_record(cls, record: Mapping[str, object], *, id_prefix: str = "") -> Payment:
        """Validate one flat payment record; `InvalidRecordError` names the first bad field."""
        unknown = sorted(set(record) - set(PAYMENT_FIELDS))
        if unknown:
            raise InvalidRecordError(unknown[0], "unknown field (see the payment record format)")
        values = {
            key: None if isinstance(value, str) and not value.strip() else value
            for key, value in record.items()
        }
        for name in REQUIRED_PAYMENT_FIELDS:
            if values.get(name) is None:
                raise InvalidRecordError(name, "required field is missing or empty")
        invoice = record_accounting_id(values, id_prefix)
        if invoice is None:
            raise InvalidRecordError("invoice_number", "a payment must name the invoice it covers")
        payment_id = f"{id_prefix}{str(values['payment_id']).strip()}"  # as Kravia is sent it
        check_text_fields({**values, "payment_id": payment_id}, PAYMENT_FIELD_LIMITS)
        try:
            kind = _kind(values.get("kind"))
            signed = parse_amount(values["amount"])
        except ValueError:
            pass  # reported below, naming the field
        else:
            if kind is PaymentKind.PAYMENT and signed < 0:
                raise InvalidRecordError(
                    "amount",
                    f"a payment of {signed} is negative: a reversal or a refund is not "
                    "forwarded (a credit note may be negative)",
                )
        payload = {
            "payment_id": payment_id,
            "kind": values.get("kind"),
            "paid_on": values["date"],
            "amount": values["amount"],
            "accounting_invoice_id": invoice,
            **{
                name: None if values.get(name) is None else str(values[name])
                for name in ("description", "payer", "reference", "kid", "account")
            },
        }
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else "payment"
            field = {"paid_on": "date"}.get(field, field)
            message = str(error["msg"]).removeprefix("Value error, ")
            raise InvalidRecordError(field, message) from None


@dataclass(frozen=True, slots=True)
class PayoutRule:
    """How Kravia's payouts look in the creditor's books (any match makes a payout)."""

    payers: frozenset[str] = frozenset()
    references: tuple[str, ...] = ()  # prefixes of the reference text
    kids: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()

    def matches(self, payment: Payment) -> str | None:
        """Why `payment` is a payout by Kravia, or None."""
        if payment.payer is not None and payment.payer.casefold() in self.payers:
            return f"payer {payment.payer!r}"
        if payment.reference is not None and payment.reference.casefold().startswith(
            self.references
        ):
            return f"reference {payment.reference!r}"
        if payment.kid is not None and payment.kid in self.kids:
            return f"KID {payment.kid}"
        if payment.account is not None and payment.account in self.accounts:
            return f"account {payment.account}"
        return None


@dataclass(frozen=True, slots=True)
class PaymentLine:
    """One invoice's share of a payment. `sent` is what went to Kravia after the clamp;
    `left_before` the capital Kravia reported left on the case just before it was sent (the
    evidence, after a lost answer, that the payment did or did not arrive)."""

    accounting_invoice_id: str
    amount: Decimal
    sent: Decimal | None = None
    left_before: Decimal | None = None


class PaymentPhase(StrEnum):
    NEW = "new"  # to send once its invoices are in Kravia
    SENDING = "sending"  # sent, answer unknown
    SENT = "sent"  # Kravia has it
    NETTED = "netted"  # first seen before its invoice went to Kravia: already in the amount
    PAYOUT = "payout"  # Kravia's own payout in the creditor's books: never echoed
    NOTHING_LEFT = "nothing_left"  # Kravia reports no capital left to reduce
    NEEDS_REVIEW = "needs_review"  # a person must look


FINAL_PAYMENT_PHASES = frozenset(
    {
        PaymentPhase.SENT,
        PaymentPhase.NETTED,
        PaymentPhase.PAYOUT,
        PaymentPhase.NOTHING_LEFT,
        PaymentPhase.NEEDS_REVIEW,
    }
)


@dataclass(frozen=True, slots=True)
class PaymentState:
    """One payment (or credit note) as the state store knows it; keyed by source and id."""

    source: str
    payment_id: str
    kind: PaymentKind
    paid_on: date
    lines: tuple[PaymentLine, ...]
    phase: PaymentPhase
    fingerprint: str
    first_seen_at: datetime
    updated_at: datetime
    description: str | None = None
    derived: bool = False
    pending_attempt: str | None = None
    pending_since: datetime | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    note: str | None = None  # why it is netted, a payout, clamped, or needs review
    # A payment sent whose answer was lost is verified only once Kravia's clock has passed
    # this (the call may land until its timeout runs out, and the settle time after).
    settle_after: datetime | None = None

    @property
    def amount(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def invoices(self) -> list[str]:
        return [line.accounting_invoice_id for line in self.lines]


def group_payments(payments: Iterable[Payment]) -> dict[str, list[Payment]]:
    """Records of one payment id together (a payment spread over several invoices)."""
    grouped: dict[str, list[Payment]] = {}
    for payment in payments:
        grouped.setdefault(payment.payment_id, []).append(payment)
    return grouped


def payment_fingerprint(parts: Sequence[Payment]) -> str:
    """What identifies a payment's content: a changed fingerprint on a sent one is flagged."""
    text = "\x1e".join(
        f"{p.kind}\x1f{p.paid_on}\x1f{p.amount}\x1f{p.accounting_invoice_id}"
        for p in sorted(parts, key=lambda p: p.accounting_invoice_id)
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def derived_payment(
    accounting_invoice_id: str, before: Decimal, after: Decimal, *, on: date, since: str = ""
) -> Payment:
    """The payment a drop of an invoice's outstanding amount from `before` to `after` stands
    for. Its id depends on the invoice, the two amounts and `since` (when the amount last
    changed before, so the same drop happening again later is a new payment); a drop is
    derived once, stored with the case's new amount in one transaction."""
    if after >= before:
        raise ValueError(f"{before} to {after} is not a drop")
    key = f"{accounting_invoice_id}\x1f{before}\x1f{after}\x1f{since}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    return Payment(
        payment_id=f"{DERIVED_PREFIX}{digest}",
        paid_on=on,
        amount=before - after,
        accounting_invoice_id=accounting_invoice_id,
        description=f"outstanding amount went from {before} to {after}",
    )


def limit_to_owed(
    lines: Sequence[PaymentLine],
    remaining: Mapping[str, Decimal | None],
    owed: Mapping[str, Decimal | None],
) -> tuple[tuple[PaymentLine, ...], list[str]]:
    """The lines of a payment derived from amount drops, each limited so Kravia's capital
    does not fall below what the source says is still owed (`owed`, the latest amount read).

    A drop is the difference between two amounts the state store saw; when the store forgot a
    drop it had forwarded (restored from an older copy) or Kravia took money off by another
    way, the difference overstates what is paid. Kravia's capital left minus what is still
    owed is what the debtor has paid since. Unknown capital or amount: left as it is (the
    capital clamp, and the gate before sending, decide)."""
    limited: list[PaymentLine] = []
    notes: list[str] = []
    for line in lines:
        left = remaining.get(line.accounting_invoice_id)
        still_owed = owed.get(line.accounting_invoice_id)
        if left is None or still_owed is None:
            limited.append(line)
            continue
        paid_since = max(Decimal(0), left - still_owed)
        amount = min(line.amount, paid_since)
        if amount != line.amount:
            notes.append(
                f"{line.accounting_invoice_id}: {line.amount} limited to {amount}: Kravia's "
                f"capital is {left} and the source says {still_owed} is still owed"
            )
        limited.append(replace(line, amount=amount))
    return tuple(limited), notes


def clamp_lines(
    lines: Sequence[PaymentLine], remaining: Mapping[str, Decimal | None]
) -> tuple[tuple[PaymentLine, ...], list[str]]:
    """Each line limited to the capital Kravia reports left on its case (Kravia would ignore
    the excess silently); and a note per clamped line. Unknown capital: sent as it is."""
    clamped: list[PaymentLine] = []
    notes: list[str] = []
    for line in lines:
        left = remaining.get(line.accounting_invoice_id)
        sent = line.amount if left is None else max(Decimal(0), min(line.amount, left))
        if sent != line.amount:
            notes.append(
                f"{line.accounting_invoice_id}: {line.amount} clamped to {sent}, the capital "
                "Kravia reports left"
            )
        clamped.append(replace(line, sent=sent, left_before=left))
    return tuple(clamped), notes


@dataclass(frozen=True, slots=True)
class LineEvidence:
    """What a case's details say, after a lost answer, of one line of a payment."""

    recorded: bool | None  # Kravia lists the payment's id on the case (`payment_recorded`)
    left_now: Decimal | None  # the capital Kravia reports left now
    left_before: Decimal | None  # the capital it reported just before the payment was sent


def payment_arrived(evidence: Sequence[LineEvidence]) -> bool | None:
    """Whether a payment whose answer was lost reached Kravia: True when any case lists it;
    False only when no case lists it *and* every case's capital is what it was before the
    payment was sent (a list of payments Kravia does not fill in, or fills in late, is no
    proof); None otherwise: a person looks, never a second payment on a guess."""
    if any(line.recorded is True for line in evidence):
        return True
    untouched = all(
        line.recorded is False
        and line.left_now is not None
        and line.left_before is not None
        and line.left_now == line.left_before
        for line in evidence
    )
    return False if evidence and untouched else None


# Phases of a reported credit note (or payment) that may still reach Kravia or need a person:
# an amount drop on the same invoice waits for it, since the drop may be that very money.
HOLDS_BACK_DROPS = frozenset({PaymentPhase.NEW, PaymentPhase.SENDING, PaymentPhase.NEEDS_REVIEW})


def drop_waits(payment: PaymentState, unsettled: set[str]) -> bool:
    """Whether an amount drop (`payment`, derived) waits for the next pass: a reported credit
    note or payment on one of its invoices (`unsettled`: their accountingInvoiceIds) has not
    been settled yet. Once it has, the drop is sized against Kravia's capital, which the
    credit note already lowered, so the same money is not sent twice."""
    return payment.derived and not unsettled.isdisjoint(payment.invoices)


class PaymentStep(StrEnum):
    SEND = "send"
    VERIFY = "verify"  # read the details after a lost answer
    WAIT = "wait"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class PaymentDecision:
    step: PaymentStep
    not_before: datetime | None = None
    reason: str = ""


def next_payment_step(
    payment: PaymentState,
    *,
    in_kravia: Mapping[str, int | None],
    now: datetime,
    settle: timedelta,
) -> PaymentDecision:
    """The next remote step for `payment`; `in_kravia` maps each invoice it covers to its
    Kravia id (None: not in Kravia yet)."""
    if payment.phase in FINAL_PAYMENT_PHASES:
        return PaymentDecision(PaymentStep.NONE, reason=payment.phase.value)
    if payment.phase is PaymentPhase.SENDING:
        since = payment.pending_since or payment.updated_at
        if since > now:  # our clock went back: the forwarder checks Kravia's clock instead
            since = now - settle
        retry_at = (
            payment.next_attempt_at
            if backing_off(payment.next_attempt_at, set_at=payment.updated_at, now=now)
            else None
        )
        not_before = max(since + settle, retry_at or since)
        if now < not_before:
            return PaymentDecision(PaymentStep.WAIT, not_before, "verify after the answer was lost")
        return PaymentDecision(PaymentStep.VERIFY)
    if backing_off(payment.next_attempt_at, set_at=payment.updated_at, now=now):
        return PaymentDecision(
            PaymentStep.WAIT, payment.next_attempt_at, "backing off after a failed attempt"
        )
    missing = [aid for aid in payment.invoices if in_kravia.get(aid) is None]
    if missing:
        return PaymentDecision(
            PaymentStep.NONE, reason=f"waiting for {', '.join(missing)} to be in Kravia"
        )
    return PaymentDecision(PaymentStep.SEND)


@dataclass(slots=True)
class PaymentPlan:
    """What one read means for the source's payments: states to store now, and the payments
    with a step to take (in the order they were first seen)."""

    writes: list[PaymentState]
    work: list[PaymentState]
    # Drops left for a later pass: a reported payment on their invoice waits for a person.
    waiting: int = 0


def plan_payments(
    seen: Sequence[tuple[str, Payment]],
    stored: Mapping[str, PaymentState],
    *,
    source: str,
    rule: PayoutRule,
    now: datetime,
) -> PaymentPlan:
    """Apply the rules of this module to one complete read.

    `seen`: (record key, payment) in read order, derived ones included; `stored`: the
    source's stored payments with these ids and every unfinished one.
    """
    writes: list[PaymentState] = []
    work: dict[str, PaymentState] = {}
    grouped: dict[str, list[Payment]] = {}
    for _, payment in seen:
        grouped.setdefault(payment.payment_id, []).append(payment)
    for payment_id, parts in grouped.items():
        fingerprint = payment_fingerprint(parts)
        existing = stored.get(payment_id)
        if existing is None:
            state = _first_seen(parts, fingerprint, source=source, rule=rule, now=now)
        else:
            state = _seen_again(existing, parts, fingerprint, now=now)
        if state is not existing:
            writes.append(state)
        if state.phase in {PaymentPhase.NEW, PaymentPhase.SENDING}:
            work[payment_id] = state
    for payment_id, state in stored.items():
        # Unfinished from earlier passes: a lost answer is always settled; a derived payment
        # is sent even though its drop is not seen again; a reported one only while the
        # source still reports it (a payment the source took back is not sent).
        if payment_id in work or payment_id in grouped:
            continue
        if state.phase is PaymentPhase.SENDING or (
            state.phase is PaymentPhase.NEW and state.derived
        ):
            work[payment_id] = state
    # A drop waits while a credit note or payment the source reported on one of its invoices
    # is parked for a person (`resolve --payment`), whichever pass parked it: the drop may be
    # that very money (`drop_waits`). Within a pass, the forwarder holds drops back the same
    # way for what is still new or in flight.
    current = {**stored, **{state.payment_id: state for state in writes}}
    parked = {
        invoice
        for state in current.values()
        if not state.derived and state.phase is PaymentPhase.NEEDS_REVIEW
        for invoice in state.invoices
    }
    ready = [state for state in work.values() if not drop_waits(state, parked)]
    return PaymentPlan(writes, ready, waiting=len(work) - len(ready))


def _seen_again(
    existing: PaymentState, parts: Sequence[Payment], fingerprint: str, *, now: datetime
) -> PaymentState:
    """A known payment read again: a change before it is sent is taken, after it is shown."""
    if existing.fingerprint == fingerprint:
        return existing
    if existing.phase is PaymentPhase.NEW:
        return replace(
            existing,
            lines=_lines(parts),
            fingerprint=fingerprint,
            paid_on=parts[0].paid_on,
            updated_at=now,
        )
    if existing.phase in {PaymentPhase.SENT, PaymentPhase.SENDING}:
        return replace(
            existing,
            fingerprint=fingerprint,
            updated_at=now,
            note=(
                f"{CHANGED_AFTER_SENT} (now {_describe(parts)}); "
                "Kravia keeps what was sent: check it there"
            ),
        )
    return existing


def _lines(parts: Sequence[Payment]) -> tuple[PaymentLine, ...]:
    amounts: dict[str, Decimal] = {}
    for part in parts:
        amounts[part.accounting_invoice_id] = (
            amounts.get(part.accounting_invoice_id, Decimal(0)) + part.amount
        )
    return tuple(PaymentLine(aid, amount) for aid, amount in amounts.items())


def _describe(parts: Sequence[Payment]) -> str:
    return ", ".join(f"{p.amount} on {p.accounting_invoice_id}" for p in parts)


def _first_seen(
    parts: Sequence[Payment],
    fingerprint: str,
    *,
    source: str,
    rule: PayoutRule,
    now: datetime,
) -> PaymentState:
    first = parts[0]
    derived = first.payment_id.startswith(DERIVED_PREFIX)
    phase = PaymentPhase.NEW
    notes: list[str] = []
    lines = _lines(parts)
    payout = next((why for p in parts if (why := rule.matches(p)) is not None), None)
    # Whether a line is netted (its invoice registered by us after the payment was seen, for
    # what was owed then) is decided when its case is in Kravia: a case Kravia already had
    # (adopted after lost state) was registered for more, and the payment is sent.
    if payout is not None and not derived:
        phase = PaymentPhase.PAYOUT
        notes.append(f"Kravia's own payout ({payout} matches the payout rule): not sent back")
    return PaymentState(
        source=source,
        payment_id=first.payment_id,
        kind=first.kind,
        paid_on=first.paid_on,
        lines=lines,
        phase=phase,
        fingerprint=fingerprint,
        first_seen_at=now,
        updated_at=now,
        description=first.description,
        derived=derived,
        note="; ".join(notes) or None,
    )


def explain_by_payouts(
    drop: Decimal, *, collected: Decimal, accounted: Decimal
) -> tuple[Decimal, Decimal]:
    """How much of an amount drop Kravia's own payouts explain, and the payouts accounted
    for afterwards. `collected`: what Kravia reports it collected on the case in all;
    `accounted`: what earlier drops already took of that."""
    available = max(Decimal(0), collected - accounted)
    explained = min(drop, available)
    return explained, accounted + explained
