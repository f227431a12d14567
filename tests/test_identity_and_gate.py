"""Pure judgements before a call: does Kravia already have the invoice (`identity`), may the
step be sent now (`gate`), and did a payment whose answer was lost arrive (`payments`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from kravia_sync.documents import FileDocument
from kravia_sync.engine.gate import RefusalKind, ineligibility, judge
from kravia_sync.identity import Absent, Adopt, KnownCase, Several, Unknown, identity_verdict
from kravia_sync.lifecycle import CaseState, Phase, StartPolicy, Step
from kravia_sync.model import Invoice
from kravia_sync.payments import LineEvidence, payment_arrived
from kravia_sync.settings import PolicySettings

TODAY = date(2026, 6, 1)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def verdict(
    *known: KnownCase, aid: str = "A-7", number: str = "7", fallback: str = "A-7"
) -> object:
    return identity_verdict(aid, number, fallback_id=fallback, known=known)


class TestIdentityVerdict:
    def test_nothing_known_is_absent(self):
        """No case with this id or number: register."""
        assert verdict() == Absent()

    def test_one_case_with_the_id_is_adopted(self):
        """Exactly one case with this accountingInvoiceId is this invoice's."""
        assert verdict(KnownCase(5, "A-7", "7")) == Adopt(5)

    def test_the_same_case_reported_twice_is_still_one(self):
        """A case seen in two searches (overlapping windows) counts once."""
        assert verdict(KnownCase(5, "A-7", "7"), KnownCase(5, "A-7", "7")) == Adopt(5)

    def test_several_cases_with_the_id_go_to_a_person(self):
        """Two cases with one id: a person chooses, never a guess."""
        assert verdict(KnownCase(6, "A-7", "7"), KnownCase(5, "A-7", "7")) == Several((5, 6))

    def test_a_case_with_the_number_and_no_readable_id_is_unknown(self):
        """Kravia lists a case with this invoice number but no accountingInvoiceId: it may be
        this invoice, so it is unknown, never absent."""
        found = verdict(KnownCase(9, None, "7"))

        assert isinstance(found, Unknown)
        assert found.kravia_ids == (9,)
        assert "--as kravia:<id>" in found.reason

    def test_a_case_registered_under_the_invoice_number_before_the_id_appeared(self):
        """The source had no id for the invoice (its number was used) and has one now: the
        case under the number may be this invoice."""
        found = verdict(KnownCase(4, "L-7", "7"), aid="L-INV-77", fallback="L-7")

        assert isinstance(found, Unknown)

    def test_another_sources_invoice_with_the_same_number_is_not_this_one(self):
        """Two sources (two prefixes) may both have invoice 7: the other's case is no match."""
        assert verdict(KnownCase(3, "B-7", "7"), aid="A-7", fallback="A-7") == Absent()


def invoice(
    *, due: date = TODAY - timedelta(days=30), amount: str = "100.00", document=None
) -> Invoice:
    return Invoice.from_record(
        {
            "invoice_number": "7",
            "invoice_date": (due - timedelta(days=10)).isoformat(),
            "due_date": due.isoformat(),
            "amount": amount,
            "debtor_name": "Kari",
            "address_line1": "Gata 1",
            "postal_code": "0150",
            "city": "Oslo",
        },
        document=document,
    )


def case(phase: Phase, *, has_document: bool = False, approved: bool = False) -> CaseState:
    return CaseState(
        accounting_invoice_id="7",
        source="s",
        record_key="k",
        invoice_number="7",
        phase=phase,
        fingerprint="f",
        record_hash="h",
        has_document=has_document,
        first_seen_at=NOW,
        updated_at=NOW,
        kravia_id=None if phase is Phase.NEW else 1,
        approved_at=NOW if approved else None,
        revision=1,
    )


def gate(step: Step, stored: CaseState | None, found: Invoice | None, **options: object):
    policy = options.pop("policy", PolicySettings())
    return judge(
        step,
        stored,
        found,
        policy=policy,
        today=TODAY,
        hold=options.pop("hold", None),
        copy_problem=options.pop("copy_problem", lambda: None),
    )


class TestGate:
    @pytest.mark.parametrize("step", [Step.REGISTER, Step.UPLOAD, Step.START])
    def test_an_eligible_invoice_passes(self, step):
        """In the source, not held, overdue enough, copy fine: every sending step may go."""
        stored = case(Phase.DOCUMENTED if step is Step.START else Phase.REGISTERED)
        found = invoice(document=FileDocument("7.pdf")) if step is Step.UPLOAD else invoice()
        assert gate(step, stored, found) is None

    def test_no_upload_without_a_copy_in_the_source(self):
        """A copy that left the source is never uploaded (no empty copy)."""
        refusal = gate(Step.UPLOAD, case(Phase.REGISTERED, has_document=True), invoice())

        assert refusal is not None
        assert (refusal.kind, refusal.field) == (RefusalKind.INVALID, "document")

    @pytest.mark.parametrize("step", [Step.LOOKUP, Step.VERIFY_START, Step.VERIFY_ADOPTED])
    def test_settling_steps_are_never_refused(self, step):
        """Settling a lost answer sends nothing: held or gone, it is always allowed."""
        assert gate(step, case(Phase.STARTING), None, hold="disputed") is None

    @pytest.mark.parametrize(
        ("options", "kind", "field"),
        [
            ({"hold": "disputed"}, RefusalKind.HELD, "hold"),
            ({"found": invoice(due=TODAY - timedelta(days=3))}, RefusalKind.WAITING, "due_date"),
            ({"found": invoice(due=TODAY + timedelta(days=3))}, RefusalKind.WAITING, "due_date"),
            ({"found": invoice(amount="0")}, RefusalKind.WAITING, "amount"),
            (
                {
                    "found": invoice(amount="50.00"),
                    "policy": PolicySettings(min_amount=Decimal(100)),
                },
                RefusalKind.WAITING,
                "amount",
            ),
            ({"found": None}, RefusalKind.GONE, "invoice"),
        ],
    )
    @pytest.mark.parametrize("step", [Step.REGISTER, Step.UPLOAD, Step.START])
    def test_refusals_name_their_reason(self, step, options, kind, field):
        """Held, not overdue enough, paid, below the minimum or gone from the source: refused
        at every sending step, with the field the reason is about."""
        options = dict(options)
        found = options.pop("found", invoice())
        stored = case(Phase.DOCUMENTED if step is Step.START else Phase.REGISTERED)

        refusal = gate(step, stored, found, **options)

        assert refusal is not None
        assert (refusal.kind, refusal.field) == (kind, field)

    def test_a_bad_copy_stops_register_and_upload_not_a_start(self):
        """The copy is checked before it would be sent (register, upload); once uploaded a
        Start needs no second look."""
        with_copy = invoice(document=FileDocument("7.pdf"))

        def bad() -> str:
            return "7.pdf is not a PDF"

        for step in (Step.REGISTER, Step.UPLOAD):
            refusal = gate(step, case(Phase.REGISTERED), with_copy, copy_problem=bad)
            assert refusal is not None
            assert refusal.kind is RefusalKind.INVALID
        assert gate(Step.START, case(Phase.DOCUMENTED), with_copy, copy_problem=bad) is None

    def test_no_start_before_the_copy_is_uploaded(self):
        """An invoice with a copy is not started while its case has no copy in Kravia."""
        with_copy = invoice(document=FileDocument("7.pdf"))

        refusal = gate(Step.START, case(Phase.REGISTERED), with_copy)

        assert refusal is not None
        assert refusal.field == "document"

    def test_manual_start_needs_an_approval(self):
        """With start = manual a Start waits for an approval; approved, it goes."""
        manual = PolicySettings(start=StartPolicy.MANUAL)

        refused = gate(Step.START, case(Phase.DOCUMENTED), invoice(), policy=manual)
        approved = gate(Step.START, case(Phase.DOCUMENTED, approved=True), invoice(), policy=manual)

        assert refused is not None
        assert refused.kind is RefusalKind.APPROVAL
        assert approved is None

    def test_a_due_date_at_the_end_of_the_calendar_does_not_overflow(self):
        """The policy's date arithmetic never raises, whatever the due date (9999-12-31 is
        refused earlier by the model; this is the last line of defence)."""
        late = Invoice.model_construct(
            invoice_number="7",
            accounting_invoice_id="7",
            due_date=date(9999, 12, 31),
            amount=Decimal(1),
        )

        reason = ineligibility(late, PolicySettings(), TODAY)

        assert reason is not None
        assert "never" in reason


class TestPaymentArrived:
    def test_listed_on_any_case_arrived(self):
        """Kravia lists the payment on one of its cases: it arrived."""
        assert payment_arrived(
            [
                LineEvidence(recorded=None, left_now=None, left_before=None),
                LineEvidence(recorded=True, left_now=None, left_before=None),
            ]
        )

    def test_not_listed_and_capital_untouched_did_not_arrive(self):
        """No case lists it and every case's capital is what it was before: not arrived."""
        evidence = [LineEvidence(recorded=False, left_now=Decimal(500), left_before=Decimal(500))]

        assert payment_arrived(evidence) is False

    @pytest.mark.parametrize(
        "evidence",
        [
            [
                LineEvidence(recorded=False, left_now=Decimal(300), left_before=Decimal(500))
            ],  # the capital moved
            [
                LineEvidence(recorded=False, left_now=None, left_before=Decimal(500))
            ],  # capital not reported now
            [
                LineEvidence(recorded=False, left_now=Decimal(500), left_before=None)
            ],  # not known from before
            [
                LineEvidence(recorded=None, left_now=Decimal(500), left_before=Decimal(500))
            ],  # no readable list
            [],
        ],
    )
    def test_anything_less_is_unknown(self, evidence):
        """An empty list with a capital that moved, or anything unreadable, is no proof: a
        person decides, never a second payment on a guess."""
        assert payment_arrived(evidence) is None
