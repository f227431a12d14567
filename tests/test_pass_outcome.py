"""How a pass ends and what it reports (pure): the pending work that makes it `attention`
(exit 3), and the money tally."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from rich.console import Console

from kravia_sync.cli.summary import exit_code, print_summary
from kravia_sync.engine.forwarding import tally_money
from kravia_sync.engine.outcome import PENDING_KINDS, finished_status, pending_work
from kravia_sync.engine.summary import MoneyOutcome, MoneyTally, RunStatus, RunSummary
from kravia_sync.payments import PaymentKind, PaymentLine, PaymentPhase, PaymentState

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

# Every kind of work a pass can leave pending, by the count that says so.
PENDING = {
    # cases and records
    "invalid": "a record quarantined as invalid",
    "rejected": "a case Kravia rejected",
    "needs_review": "a case parked for review",
    "errors": "a case that failed unexpectedly",
    "deferred": "a case deferred to a later pass",
    # payments and credit notes
    "payments_deferred": "a payment whose case could not be read",
    "payments_to_retry": "a payment Kravia failed for now",
    "payments_sending": "a payment whose answer was lost",
    "payments_waiting_for_credit_note": "a drop waiting for a credit note",
    "payments_needs_review": "a payment parked for review",
    "payments_changed_after_sent": "a payment changed after it was sent",
    # holds
    "held_not_paused": "a held case still collecting in Kravia",
    "hold_action_deferred": "a hold action for a later pass",
    "hold_action_failed": "a hold action refused or lost",
    # notes for a person
    "gone_unexplained": "a case gone from the source that Kravia still collects",
    "duplicated_in_kravia": "an invoice Kravia holds twice",
    "noted_changes": "a change to make in Kravia by hand",
}
# Counted, but nothing a later pass or a person must do.
NOT_PENDING = [
    "read",
    "unchanged",
    "registered",
    "started",
    "waiting",
    "held",
    "awaiting_approval",
    "payments_new",
    "payments_sent",
    "payments_netted",
    "payments_payout",
    "payments_nothing_left",
    "gone_settled",
    "gone_notes_cleared",
]


def finished(counts: dict[str, int], problems: list[dict[str, str]] | None = None) -> RunSummary:
    summary = RunSummary(run_id=1, started_at=T0, counts=Counter(counts))
    summary.problems = problems or []
    summary.status = finished_status(summary.status, summary.counts, summary.problems)
    return summary


class TestPendingWork:
    def test_the_one_place_knows_every_kind(self):
        """The kinds of pending work are exactly these counts (a new kind is added here too)."""
        assert {kind.count for kind in PENDING_KINDS} == set(PENDING)

    @pytest.mark.parametrize("count", sorted(PENDING))
    def test_each_kind_ends_the_run_with_attention_and_exit_3(self, count):
        """Any one kind of pending work, alone: status attention, exit 3, named as pending."""
        summary = finished({count: 1, "read": 5, "started": 4})

        assert summary.status is RunStatus.ATTENTION
        assert exit_code(summary) == 3
        assert summary.as_dict()["pending"] == {count: 1}

    @pytest.mark.parametrize("count", NOT_PENDING)
    def test_what_is_not_pending_ends_the_run_done(self, count):
        """Waiting on the policy, a hold, an approval or an invoice: done, exit 0."""
        summary = finished({count: 3})

        assert summary.status is RunStatus.DONE
        assert exit_code(summary) == 0
        assert summary.as_dict()["pending"] == {}

    def test_a_problem_alone_needs_attention(self):
        summary = finished({}, [{"source": "s", "record": "r", "field": "f", "reason": "x"}])

        assert summary.status is RunStatus.ATTENTION
        assert exit_code(summary) == 3

    @pytest.mark.parametrize(("status", "code"), [(RunStatus.FAILED, 1), (RunStatus.STOPPED, 1)])
    def test_a_failed_or_stopped_run_stays_so_whatever_is_pending(self, status, code):
        summary = RunSummary(run_id=1, started_at=T0, status=status, counts=Counter(deferred=2))

        summary.status = finished_status(summary.status, summary.counts, [])

        assert summary.status is status
        assert exit_code(summary) == code

    def test_pending_work_keeps_the_order_of_the_kinds(self):
        found = pending_work(Counter(gone_unexplained=1, invalid=2, payments_deferred=0))

        assert [(kind.count, count) for kind, count in found] == [
            ("invalid", 2),
            ("gone_unexplained", 1),
        ]


def money(
    payment_id: str,
    *lines: PaymentLine,
    phase: PaymentPhase = PaymentPhase.SENT,
    kind: PaymentKind = PaymentKind.PAYMENT,
) -> PaymentState:
    return PaymentState(
        source="erp",
        payment_id=payment_id,
        kind=kind,
        paid_on=date(2026, 11, 20),
        lines=lines,
        phase=phase,
        fingerprint="p" * 32,
        first_seen_at=T0,
        updated_at=T0,
    )


def line(sent: str, left: str | None, amount: str | None = None, aid: str = "A-1") -> PaymentLine:
    return PaymentLine(
        aid,
        Decimal(amount or sent),
        sent=Decimal(sent),
        left_before=None if left is None else Decimal(left),
    )


class TestMoneyTally:
    def test_each_outcome_is_counted_and_summed_as_exact_strings(self):
        tally = MoneyTally()
        tally_money(money("P-1", line("300.00", "900.00")), tally)
        tally_money(money("P-2", line("80.00", "80.00", amount="100.00")), tally)
        tally_money(money("CN-1", line("200.00", "500.00"), kind=PaymentKind.CREDIT_NOTE), tally)
        tally_money(
            money("P-3", line("0.00", "0.00", amount="50.00"), phase=PaymentPhase.NOTHING_LEFT),
            tally,
        )
        retried = replace(money("P-4", line("0", None, amount="70.10")), phase=PaymentPhase.NEW)
        tally_money(replace(retried, attempts=1), tally)
        tally_money(replace(retried, payment_id="P-5"), tally)  # never tried: waits, not counted

        shown = tally.as_dict()

        assert shown["payments_sent"] == {"count": 2, "asked": "400.00", "sent": "380.00"}
        assert shown["credit_notes_sent"] == {"count": 1, "asked": "200.00", "sent": "200.00"}
        assert shown["nothing_left"] == {"count": 1, "asked": "50.00", "sent": "0.00"}
        assert shown["deferred"] == {"count": 1, "asked": "70.10", "sent": "0.00"}
        assert tally.log_fields() == {
            "payments_sent_nok": "380.00",
            "credit_notes_sent_nok": "200.00",
            "nothing_left_asked_nok": "50.00",
            "deferred_asked_nok": "70.10",
        }

    def test_the_summary_table_shows_the_money_and_what_is_pending(self):
        summary = finished({"payments_read": 2, "payments_deferred": 1})
        summary.money.add(MoneyOutcome.PAYMENTS_SENT, asked=Decimal(1500), sent=Decimal(1500))
        summary.money.add(MoneyOutcome.CLAMPED, asked=Decimal("1234.5"), sent=Decimal(1000))
        summary.money.add(MoneyOutcome.DEFERRED, asked=Decimal(300))
        console = Console(record=True, width=160)

        print_summary(summary, console)

        text = console.export_text()
        rows = {row.split("│")[1].strip(): row for row in text.splitlines() if "│" in row}
        assert "NOK" in text.splitlines()[2]
        assert "1,500.00" in rows["payments sent to Kravia"]
        assert "1,000.00 of 1,234.50 asked" in rows["clamped to the capital Kravia had left"]
        assert "300.00" in rows["payments and credit notes left for a later pass"]
        pending = "payments and credit notes deferred: Kravia's case could not be read"
        assert f"{pending} (for a later pass)" in text
