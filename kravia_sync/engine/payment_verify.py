"""After a payment's answer was lost: did it reach Kravia? Read back, never sent on a guess.

`PaymentVerifier` reads the details of each case the payment was sent to and decides with
`kravia_sync.payments.payment_arrived`: sent, to be sent again (Kravia lists the case's
payments but not this one), or for a person to look at. Until Kravia's clock is past the
payment's settle time, an answer that may still land is waited for. Before a payment is
sent, `already_listed` marks one Kravia lists already as sent (our record of sending it was
lost).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime

import structlog

from kravia_sync.engine.payment_journal import kravia_id_of, payment_journal
from kravia_sync.kravia.answers import CaseStanding, case_standing, payment_recorded
from kravia_sync.kravia.answers import PaymentKind as RecordedKind
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.lifecycle import CaseState
from kravia_sync.payments import (
    LineEvidence,
    PaymentKind,
    PaymentPhase,
    PaymentState,
    payment_arrived,
)
from kravia_sync.state.records import JournalKind
from kravia_sync.state.store import StateStore

__all__ = ["PaymentVerifier"]

log = structlog.get_logger("kravia_sync.engine.forwarding")


class PaymentVerifier:
    """Settles payments whose answer was lost, writing each outcome with its journal line."""

    def __init__(
        self,
        store: StateStore,
        client: KraviaClient,
        *,
        clock: Callable[[], datetime],
        run_id: int | None,
    ) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self.run_id = run_id

    def already_listed(
        self, payment: PaymentState, standings: Mapping[str, CaseStanding]
    ) -> PaymentState | None:
        """A payment Kravia already lists (our record of sending it was lost: a state store
        restored from an older copy) is marked sent, never sent again."""
        kind = RecordedKind.CREDIT_NOTE if payment.kind is PaymentKind.CREDIT_NOTE else None
        kind = kind or RecordedKind.PAYMENT
        listed = [
            aid
            for aid, standing in standings.items()
            if payment_recorded(standing, payment.payment_id, kind=kind) is True
        ]
        if not listed:
            return None
        sent = replace(
            payment,
            phase=PaymentPhase.SENT,
            updated_at=self.clock(),
            note=(
                f"Kravia already lists {payment.payment_id} on {', '.join(listed)}: not sent "
                "again (the record of sending it was not in the state store)"
            ),
        )
        log.warning("payment already in Kravia", payment_id=payment.payment_id)
        self.store.write_payments([sent], [])
        return sent

    async def verify(self, payment: PaymentState, cases: Mapping[str, CaseState]) -> PaymentState:
        """After a lost answer: did the payment reach the cases it was sent to (the lines that
        carried an amount)? See `payment_arrived`: never a second payment on a guess. An
        amount drop that Kravia does not list where it lists the case's payments, though the
        capital moved, is sent again: limited to what Kravia's capital holds above what the
        source says is owed, a drop that did arrive sends nothing."""
        attempt_id = uuid.uuid4().hex
        started = time.monotonic()
        kind = (
            RecordedKind.CREDIT_NOTE
            if payment.kind is PaymentKind.CREDIT_NOTE
            else RecordedKind.PAYMENT
        )
        evidence: list[LineEvidence] = []
        # Whether every case it was sent to lists payments of ours by their ids (so Kravia
        # does fill the list in), and this one on none of them.
        listed_elsewhere = True
        for line in payment.lines:
            if line.sent is not None and line.sent <= 0:
                continue  # not in the body: Kravia cannot list it there
            standing = case_standing(await self.client.details(kravia_id_of(cases, line)))
            recorded_here = payment_recorded(standing, payment.payment_id, kind=kind)
            evidence.append(
                LineEvidence(recorded_here, standing.remaining_capital, line.left_before)
            )
            listed_elsewhere = (
                listed_elsewhere
                and recorded_here is False
                and any(p.accounting_payment_id for p in standing.payments or ())
            )
        recorded = payment_arrived(evidence)
        listed_elsewhere = listed_elsewhere and bool(evidence)
        now = self.clock()
        if recorded is not True and not self._past_settle(payment):
            return payment  # it may still land: decided at a later pass, on Kravia's clock
        if recorded is True:
            after = replace(
                payment,
                phase=PaymentPhase.SENT,
                pending_attempt=None,
                pending_since=None,
                updated_at=now,
            )
        elif recorded is False or (payment.derived and listed_elsewhere):
            after = replace(
                payment,
                phase=PaymentPhase.NEW,
                pending_attempt=None,
                pending_since=None,
                updated_at=now,
                note=(
                    "the answer was lost and Kravia does not list the payment: sending again"
                    if recorded is False
                    # Not listed, but the capital moved (another payment since): an amount drop
                    # is limited to what Kravia's capital holds above what the source says is
                    # owed, read afresh, so one that did arrive after all sends nothing.
                    else "the answer was lost; Kravia lists the case's payments but not this "
                    "one, and its capital moved since: sent again, limited to what is still "
                    "owed (nothing, if it did arrive)"
                ),
            )
        else:
            after = replace(
                payment,
                phase=PaymentPhase.NEEDS_REVIEW,
                updated_at=now,
                note=(
                    "the answer was lost and Kravia's case details do not show whether it "
                    f"arrived: check in Kravia whether {payment.payment_id} is there, then "
                    f"kravia-sync resolve --payment {payment.payment_id} --as sent (or --as new "
                    "to send it again)"
                ),
            )
        self.store.write_payments(
            [after],
            [
                payment_journal(
                    after,
                    "payment_verify",
                    attempt_id,
                    JournalKind.OUTCOME,
                    outcome="ok",
                    status=200,
                    started=started,
                    message=f"recorded: {recorded}",
                    at=self.clock(),
                    run_id=self.run_id,
                )
            ],
        )
        return after

    def _past_settle(self, payment: PaymentState) -> bool:
        """Whether a sent payment whose answer was lost has had the settle time to land
        (Kravia's clock, read from the details just fetched, is past its `settle_after`)."""
        kravia_now = self.client.kravia_now()
        if payment.settle_after is None or kravia_now is None:
            return True  # nothing to wait for, or no Kravia clock: the host's settle applies
        return kravia_now >= payment.settle_after
