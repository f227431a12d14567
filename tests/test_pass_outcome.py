"""How a pass ends and what it reports (pure): the pending work that makes it `attention`
(exit 3), the rules that explain a case gone from the source, and the money tally. Then the
state store's side of clearing a note: conditional, journaled, once."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from kravia_sync.cli.summary import exit_code, print_summary
from kravia_sync.engine.forwarding import tally_money
from kravia_sync.engine.gone import gone_explained, gone_note, is_gone_note
from kravia_sync.engine.outcome import PENDING_KINDS, finished_status, pending_work
from kravia_sync.engine.summary import MoneyOutcome, MoneyTally, RunStatus, RunSummary
from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.payments import PaymentKind, PaymentLine, PaymentPhase, PaymentState
from kravia_sync.state.records import JournalEntry, JournalKind
from kravia_sync.state.store import StateStore

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
        assert summary.as_dict()["attention"] == {count: 1}

    @pytest.mark.parametrize("count", NOT_PENDING)
    def test_what_is_not_pending_ends_the_run_done(self, count):
        """Waiting on the policy, a hold, an approval or an invoice: done, exit 0."""
        summary = finished({count: 3})

        assert summary.status is RunStatus.DONE
        assert exit_code(summary) == 0
        assert summary.as_dict()["attention"] == {}

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


def case(**changes: object) -> CaseState:
    values: dict[str, object] = {
        "accounting_invoice_id": "A-1",
        "source": "erp",
        "record_key": "invoices.csv:1",
        "invoice_number": "1",
        "phase": Phase.STARTED,
        "fingerprint": "f" * 32,
        "record_hash": "h" * 32,
        "has_document": False,
        "first_seen_at": T0,
        "updated_at": T0,
        "kravia_id": 501,
        "amount": Decimal("1000.00"),
    }
    return CaseState(**{**values, **changes})  # type: ignore[arg-type]


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


class TestGoneExplained:
    def test_kravia_reporting_the_case_closed_explains_it(self):
        assert gone_explained(case(kravia_status="Closed"), []) == "Kravia reports the case Closed"

    def test_kravia_reporting_nothing_left_explains_it(self):
        why = gone_explained(case(kravia_remaining=Decimal("0.00")), [])

        assert why == "Kravia reports nothing left to collect"

    def test_an_open_case_with_capital_left_and_nothing_forwarded_is_not_explained(self):
        gone = case(kravia_status="CollectionStarted", kravia_remaining=Decimal("1000.00"))

        assert gone_explained(gone, []) is None

    def test_a_payment_for_all_the_capital_kravia_had_left_explains_it(self):
        """Kravia's own figure, read just before the send: nothing is left after it, even
        though it is less than the amount registered (Kravia collected some itself)."""
        paid = money("P-1", line("400.00", "400.00"))

        why = gone_explained(case(amount_floor=Decimal("900.00")), [paid])

        assert why == "payment P-1 left Kravia nothing to collect (400.00 of the 400.00 left)"

    def test_a_credit_note_finding_nothing_left_explains_it(self):
        credited = money(
            "CN-1",
            line("0.00", "0.00", amount="50.00"),
            phase=PaymentPhase.NOTHING_LEFT,
            kind=PaymentKind.CREDIT_NOTE,
        )

        assert "credit note CN-1 left Kravia nothing" in (gone_explained(case(), [credited]) or "")

    def test_partial_payments_that_leave_capital_do_not_explain_it(self):
        partial = [money("P-1", line("300.00", "1000.00")), money("P-2", line("300.00", "700.00"))]

        assert gone_explained(case(), partial) is None

    def test_without_kravias_capital_the_sum_must_cover_the_registered_amount(self):
        """Where Kravia's capital was not read, the payments forwarded are summed against the
        amount the case was registered with."""
        short = [money("P-1", line("600.00", None)), money("P-2", line("399.99", None))]
        enough = [*short, money("P-3", line("0.01", None))]

        assert gone_explained(case(), short) is None
        assert gone_explained(case(), enough) == (
            "payments and credit notes forwarded (1000.00) cover the 1000.00 it was sent with"
        )

    def test_the_sum_is_not_trusted_once_the_amount_changed_after_it_was_sent(self):
        """With an amount floor the amount registered is not known: no guess from the sum."""
        paid = [money("P-1", line("1000.00", None))]

        assert gone_explained(case(amount_floor=Decimal("1000.00")), paid) is None

    @pytest.mark.parametrize(
        "phase", [PaymentPhase.SENDING, PaymentPhase.NEW, PaymentPhase.NEEDS_REVIEW]
    )
    def test_money_not_known_to_be_in_kravia_explains_nothing(self, phase):
        unsure = money("P-1", line("1000.00", "1000.00"), phase=phase)

        assert gone_explained(case(), [unsure]) is None

    def test_a_line_on_another_invoice_explains_nothing(self):
        elsewhere = money("P-1", line("1000.00", "1000.00", aid="A-2"))

        assert gone_explained(case(), [elsewhere]) is None

    def test_the_note_is_recognised_whatever_capital_it_names(self):
        assert is_gone_note(gone_note(case()))
        assert is_gone_note(gone_note(case(kravia_remaining=Decimal("12.00"))))
        assert "(12.00 left)" in gone_note(case(kravia_remaining=Decimal("12.00")))
        assert not is_gone_note("on hold (disputed) but already in Kravia: pause it in Kravia")
        assert not is_gone_note(None)


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


def cleared_entry(aid: str) -> JournalEntry:
    return JournalEntry(
        attempt_id=f"clear-{aid}",
        kind=JournalKind.DECISION,
        operation="note_cleared",
        accounting_invoice_id=aid,
        at=T0,
        message="Kravia reports the case Closed; cleared the note",
    )


class TestClearingNotesInTheStore:
    def test_a_note_is_cleared_only_while_it_is_the_one_judged_and_journaled_once(
        self, tmp_path: Path
    ):
        """The note as it was judged is cleared with its journal entry; a note changed since
        is left alone; clearing again does nothing and journals nothing."""
        note = gone_note(case())
        with StateStore(tmp_path / "state.db") as store:
            store.write_batch(
                [
                    case(attention=note),
                    case(accounting_invoice_id="A-2", invoice_number="2", attention="other"),
                ],
                [],
            )
            clearings = [("A-1", note, cleared_entry("A-1")), ("A-2", note, cleared_entry("A-2"))]

            first = store.clear_case_notes(clearings, now=T0)
            again = store.clear_case_notes(clearings, now=T0)

            assert first == ["A-1"]
            assert again == []
            cases = store.load_cases("erp")
            assert cases["A-1"].attention is None
            assert cases["A-2"].attention == "other"
            assert [e["operation"] for e in store.journal_for("A-1")] == ["note_cleared"]
            assert store.journal_for("A-2") == []
            assert [c.accounting_invoice_id for c in store.cases_noted("no longer in")] == []

    def test_payments_on_finds_the_money_forwarded_for_each_invoice(self, tmp_path: Path):
        split = money("P-1", line("100.00", "900.00"), line("50.00", "50.00", aid="A-2"))
        pending = money("P-2", line("10.00", "10.00"), phase=PaymentPhase.SENDING)
        with StateStore(tmp_path / "state.db") as store:
            store.write_payments([split, pending])

            found = store.payments_on(["A-1", "A-2", "A-3"], [PaymentPhase.SENT])

        assert {aid: [p.payment_id for p in found[aid]] for aid in found} == {
            "A-1": ["P-1"],
            "A-2": ["P-1"],
        }
