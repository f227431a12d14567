"""Tests of the payment rules (`kravia_sync.payments`): pure, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from kravia_sync.errors import InvalidRecordError
from kravia_sync.payments import (
    DERIVED_PREFIX,
    Payment,
    PaymentKind,
    PaymentLine,
    PaymentPhase,
    PaymentStep,
    PayoutRule,
    clamp_lines,
    derived_payment,
    drop_waits,
    explain_by_payouts,
    is_credit_note_record,
    limit_to_owed,
    next_payment_step,
    plan_payments,
)

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
RULE = PayoutRule(payers=frozenset({"kravia as"}), references=("kravia utbetaling",))


def payment(number: str = "10001", **changes: object) -> Payment:
    fields: dict[str, object] = {
        "payment_id": "P-1",
        "date": "2026-11-20",
        "amount": "500,00",
        "invoice_number": number,
    }
    fields.update(changes)
    return Payment.from_record({k: v for k, v in fields.items() if v is not None})


class TestRecord:
    def test_valid_record(self):
        made = payment(kind="Kreditnota", amount="-250.50", description="rabatt")

        assert made.kind is PaymentKind.CREDIT_NOTE
        assert made.amount == Decimal("250.50")  # the size counts; credit notes come negative
        assert made.paid_on == date(2026, 11, 20)
        assert made.accounting_invoice_id == "10001"

    def test_id_prefix_applies_to_both_ids(self):
        made = Payment.from_record(
            {"payment_id": "7", "date": "20.11.2026", "amount": 10, "invoice_number": "9"},
            id_prefix="shop-",
        )

        assert (made.payment_id, made.accounting_invoice_id) == ("shop-7", "shop-9")

    @pytest.mark.parametrize(
        ("changes", "field", "reason"),
        [
            ({"payment_id": " "}, "payment_id", "required"),
            ({"amount": None}, "amount", "required"),
            ({"amount": "0"}, "amount", "zero"),
            ({"amount": "1.234"}, "amount", "two decimals"),
            ({"date": "31.02.2026"}, "date", "not a real date"),
            ({"kind": "refund"}, "kind", "neither payment nor credit_note"),
            ({"invoice_number": None}, "invoice_number", "must name the invoice"),
            ({"amount_paid": "5"}, "amount_paid", "unknown field"),
        ],
    )
    def test_bad_record_names_the_field(self, changes, field, reason):
        with pytest.raises(InvalidRecordError) as info:
            payment(**changes)

        assert info.value.field == field
        assert reason in info.value.reason


class TestSigns:
    def test_a_negative_payment_is_refused(self):
        """A reversal exported as a negative payment must not become a positive one."""
        with pytest.raises(InvalidRecordError) as info:
            payment(amount="-500.00")

        assert info.value.field == "amount"
        assert "negative" in info.value.reason


class TestDerived:
    def test_the_same_drop_again_later_is_a_new_payment(self):
        """1000 → 800, back to 1000 by a correction, then 800 again: two payments."""
        first = derived_payment("A-1", Decimal(1000), Decimal(800), on=date(2026, 11, 1))
        again = derived_payment(
            "A-1", Decimal(1000), Decimal(800), on=date(2026, 11, 9), since="2026-11-05T10:00"
        )

        assert first.payment_id != again.payment_id

    def test_same_drop_same_id(self):
        first = derived_payment("A-1", Decimal("1000.00"), Decimal("600.00"), on=date(2026, 11, 1))
        again = derived_payment("A-1", Decimal("1000.00"), Decimal("600.00"), on=date(2026, 12, 1))
        other = derived_payment("A-1", Decimal("600.00"), Decimal("100.00"), on=date(2026, 12, 1))

        assert first.payment_id == again.payment_id != other.payment_id
        assert first.payment_id.startswith(DERIVED_PREFIX)
        assert first.amount == Decimal("400.00")

    def test_a_rise_is_not_a_drop(self):
        with pytest.raises(ValueError, match="not a drop"):
            derived_payment("A-1", Decimal(10), Decimal(10), on=date(2026, 11, 1))


class TestLimitToOwed:
    def test_a_drop_is_limited_to_what_kravia_holds_above_what_is_owed(self):
        """Store saw 1000 → 500 (a drop of 500), but Kravia's capital is 900: only 400 was
        paid since Kravia last heard; an unknown capital or amount leaves a line as it is."""
        lines = (
            PaymentLine("A-1", Decimal("500.00")),
            PaymentLine("A-2", Decimal("100.00")),
            PaymentLine("A-3", Decimal("70.00")),
        )

        limited, notes = limit_to_owed(
            lines,
            {"A-1": Decimal("900.00"), "A-2": Decimal("400.00"), "A-3": None},
            {"A-1": Decimal("500.00"), "A-2": Decimal("300.00"), "A-3": Decimal(0)},
        )

        assert [line.amount for line in limited] == [
            Decimal("400.00"),
            Decimal("100.00"),
            Decimal("70.00"),
        ]
        assert len(notes) == 1
        assert "A-1: 500.00 limited to 400.00" in notes[0]

    def test_nothing_is_sent_when_kravia_already_holds_what_is_owed(self):
        limited, notes = limit_to_owed(
            (PaymentLine("A-1", Decimal("50.00")),), {"A-1": Decimal(300)}, {"A-1": Decimal(300)}
        )

        assert limited[0].amount == 0
        assert notes


class TestClampAndPayouts:
    def test_clamped_to_the_capital_left(self):
        lines = (PaymentLine("A-1", Decimal("500.00")), PaymentLine("A-2", Decimal("300.00")))

        clamped, notes = clamp_lines(lines, {"A-1": Decimal("200.00"), "A-2": None})

        assert [line.sent for line in clamped] == [Decimal("200.00"), Decimal("300.00")]
        assert len(notes) == 1
        assert "A-1: 500.00 clamped to 200.00" in notes[0]

    def test_nothing_left(self):
        clamped, _ = clamp_lines((PaymentLine("A-1", Decimal(5)),), {"A-1": Decimal(0)})

        assert clamped[0].sent == 0

    @pytest.mark.parametrize(
        ("drop", "collected", "accounted", "explained", "after"),
        [
            (Decimal(300), Decimal(300), Decimal(0), Decimal(300), Decimal(300)),
            (Decimal(500), Decimal(300), Decimal(0), Decimal(300), Decimal(300)),
            (Decimal(300), Decimal(300), Decimal(300), Decimal(0), Decimal(300)),
            (Decimal(100), Decimal(0), Decimal(0), Decimal(0), Decimal(0)),
        ],
    )
    def test_payouts_explain_a_drop_once(self, drop, collected, accounted, explained, after):
        assert explain_by_payouts(drop, collected=collected, accounted=accounted) == (
            explained,
            after,
        )


class TestPlan:
    def test_new_payment_for_a_sent_invoice_is_to_send(self):
        plan = plan_payments([("p.csv:2", payment())], {}, source="erp", rule=RULE, now=NOW)

        (state,) = plan.writes
        assert state.phase is PaymentPhase.NEW
        assert plan.work == [state]
        assert state.lines == (PaymentLine("10001", Decimal("500.00")),)

    def test_netting_waits_until_the_invoice_is_in_kravia(self):
        """A payment for an invoice not (known to be) in Kravia yet is kept, whole, until its
        case is there: if we register it later, for what is owed then, the forwarder nets it
        (registered after the payment was seen); if Kravia already had it (a lost state
        store), it was registered for more and the payment is sent."""
        parts = [("a", payment("10001", amount="300")), ("b", payment("10002", amount="200"))]

        plan = plan_payments(parts, {}, source="erp", rule=RULE, now=NOW)

        (state,) = plan.writes
        assert state.phase is PaymentPhase.NEW
        assert state.lines == (
            PaymentLine("10001", Decimal("300.00")),
            PaymentLine("10002", Decimal("200.00")),
        )
        assert plan.work == [state]

    @pytest.mark.parametrize(
        "changes", [{"payer": "KRAVIA AS"}, {"reference": "Kravia utbetaling 2026-11"}]
    )
    def test_kravia_payout_is_never_sent_back(self, changes):
        plan = plan_payments([("k", payment(**changes))], {}, source="erp", rule=RULE, now=NOW)

        assert plan.writes[0].phase is PaymentPhase.PAYOUT
        assert plan.work == []

    def test_one_payment_over_two_invoices_is_one_payment(self):
        parts = [("a", payment("10001", amount="100")), ("b", payment("10002", amount="50"))]

        plan = plan_payments(parts, {}, source="erp", rule=RULE, now=NOW)

        (state,) = plan.writes
        assert [(line.accounting_invoice_id, line.amount) for line in state.lines] == [
            ("10001", Decimal("100.00")),
            ("10002", Decimal("50.00")),
        ]

    def test_seen_again_unchanged_writes_nothing(self):
        first = plan_payments([("k", payment())], {}, source="erp", rule=RULE, now=NOW)
        sent = replace(first.writes[0], phase=PaymentPhase.SENT)

        again = plan_payments([("k", payment())], {"P-1": sent}, source="erp", rule=RULE, now=NOW)

        assert again.writes == []
        assert again.work == []

    def test_changed_after_sent_is_shown_not_resent(self):
        first = plan_payments([("k", payment())], {}, source="erp", rule=RULE, now=NOW)
        sent = replace(first.writes[0], phase=PaymentPhase.SENT)

        again = plan_payments(
            [("k", payment(amount="600"))],
            {"P-1": sent},
            source="erp",
            rule=RULE,
            now=NOW,
        )

        (state,) = again.writes
        assert state.phase is PaymentPhase.SENT
        assert "changed in the source after it was sent" in (state.note or "")
        assert again.work == []

    def test_a_drop_waits_while_a_credit_note_on_its_invoice_is_parked_for_a_person(self):
        """A credit note parked for review in an earlier pass holds back an amount drop of the
        same invoice (the drop may be that very money): the drop is left for a later pass,
        counted as waiting, not lost; once the credit note is settled the drop goes."""
        drop = derived_payment("10001", Decimal(900), Decimal(400), on=date(2026, 11, 21))
        note = payment(
            payment_id="CN-1",
            kind="credit_note",
            invoice_number=None,
            accounting_invoice_id="10001",
            amount="-500",
        )
        parked = replace(
            plan_payments([("k", note)], {}, source="erp", rule=RULE, now=NOW).writes[0],
            phase=PaymentPhase.NEEDS_REVIEW,
        )
        other = replace(parked, payment_id="CN-2", lines=())

        held = plan_payments([("d", drop)], {"CN-1": parked}, source="erp", rule=RULE, now=NOW)
        free = plan_payments([("d", drop)], {"CN-2": other}, source="erp", rule=RULE, now=NOW)
        settled = replace(parked, phase=PaymentPhase.SENT)
        after = plan_payments(
            [],
            {"CN-1": settled, **{s.payment_id: s for s in held.writes}},
            source="erp",
            rule=RULE,
            now=NOW,
        )

        assert "10001" in parked.invoices
        assert held.work == []
        assert held.waiting == 1
        assert [s.payment_id for s in held.writes] == [drop.payment_id]  # stored, not lost
        assert [s.payment_id for s in free.work] == [drop.payment_id]
        assert free.waiting == 0
        assert [s.payment_id for s in after.work] == [drop.payment_id]

    def test_unfinished_from_earlier_passes(self):
        """A lost answer is always settled; a derived payment is sent though its drop is not
        seen again; a reported payment the source no longer has is not sent."""
        derived = plan_payments(
            [("k", derived_payment("10001", Decimal(9), Decimal(4), on=date(2026, 11, 1)))],
            {},
            source="erp",
            rule=RULE,
            now=NOW,
        ).writes[0]
        reported = plan_payments([("k", payment())], {}, source="erp", rule=RULE, now=NOW).writes[0]
        sending = replace(reported, payment_id="P-2", phase=PaymentPhase.SENDING)
        stored = {s.payment_id: s for s in (derived, reported, sending)}

        plan = plan_payments([], stored, source="erp", rule=RULE, now=NOW)

        assert {s.payment_id for s in plan.work} == {derived.payment_id, "P-2"}
        assert derived.derived


class TestNextStep:
    def state(self, **changes: object):
        made = plan_payments([("k", payment())], {}, source="erp", rule=RULE, now=NOW).writes[0]
        return replace(made, **changes)  # type: ignore[arg-type]

    def test_waits_for_the_invoice_to_be_in_kravia(self):
        decision = next_payment_step(
            self.state(), in_kravia={"10001": None}, now=NOW, settle=timedelta(minutes=2)
        )

        assert decision.step is PaymentStep.NONE
        assert "waiting for 10001" in decision.reason

    def test_send_once_in_kravia(self):
        decision = next_payment_step(
            self.state(), in_kravia={"10001": 77}, now=NOW, settle=timedelta(minutes=2)
        )

        assert decision.step is PaymentStep.SEND

    def test_lost_answer_verified_after_settling(self):
        sending = self.state(phase=PaymentPhase.SENDING, pending_since=NOW)

        early = next_payment_step(
            sending, in_kravia={"10001": 77}, now=NOW, settle=timedelta(minutes=2)
        )
        later = next_payment_step(
            sending,
            in_kravia={"10001": 77},
            now=NOW + timedelta(minutes=3),
            settle=timedelta(minutes=2),
        )

        assert early.step is PaymentStep.WAIT
        assert later.step is PaymentStep.VERIFY

    @pytest.mark.parametrize(
        "phase",
        [PaymentPhase.SENT, PaymentPhase.NETTED, PaymentPhase.PAYOUT, PaymentPhase.NEEDS_REVIEW],
    )
    def test_final_phases_rest(self, phase):
        decision = next_payment_step(
            self.state(phase=phase), in_kravia={"10001": 77}, now=NOW, settle=timedelta(0)
        )

        assert decision.step is PaymentStep.NONE


class TestDropsAndCreditNotes:
    def drop(self, aid: str = "10001") -> object:
        made = derived_payment(aid, Decimal(1000), Decimal(700), on=date(2026, 11, 20))
        return plan_payments([("k", made)], {}, source="erp", rule=RULE, now=NOW).writes[0]

    def test_a_drop_waits_while_a_credit_note_on_its_invoice_is_unsettled(self):
        """The drop may be that very credit note: it is sized only after the credit note."""
        assert drop_waits(self.drop(), {"10001"})  # type: ignore[arg-type]
        assert not drop_waits(self.drop(), {"10002"})  # type: ignore[arg-type]
        assert not drop_waits(self.drop(), set())  # type: ignore[arg-type]

    def test_a_reported_payment_never_waits(self):
        reported = plan_payments([("k", payment())], {}, source="erp", rule=RULE, now=NOW)
        assert not drop_waits(reported.writes[0], {"10001"})

    def test_credit_note_records_are_told_apart(self):
        assert is_credit_note_record({"kind": "Kreditnota"})
        assert is_credit_note_record({"kind": "credit-note"})
        assert not is_credit_note_record({"kind": "payment"})
        assert not is_credit_note_record({})
        assert not is_credit_note_record({"kind": "refund"})
