"""The payment forwarder: Kravia's payouts when case details list no payments, and lines netted
because their case was registered again after the payment was first seen."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx

from kravia_sync.engine.forwarding import PaymentForwarder
from kravia_sync.engine.payment_sizing import DropSizing, net_late_registers
from kravia_sync.kravia.answers import CaseStanding, MoneyLine, Settlement
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.payments import (
    Payment,
    PaymentPhase,
    PaymentState,
    PayoutRule,
    derived_payment,
    plan_payments,
)
from kravia_sync.state.store import StateStore

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


class SettlementsOnly(KraviaClient):
    """A client whose only answer is a fixed list of settlements (no HTTP)."""

    def __init__(self, settlements: list[Settlement]) -> None:
        super().__init__(base_url="http://127.0.0.1:9/", token="t")  # noqa: S106
        self.answer = settlements
        self.asked = 0

    async def settlements(self, *, exclude_closed: bool = True) -> list[Settlement]:
        assert exclude_closed is False  # every payout on the case counts, booked or not
        self.asked += 1
        return self.answer


def case(aid: str, kravia_id: int) -> CaseState:
    return CaseState(
        accounting_invoice_id=aid,
        source="erp",
        record_key=aid,
        invoice_number=aid,
        phase=Phase.STARTED,
        fingerprint="f",
        record_hash="h",
        has_document=False,
        first_seen_at=NOW,
        updated_at=NOW,
        kravia_id=kravia_id,
        amount=Decimal("600.00"),
    )


def test_without_payments_in_the_details_settlements_explain_a_drop(tmp_path: Path) -> None:
    """Kravia paid out 300.00 on case 77 (and 50.00 on another); the source's amount dropped
    by 400.00: only 100.00 is the debtor's own payment, and the payout is accounted once."""
    drop = derived_payment("A-1", Decimal("1000.00"), Decimal("600.00"), on=date(2026, 11, 27))
    state = plan_payments([("k", drop)], {}, source="erp", rule=PayoutRule(), now=NOW)
    client = SettlementsOnly(
        [
            Settlement(1, None, Decimal("300.00"), [MoneyLine(77, Decimal("300.00"))], booked=True),
            Settlement(2, None, Decimal("50.00"), [MoneyLine(78, Decimal("50.00"))], booked=False),
        ]
    )
    with StateStore(tmp_path / "state.db") as store:
        sizing = DropSizing(store, client, clock=lambda: NOW)
        unknown = CaseStanding(None, Decimal("700.00"), None, None, None)
        lines, updates, notes = asyncio.run(
            sizing.explain(state.writes[0], {"A-1": case("A-1", 77)}, {"A-1": unknown})
        )
        again, _, _ = asyncio.run(
            sizing.explain(
                state.writes[0],
                {"A-1": replace(case("A-1", 77), payouts_accounted=Decimal("300.00"))},
                {"A-1": unknown},
            )
        )

    assert [line.amount for line in lines] == [Decimal("100.00")]
    assert [u.payouts_accounted for u in updates] == [Decimal("300.00")]
    assert "300.00 of the drop" in notes[0]
    assert [line.amount for line in again] == [Decimal("400.00")]  # that payout is used up
    assert client.asked == 1  # read once per forwarding run


def test_a_line_registered_again_after_the_payment_was_seen_is_netted(tmp_path: Path) -> None:
    """The register's answer was lost when the payment was first seen; the lookup found no
    case and it was registered again, with the amount of then (already without the payment):
    that line is netted, the other is still sent."""
    seen = NOW
    parts = [
        (
            "a",
            Payment.from_record(
                {"payment_id": "P", "date": "2026-11-20", "amount": "300", "invoice_number": "A-1"}
            ),
        ),
        (
            "b",
            Payment.from_record(
                {"payment_id": "P", "date": "2026-11-20", "amount": "200", "invoice_number": "A-2"}
            ),
        ),
    ]
    state = plan_payments(parts, {}, source="erp", rule=PayoutRule(), now=seen).writes[0]
    again = replace(case("A-1", 77), registered_at=seen + timedelta(minutes=3))
    before = replace(case("A-2", 78), registered_at=seen - timedelta(days=2))
    kept = net_late_registers(state, {"A-1": again, "A-2": before}, now=NOW)
    alone = net_late_registers(replace(state, lines=state.lines[:1]), {"A-1": again}, now=NOW)

    assert [line.accounting_invoice_id for line in kept.lines] == ["A-2"]
    assert "netted 300.00 on A-1" in (kept.note or "")
    assert alone.phase.value == "netted"


class Kravia:
    """Case details and payment answers from the test, over httpx's MockTransport."""

    def __init__(self, details: dict[str, object], *, lose_payments: bool = False) -> None:
        self.details = details
        self.lose_payments = lose_payments
        self.payments = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/details"):
            return httpx.Response(200, json=self.details)
        if request.url.path.endswith("/payment"):
            self.payments += 1
            if self.lose_payments:
                raise httpx.ReadTimeout("lost", request=request)
            return httpx.Response(200, json={})
        return httpx.Response(404)

    def client(self) -> KraviaClient:
        return KraviaClient(
            base_url="https://kravia.test/api/v2/",
            token="t",  # noqa: S106
            transport=httpx.MockTransport(self.handle),
        )


def forward(store: StateStore, kravia: Kravia, payment: PaymentState) -> PaymentState:
    forwarder = PaymentForwarder(
        store,
        kravia.client(),
        clock=lambda: NOW,
        settle=timedelta(0),
        retry_in=lambda _: timedelta(0),
        run_id=None,
    )
    asyncio.run(forwarder.forward([payment]))
    return store.load_payments(payment.source, [payment.payment_id])[payment.payment_id]


def lost_then_read(
    store: StateStore, kravia: Kravia, payment: PaymentState, details: dict[str, object]
) -> tuple[PaymentState, PaymentState]:
    """The payment sent with its answer lost, then verified against these case details: the
    payment after each."""
    sending = forward(store, kravia, payment)
    kravia.details = details
    return sending, forward(store, kravia, sending)


def stored_drop(store: StateStore) -> PaymentState:
    store.write_batch([case("A-1", 77)], [])
    drop = derived_payment("A-1", Decimal("1000.00"), Decimal("600.00"), on=date(2026, 11, 27))
    (state,) = plan_payments([("k", drop)], {}, source="erp", rule=PayoutRule(), now=NOW).writes
    store.write_payments([state])
    return state


class TestMoneyReadFailClosed:
    def test_money_of_an_unknown_type_on_the_case_is_never_echoed(self, tmp_path: Path) -> None:
        """Kravia lists 400.00 of a type we do not know on the case (a payout by another
        name?): the amount drop it may explain is parked for a person, nothing is sent."""
        kravia = Kravia(
            {
                "status": "CollectionStarted",
                "remainingAmount": 600,
                "payments": [{"type": "Utbetaling", "amount": 400, "date": "2026-11-20"}],
            }
        )
        with StateStore(tmp_path / "state.db") as store:
            after = forward(store, kravia, stored_drop(store))

        assert after.phase is PaymentPhase.NEEDS_REVIEW
        assert "type we do not know" in (after.note or "")
        assert kravia.payments == 0

    def test_a_lost_payment_whose_case_lists_nothing_but_lost_capital_is_not_resent(
        self, tmp_path: Path
    ) -> None:
        """The answer to a payment is lost; the case lists no payments but its capital fell
        by the amount: that is no proof it did not arrive (a list Kravia does not fill in),
        so a person decides; the drop is not sent again on the capital alone."""
        kravia = Kravia({"remainingAmount": 1000, "payments": []}, lose_payments=True)
        with StateStore(tmp_path / "state.db") as store:
            sending, after = lost_then_read(
                store, kravia, stored_drop(store), {"remainingAmount": 600, "payments": []}
            )

        assert sending.phase is PaymentPhase.SENDING
        assert after.phase is PaymentPhase.NEEDS_REVIEW
        assert "resolve --payment" in (after.note or "")
        assert kravia.payments == 1

    def test_a_lost_drop_not_there_while_another_moved_the_capital_is_sent_again(
        self, tmp_path: Path
    ) -> None:
        """Seeds 2102 and 2381 of the engine model: the drop 1000 → 600 was lost; meanwhile a
        later drop (600 → 450) reached Kravia, so the capital moved and the details cannot
        tell. Sent again, limited to the capital above what is owed: 1000 - 150 - 450 = 400,
        the whole drop, and Kravia ends at the 450 owed."""
        kravia = Kravia({"remainingAmount": 1000, "payments": []}, lose_payments=True)
        with StateStore(tmp_path / "state.db") as store:
            sending = forward(store, kravia, stored_drop(store))
            store.write_batch([replace(case("A-1", 77), amount=Decimal("450.00"))], [])
            kravia.details = {
                "remainingAmount": 850,
                "payments": [
                    {"type": "Payment", "accountingPaymentId": "ks-drop-later", "amount": 150}
                ],
            }
            kravia.lose_payments = False
            after = forward(store, kravia, sending)

        assert after.phase is PaymentPhase.SENT
        assert [line.sent for line in after.lines] == [Decimal("400.00")]
        assert kravia.payments == 2

    def test_a_lost_payment_record_that_cannot_be_told_goes_to_a_person(
        self, tmp_path: Path
    ) -> None:
        """A payment the source reports as a record (not an amount drop) has no owed amount
        to be limited by: when the details cannot tell, a person decides."""
        kravia = Kravia({"remainingAmount": 1000, "payments": []}, lose_payments=True)
        with StateStore(tmp_path / "state.db") as store:
            store.write_batch([case("A-1", 77)], [])
            record = Payment.from_record(
                {
                    "payment_id": "P-1",
                    "accounting_invoice_id": "A-1",
                    "amount": "400.00",
                    "date": "2026-11-20",
                },
                id_prefix="",
            )
            (state,) = plan_payments(
                [("k", record)], {}, source="erp", rule=PayoutRule(), now=NOW
            ).writes
            store.write_payments([state])
            sending, after = lost_then_read(
                store, kravia, state, {"remainingAmount": 600, "payments": []}
            )

        assert sending.phase is PaymentPhase.SENDING
        assert after.phase is PaymentPhase.NEEDS_REVIEW
        assert "resolve --payment" in (after.note or "")
        assert kravia.payments == 1

    def test_a_lost_payment_that_left_the_capital_untouched_is_sent_again(
        self, tmp_path: Path
    ) -> None:
        """Not listed and the capital what it was before it was sent: it did not arrive, so
        it is sent again (and arrives once)."""
        kravia = Kravia({"remainingAmount": 1000, "payments": []}, lose_payments=True)
        with StateStore(tmp_path / "state.db") as store:
            sending = forward(store, kravia, stored_drop(store))
            kravia.lose_payments = False
            after = forward(store, kravia, sending)

        assert after.phase is PaymentPhase.SENT
        assert kravia.payments == 2
