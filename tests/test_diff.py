"""Tests of the source diff (`kravia_sync.engine.diff`): one read against the stored cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from kravia_sync.connector import RecordError, SourceRecord
from kravia_sync.documents import CallableDocument, CopyRead
from kravia_sync.engine.diff import SETTLING_PHASES, Lookup, SourceDiff
from kravia_sync.engine.gate import RefusalKind
from kravia_sync.engine.plan import Change, record_hash, source_id
from kravia_sync.lifecycle import CaseState, CaseSummary, Phase
from kravia_sync.model import Invoice
from kravia_sync.settings import PolicySettings, SourceConfig
from kravia_sync.testing import minimal_pdf

NOW = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
TODAY = NOW.date()
SOURCE = SourceConfig(name="erp", connector="folder", id_prefix="E-")
POLICY = PolicySettings(min_days_overdue=14, min_amount=Decimal(100))


def fields(number: str = "20003", **changes: Any) -> dict[str, Any]:
    """A flat record of an invoice due 30 days before NOW; None removes a field."""
    values: dict[str, Any] = {
        "invoice_number": number,
        "invoice_date": (TODAY - timedelta(days=60)).isoformat(),
        "due_date": (TODAY - timedelta(days=30)).isoformat(),
        "amount": "2250",
        "debtor_name": "John Doe",
        "address_line1": "Karl Johan Gate",
        "postal_code": "1000",
        "city": "Oslo",
    }
    values.update(changes)
    return {key: value for key, value in values.items() if value is not None}


def rec(number: str = "20003", *, key: str | None = None, document: bool = False, **changes: Any):
    return SourceRecord(
        key=key or f"invoices.csv:{number}",
        fields=fields(number, **changes),
        document=CallableDocument(f"{number}.pdf", minimal_pdf) if document else None,
    )


def stored(record: SourceRecord, phase: Phase, **changes: Any) -> CaseState:
    """The case the store holds for `record` (as it was when last seen), in `phase`."""
    invoice = Invoice.from_record(record.fields, id_prefix=SOURCE.id_prefix)
    values: dict[str, Any] = {
        "accounting_invoice_id": invoice.accounting_invoice_id,
        "source": SOURCE.name,
        "record_key": record.key,
        "invoice_number": invoice.invoice_number,
        "phase": phase,
        "fingerprint": invoice.fingerprint(),
        "record_hash": record_hash(record),
        "has_document": record.document is not None,
        "first_seen_at": NOW - timedelta(days=3),
        "updated_at": NOW - timedelta(days=3),
        "amount": invoice.amount,
    }
    if phase not in {Phase.NEW, Phase.REGISTERING, Phase.REJECTED}:
        values["kravia_id"] = 9001
    values.update(changes)
    return CaseState(**values)


def run(
    *records: SourceRecord | RecordError,
    known: list[CaseState] = (),  # type: ignore[assignment]
    owners: dict[str, str] | None = None,
    check_document: Any = None,
    policy: PolicySettings = POLICY,
    kravia_has: Any = None,
) -> SourceDiff:
    cases = {case.accounting_invoice_id: case for case in known}
    summaries = {
        aid: CaseSummary(case.record_hash, case.phase, case.source) for aid, case in cases.items()
    }
    for aid, owner in (owners or {}).items():  # ids another source holds
        if owner != SOURCE.name:
            summaries[aid] = CaseSummary("other", Phase.STARTED, owner)
    diff = SourceDiff(
        SOURCE, policy=policy, now=NOW, check_document=check_document, kravia_has=kravia_has
    )
    first_keys: dict[str, str] = {}
    for record in records:
        aid = (
            source_id(record.fields, SOURCE.id_prefix) if isinstance(record, SourceRecord) else None
        )
        if aid is None:
            diff.add(record)
            continue
        diff.add(record, Lookup(aid, summaries.get(aid), first_keys.get(aid)))
        first_keys.setdefault(aid, record.key)
    unseen = [case for aid, case in cases.items() if aid not in first_keys]
    diff.finish(
        lambda ids: {aid: cases[aid] for aid in ids if aid in cases},
        gone=len(unseen),
        gone_settling=[case for case in unseen if case.phase in SETTLING_PHASES],
    )
    return diff


class TestNew:
    def test_new_overdue_invoice(self):
        """A valid, overdue, unknown invoice becomes a NEW work item with its invoice."""
        diff = run(rec())

        (item,) = diff.work
        assert item.change is Change.NEW
        assert item.case.phase is Phase.NEW
        assert item.case.accounting_invoice_id == "E-20003"
        assert item.case.source == "erp"
        assert item.case.record_key == "invoices.csv:20003"
        assert item.case.first_seen_at == NOW
        assert item.invoice is not None
        assert item.invoice.amount == Decimal(2250)
        assert item.case.fingerprint == item.invoice.fingerprint()
        assert diff.quarantine == {}
        assert diff.updates == []  # written with its first intent, not by the diff
        assert diff.counts["read"] == 1
        assert diff.counts["new"] == 1

    def test_document_recorded(self):
        """A record with a copy of the invoice gives a case that has a document."""
        (item,) = run(rec(document=True)).work

        assert item.case.has_document is True
        assert item.invoice is not None
        assert item.invoice.document is not None

    def test_exactly_min_days_overdue(self):
        """An invoice exactly min_days_overdue past due may go."""
        due = (TODAY - timedelta(days=14)).isoformat()

        assert len(run(rec(due_date=due)).work) == 1


class TestWaiting:
    @pytest.mark.parametrize("days_overdue", [13, 0, -10])
    def test_not_yet_overdue_enough(self, days_overdue):
        """An invoice not yet min_days_overdue past due waits, naming due_date and the day."""
        due = TODAY - timedelta(days=days_overdue)

        diff = run(rec(due_date=due.isoformat()))

        assert diff.work == []
        entry = diff.quarantine["invoices.csv:20003"]
        assert entry.kind == "waiting"
        assert entry.field == "due_date"
        assert (due + timedelta(days=14)).isoformat() in entry.reason
        assert entry.accounting_invoice_id == "E-20003"
        assert entry.invoice_number == "20003"
        assert diff.counts["waiting"] == 1
        assert diff.rejections.problems() == []  # waiting is not a problem

    def test_below_min_amount(self):
        """An invoice below min_amount waits, naming amount."""
        diff = run(rec(amount="99,99"))

        assert diff.work == []
        entry = diff.quarantine["invoices.csv:20003"]
        assert (entry.kind, entry.field) == ("waiting", "amount")
        assert "min_amount" in entry.reason


class TestKeptOutYetInKravia:
    """An invoice the gate keeps out is still driven when Kravia may hold its case (the
    store is older than the register, or lost): the driver adopts it, sending nothing."""

    def test_a_new_invoice_kept_out_that_kravia_holds_is_driven_to_be_adopted(self):
        asked: list[tuple[str, CaseState | None]] = []

        def kravia_has(invoice: Invoice, case: CaseState | None) -> bool:
            asked.append((invoice.accounting_invoice_id, case))
            return True

        diff = run(rec(amount="0"), kravia_has=kravia_has)

        (item,) = diff.work
        assert item.kept_out is not None
        assert item.kept_out.kind is RefusalKind.WAITING
        assert not item.copy_checked  # the driver reads the copy again before any call
        assert (item.case.phase, item.change) == (Phase.NEW, Change.NEW)
        assert diff.quarantine["invoices.csv:20003"].kind == "waiting"
        assert diff.counts["waiting"] == 1  # reported once, not once per look
        assert asked == [("E-20003", None)]  # a new invoice: Kravia is asked once, without a case

    def test_a_stored_new_case_kept_out_that_kravia_holds_is_driven(self):
        record = rec()
        case = stored(record, Phase.NEW)

        asked: list[CaseState | None] = []

        def kravia_has(invoice: Invoice, known: CaseState | None) -> bool:
            asked.append(known)
            return True

        diff = run(rec(amount="0"), known=[case], kravia_has=kravia_has)

        (item,) = diff.work
        assert item.kept_out is not None
        assert item.case.accounting_invoice_id == "E-20003"
        # Asked with the stored case, so the Kravia ids a person ruled out stay ruled out.
        assert [(c.accounting_invoice_id, c.phase) for c in asked if c] == [("E-20003", Phase.NEW)]

    def test_kept_out_and_not_in_kravia_is_not_driven(self):
        diff = run(rec(amount="0"), kravia_has=lambda _invoice, _case: False)

        assert diff.work == []
        assert diff.counts["waiting"] == 1

    def test_only_a_case_never_registered_is_driven_for_adoption(self):
        """A registered case the gate keeps out (its Start) is not Kravia's case to adopt:
        it is ours already."""
        record = rec()
        case = stored(record, Phase.REGISTERED)

        diff = run(rec(amount="0"), known=[case], kravia_has=lambda _invoice, _case: True)

        assert diff.work == []
        assert diff.quarantine["invoices.csv:20003"].kind == "waiting"


class TestInvalid:
    def test_invalid_record(self):
        """A record that fails validation is quarantined as invalid naming the field."""
        diff = run(rec(postal_code="12"), rec("20004"))

        assert [item.case.accounting_invoice_id for item in diff.work] == ["E-20004"]
        entry = diff.quarantine["invoices.csv:20003"]
        assert (entry.kind, entry.field) == ("invalid", "postal_code")
        assert entry.accounting_invoice_id == "E-20003"
        assert entry.invoice_number == "20003"
        assert diff.counts["invalid"] == 1
        assert diff.rejections.problems() == [
            {
                "source": "erp",
                "record": "invoices.csv:20003",
                "field": "postal_code",
                "reason": entry.reason,
            }
        ]

    def test_record_error(self):
        """A RecordError from the connector is quarantined as it came."""
        diff = run(RecordError("broken.csv", "file", "not valid UTF-8"))

        entry = diff.quarantine["broken.csv"]
        assert (entry.kind, entry.field, entry.reason) == ("invalid", "file", "not valid UTF-8")
        assert diff.work == []
        assert diff.counts["read"] == 1
        assert diff.counts["invalid"] == 1

    def test_document_problem(self):
        """A copy that check_document rejects quarantines the new invoice, naming document."""
        checked: list[str] = []

        def check(invoice: Invoice) -> CopyRead:
            checked.append(invoice.accounting_invoice_id)
            return CopyRead("20003.pdf is not a PDF")

        diff = run(rec(document=True), rec("20004"), check_document=check)

        assert checked == ["E-20003"]  # only invoices with a copy are checked
        entry = diff.quarantine["invoices.csv:20003"]
        assert (entry.kind, entry.field, entry.reason) == (
            "invalid",
            "document",
            "20003.pdf is not a PDF",
        )
        assert [item.case.accounting_invoice_id for item in diff.work] == ["E-20004"]

    def test_document_ok(self):
        """A copy that check_document accepts lets the invoice through, and its item carries
        the copy as read, for the upload."""
        copy = minimal_pdf("20003")
        diff = run(rec(document=True), check_document=lambda _invoice: CopyRead(None, copy))

        (item,) = diff.work
        assert item.copy_checked
        assert item.copy == copy
        assert diff.quarantine == {}


class TestIdentity:
    def test_duplicate_ids_both_quarantined(self):
        """Two records with one accountingInvoiceId: both quarantined, neither becomes work."""
        diff = run(
            rec("20003", key="a.csv:2"),
            rec("20003", key="b.csv:7", amount="990"),
        )

        assert diff.work == []
        assert set(diff.quarantine) == {"a.csv:2", "b.csv:7"}
        for entry in diff.quarantine.values():
            assert (entry.kind, entry.field) == ("invalid", "accounting_invoice_id")
            assert "a.csv:2" in entry.reason
            assert "b.csv:7" in entry.reason
        assert diff.counts["new"] == 0
        assert diff.counts["invalid"] == 2

    def test_duplicate_via_accounting_invoice_id(self):
        """Different invoice numbers sharing an explicit accounting_invoice_id are duplicates."""
        diff = run(
            rec("1", accounting_invoice_id="X"),
            rec("2", accounting_invoice_id="X"),
            rec("3", accounting_invoice_id="X"),
        )

        assert diff.work == []
        assert set(diff.quarantine) == {"invoices.csv:1", "invoices.csv:2", "invoices.csv:3"}

    def test_id_owned_by_another_source(self):
        """An accountingInvoiceId that belongs to another source's case is quarantined."""
        diff = run(rec(), owners={"E-20003": "shop"})

        assert diff.work == []
        entry = diff.quarantine["invoices.csv:20003"]
        assert (entry.kind, entry.field) == ("invalid", "accounting_invoice_id")
        assert "'shop'" in entry.reason
        assert "id_prefix" in entry.reason

    def test_own_id_not_a_conflict(self):
        """An id this source already owns is not a conflict."""
        diff = run(rec(), owners={"E-20003": "erp"})

        assert len(diff.work) == 1

    def test_blank_accounting_id_matches_known_case(self):
        """A blank accounting_invoice_id falls back to the invoice number, also for matching."""
        started = stored(rec(), Phase.STARTED)

        diff = run(rec(accounting_invoice_id="   "), known=[started])

        assert [item.change for item in diff.work] == []
        assert diff.counts["gone"] == 0


class TestKnownCases:
    def test_unchanged_finished_case_not_validated(self):
        """A finished case whose raw record is byte-for-byte the same is not even validated."""
        broken = rec(postal_code="12", amount="lots")  # would fail validation
        started = replace(stored(rec(), Phase.STARTED), record_hash=record_hash(broken))

        diff = run(broken, known=[started])

        assert diff.counts["unchanged"] == 1
        assert diff.work == []
        assert diff.quarantine == {}
        assert diff.updates == []
        assert diff.counts["gone"] == 0

    @pytest.mark.parametrize("phase", [Phase.REJECTED, Phase.NEEDS_REVIEW])
    def test_unchanged_attention_case_counted(self, phase):
        """An unchanged case needing attention is counted by its phase and not worked on."""
        record = rec()

        diff = run(record, known=[stored(record, phase)])

        assert diff.counts["unchanged"] == 1
        assert diff.counts[phase.value] == 1
        assert diff.work == []

    def test_started_case_changed(self):
        """A started case whose record changed is counted changed and updated, never re-sent."""
        old = rec()
        started = stored(old, Phase.STARTED)
        new = rec(amount="2300")

        diff = run(new, known=[started])

        assert diff.counts["changed"] == 1
        assert diff.work == []
        (update,) = diff.updates
        assert update.phase is Phase.STARTED
        assert update.kravia_id == 9001
        assert update.fingerprint == Invoice.from_record(new.fields, id_prefix="E-").fingerprint()
        assert update.fingerprint != started.fingerprint
        assert update.record_hash == record_hash(new)
        assert update.changed_at == NOW

    def test_started_case_new_hash_same_invoice(self):
        """A started case whose raw record changed but not its invoice is unchanged."""
        started = stored(rec(), Phase.STARTED)
        reformatted = rec(invoice_number=20003, amount="2 250")  # same invoice, other text
        assert record_hash(reformatted) != started.record_hash

        diff = run(reformatted, known=[started])

        assert diff.counts["unchanged"] == 1
        assert diff.counts["changed"] == 0
        assert diff.work == []
        (update,) = diff.updates  # only the new raw hash is remembered
        assert update.record_hash == record_hash(reformatted)
        assert update.fingerprint == started.fingerprint

    def test_rejected_case_changed_retried(self):
        """A rejected case whose record changed is registered again (RETRY)."""
        rejected = stored(rec(), Phase.REJECTED, attempts=2, last_error="400")

        diff = run(rec(debtor_name="John A. Doe"), known=[rejected])

        (item,) = diff.work
        assert item.change is Change.RETRY
        assert item.case.phase is Phase.NEW
        assert item.case.attempts == 0
        assert item.invoice is not None
        assert item.invoice.debtor.name == "John A. Doe"
        assert diff.updates == [item.case]
        assert diff.counts["retry"] == 1

    def test_rejected_case_changed_is_retried_when_the_policy_allows(self):
        """A changed rejected case is retried, through the same policy gate as a new one:
        eligible, it is work; not yet due enough, it waits (quarantined as waiting)."""
        rejected = stored(rec(), Phase.REJECTED)
        recent = (TODAY - timedelta(days=3)).isoformat()

        retried = run(rec(amount="1200.00"), known=[rejected])
        waiting = run(rec(due_date=recent), known=[rejected])

        assert [item.change for item in retried.work] == [Change.RETRY]
        assert waiting.work == []
        assert [entry.kind for entry in waiting.quarantine.values()] == ["waiting"]

    def test_pending_case_resumed(self):
        """A known case not finished yet is work again (PENDING), with its invoice."""
        record = rec()
        registered = stored(record, Phase.REGISTERED)

        diff = run(record, known=[registered])

        (item,) = diff.work
        assert item.change is Change.PENDING
        assert item.case == registered
        assert item.invoice is not None
        assert diff.updates == []


class TestAddChunk:
    """`add_chunk`: records in read order with what the state store singled out."""

    def test_quiet_record_only_counted(self):
        """An id the store did not single out is unchanged and quiet: not even validated."""
        broken = rec("20003", postal_code="12", amount="lots")
        fresh = rec("20004")
        diff = SourceDiff(SOURCE, policy=POLICY, now=NOW)
        records = [broken, fresh]
        identities = [diff.identify(record) for record in records]

        diff.add_chunk(records, identities, {"E-20004": None}, [None, None])
        diff.finish(lambda _ids: {})

        assert diff.counts["unchanged"] == 1
        assert diff.counts["read"] == 2
        assert diff.quarantine == {}
        assert [item.case.accounting_invoice_id for item in diff.work] == ["E-20004"]

    def test_singled_out_record_assessed_with_its_summary(self):
        """A record the store singled out (here: changed since) is validated and assessed."""
        record = rec("20003", amount="2300")
        case = stored(rec("20003"), Phase.STARTED)
        diff = SourceDiff(SOURCE, policy=POLICY, now=NOW)
        identity = diff.identify(record)
        assert identity is not None
        summary = CaseSummary(case.record_hash, case.phase, case.source)

        diff.add_chunk([record], [identity], {"E-20003": summary}, [None])
        diff.finish(lambda ids: {"E-20003": case} if "E-20003" in ids else {})

        assert diff.counts["changed"] == 1
        assert diff.updates[0].record_hash == identity[1]

    def test_repeat_of_quiet_id_quarantined(self):
        """A second record with a quiet case's id is a duplicate, even though the first
        record needed no look."""
        first, second = rec("20003"), rec("20003", key="other.csv:20003")
        diff = SourceDiff(SOURCE, policy=POLICY, now=NOW)
        records = [first, second]

        diff.add_chunk(
            records, [diff.identify(r) for r in records], {}, [None, "invoices.csv:20003"]
        )

        assert diff.counts["unchanged"] == 1
        assert list(diff.quarantine) == ["other.csv:20003"]
        assert "used by both" in diff.quarantine["other.csv:20003"].reason

    def test_record_errors_and_records_without_id_pass_through(self):
        """Records without an identity are added one by one and quarantined."""
        error = RecordError("bad.csv", "file", "not valid CSV")
        nameless = rec("20003", invoice_number=None, key="x.csv:2")
        diff = SourceDiff(SOURCE, policy=POLICY, now=NOW)
        records = [error, nameless]
        identities = [diff.identify(r) for r in records]
        assert identities == [None, None]

        diff.add_chunk(records, identities, {}, [])

        assert sorted(diff.quarantine) == ["bad.csv", "x.csv:2"]
        assert diff.counts["read"] == 2


class TestGone:
    def test_counted(self):
        """Known cases missing from the read are counted gone; nothing is sent for them."""
        present = rec("1")
        diff = run(
            present,
            known=[
                stored(present, Phase.STARTED),
                stored(rec("2"), Phase.STARTED),
                stored(rec("3"), Phase.DOCUMENTED),
            ],
        )

        assert diff.counts["gone"] == 2
        assert diff.work == []

    @pytest.mark.parametrize("phase", [Phase.REGISTERING, Phase.UPLOADING, Phase.STARTING])
    def test_gone_with_lost_answer_settled(self, phase):
        """A gone case with an unanswered call is still settled: work with no invoice."""
        case = stored(rec(), phase, pending_attempt="att-1", pending_since=NOW)

        diff = run(known=[case])

        (item,) = diff.work
        assert item.invoice is None
        assert item.change is Change.PENDING
        assert item.case == case
        assert diff.counts["gone"] == 1

    def test_invalid_now_with_lost_answer_settled(self):
        """A case whose record turned invalid during a lost register is settled, not sent."""
        case = stored(rec(), Phase.REGISTERING, pending_attempt="att-1", pending_since=NOW)

        diff = run(rec(postal_code="12"), known=[case])

        (item,) = diff.work
        assert item.invoice is None
        assert diff.counts["gone"] == 0
        assert diff.quarantine["invoices.csv:20003"].field == "postal_code"
