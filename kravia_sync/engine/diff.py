"""Diff one source read against the state store: which records are bad, waiting, new, changed,
unchanged, and which cases have a next step. No I/O of its own: the stored cases come in, and
the one check that reads a file (is the invoice copy a PDF?) is passed in as a function.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TypeVar
from zoneinfo import ZoneInfo

from kravia_sync.connector import PaymentRecord, RecordError, RecordStamp, SourceRecord
from kravia_sync.documents import CopyRead
from kravia_sync.engine.drift import Conflict, Freed
from kravia_sync.engine.gate import gate_refusal
from kravia_sync.engine.plan import Change, assess, record_hash, source_id
from kravia_sync.engine.read_ids import ReadIds, conflict_entry
from kravia_sync.engine.read_payments import ReadPayments
from kravia_sync.engine.rejections import Rejections, is_text
from kravia_sync.engine.worklist import KeptRecord, WorkItem, WorkList, WorkListError
from kravia_sync.lifecycle import CaseState, CaseSummary, Phase, Step
from kravia_sync.model import Invoice
from kravia_sync.settings import PaymentsMode, PolicySettings, SourceConfig
from kravia_sync.state.records import InvoiceAlias, QuarantineEntry, QuarantineKind

__all__ = [
    "ATTENTION_PHASES",
    "QUIET_PHASES",
    "SETTLING_PHASES",
    "SETTLING_STEPS",
    "CaseSummary",
    "Lookup",
    "SourceDiff",
    "WorkItem",
    "WorkList",
]

# Steps allowed for a case whose invoice is not in this read (gone, or now invalid): only
# settling a call whose answer was lost. Never register, upload or start it.
SETTLING_STEPS = frozenset({Step.LOOKUP, Step.VERIFY_UPLOAD, Step.VERIFY_START})
SETTLING_PHASES = frozenset({Phase.REGISTERING, Phase.UPLOADING, Phase.STARTING})
ATTENTION_PHASES = frozenset({Phase.REJECTED, Phase.NEEDS_REVIEW})
FINISHED_PHASES = ATTENTION_PHASES | {Phase.STARTED}
# Finished and needing nobody: an unchanged record of a case in one of these is only counted.
QUIET_PHASES = FINISHED_PHASES - ATTENTION_PHASES

_T = TypeVar("_T")  # an item of a read: a record, a stamp, a payment or an error


@dataclass(frozen=True, slots=True)
class Lookup:
    """What is known about one record's accountingInvoiceId, looked up in chunks by the caller:
    its stored case (of any source), and the key of an earlier record of this read with the
    same id."""

    aid: str | None = None  # the record's accountingInvoiceId, when the caller computed it
    stored: CaseSummary | None = None
    earlier_key: str | None = None
    hashed: str | None = None  # the record's hash, when the caller computed it


NOTHING_KNOWN = Lookup()


class SourceDiff:
    """Diff one source read; memory grows with what changed, not with the size of the source.

    1. `add` every record with its `Lookup`: a record whose case is finished and whose raw
       record is unchanged costs a hash and a comparison; the rest are validated and kept
       (in the work list's `keep`: a few thousand as objects, the rest written out).
    2. `finish` with how to load stored cases and what the caller found gone: assess what
       was kept, a chunk at a time, and settle lost answers of cases whose invoice is gone or
       invalid now (they are sent nothing else).
    """

    def __init__(
        self,
        source: SourceConfig,
        *,
        policy: PolicySettings,
        now: datetime,
        check_document: Callable[[Invoice], CopyRead] | None = None,
        payments: str | None = None,
        holds: Mapping[str, str] | None = None,
        kravia_has: Callable[[Invoice, CaseState | None], bool] | None = None,
        work: WorkList | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.source = source
        # Where the work goes: the pass's list, shared by its sources (new invoices are kept
        # there from the moment they are read, so memory stays flat on a first sync).
        self.work_list = WorkList() if work is None else work
        # Whether Kravia (as last mirrored) holds a case that is, or may be, this invoice's.
        # An invoice the gate keeps out is still driven when it does: adopting the case sends
        # nothing, and Kravia's case is then kept in step (a payment made since, a hold).
        self.kravia_has = kravia_has or (lambda _invoice, _case: False)
        # Operator holds: accountingInvoiceId or invoice number → reason. Never sent.
        self.holds = dict(holds or {})
        self.policy = policy
        self.now = now
        self.today = now.astimezone(ZoneInfo(policy.timezone)).date()
        self.check_document = check_document
        # The gate's answer for a step of an invoice now, and the copy it read.
        self._judge = partial(
            gate_refusal,
            policy=policy,
            today=self.today,
            holds=self.holds,
            check_document=check_document,
        )
        self.counts: Counter[str] = Counter()
        self.rejections = Rejections(source.name, source.id_prefix, self.counts)
        self.quarantine = self.rejections.entries  # record key → why it is kept out
        self.updates: list[CaseState] = []
        self._items: dict[str, WorkItem] = {}  # work on stored cases, until `finish`
        # Valid records of stored cases, by id, for `finish` (few held as objects).
        self._kept = self.work_list.shelf(source.name, "stored")
        self._settle: set[str] = set()  # seen, invalid now, with a lost answer to settle
        self.payments_read = ReadPayments(
            PaymentsMode(payments or source.payments or PaymentsMode.AMOUNT_DROPS),
            id_prefix=source.id_prefix,
            counts=self.counts,
            rejections=self.rejections,
        )
        self.payments = self.payments_read.items  # (record key, payment), in read order
        # Ids the source gave invoices after their cases were registered (a hold on one
        # holds the case), and the records whose id changed or names another invoice's case.
        self.ids = ReadIds(
            source.name,
            unique_numbers=source.unique_invoice_numbers,
            aliases=aliases or {},
            holds=self.holds,
            now=now,
            withheld=self.work_list.shelf(source.name, "withheld"),
        )

    @property
    def work(self) -> list[WorkItem]:
        """Everything in the work list, in memory (for a look; a pass iterates the list)."""
        return list(self.work_list)

    def identify(
        self, record: SourceRecord | RecordStamp | PaymentRecord | RecordError
    ) -> tuple[str, str] | None:
        """A record's (or stamp's) accountingInvoiceId and hash, for looking it up (None:
        nothing to look up: the record is bad, or a payment)."""
        if not isinstance(record, SourceRecord | RecordStamp):
            return None
        aid = source_id(record.fields, self.source.id_prefix)
        if aid is None or not is_text(aid):  # half a surrogate pair: the model refuses it
            return None
        return self.ids.case_of(aid), record_hash(record)

    def add_chunk(
        self,
        records: Sequence[SourceRecord | PaymentRecord | RecordError],
        identities: Sequence[tuple[str, str] | None],
        looked_at: Mapping[str, CaseSummary | None],
        earlier: Iterable[str | None],
    ) -> None:
        """Add records in read order with what the state store said of them (see
        `StateStore.source_read().triage`): an identified record whose id it did not single
        out, met for the first time in this read, is unchanged in a quiet phase."""
        for record, lookup in _not_quiet(self.counts, records, identities, looked_at, earlier):
            self.add(record, lookup)

    def add_stamps(
        self,
        stamps: Sequence[RecordStamp | PaymentRecord | RecordError],
        identities: Sequence[tuple[str, str] | None],
        looked_at: Mapping[str, CaseSummary | None],
        earlier: Iterable[str | None],
    ) -> list[tuple[RecordStamp | PaymentRecord | RecordError, Lookup]]:
        """The first phase of a stamped read, like `add_chunk`: count the stamps of unchanged
        records in a quiet phase, and return everything else with its look-up, in read order:
        each stamp's full record is to be `add`ed with it, payments and errors as they are,
        in this order (as a plain read would add them)."""
        return list(_not_quiet(self.counts, stamps, identities, looked_at, earlier))

    def add(
        self, record: SourceRecord | PaymentRecord | RecordError, lookup: Lookup = NOTHING_KNOWN
    ) -> None:
        if isinstance(record, PaymentRecord):
            self.payments_read.add_record(record)
        elif isinstance(record, RecordError):
            self.counts["read"] += 1
            self.rejections.reject(
                QuarantineEntry(record.key, QuarantineKind.INVALID, record.field, record.reason)
            )
        else:
            self.counts["read"] += 1
            try:
                self._add_invoice(record, lookup)
            except WorkListError:
                raise  # the pass's temporary file, not the record
            except Exception as exc:  # bad input is data: one record never stops the rest
                self._unjudgeable(record.key, lookup.aid, exc)

    def _unjudgeable(self, key: str, aid: str | None, exc: Exception) -> None:
        """A record whose judgement failed unexpectedly: quarantined with the reason; any
        state kept for it in this read is dropped, so nothing is sent for it."""
        if aid is not None:
            self._kept.forget(aid)
            self._items.pop(aid, None)
            self.work_list.drop_new(self.source.name, aid)
        self.rejections.unjudgeable(key, aid, exc)

    def _add_invoice(self, record: SourceRecord, lookup: Lookup) -> None:
        own_id = source_id(record.fields, self.source.id_prefix)
        aid = lookup.aid or (None if own_id is None else self.ids.case_of(own_id))
        number = record.fields.get("invoice_number")
        earlier = (
            None
            if aid is None
            else self.ids.duplicate(
                record.key,
                own_id,
                aid,
                number=number,
                stored=lookup.stored,
                earlier_key=lookup.earlier_key,
            )
        )
        if aid is not None and earlier is not None:
            first_too = self.work_list.drop_new(self.source.name, aid)
            self.rejections.duplicate(aid, earlier, record.key, first_too=first_too)
            return
        stored = lookup.stored
        if stored is not None and stored.source != self.source.name:
            self.rejections.owned_elsewhere(record.key, aid, stored.source)
            return
        hashed = lookup.hashed or record_hash(record)
        if stored is not None and stored.record_hash == hashed and stored.phase in FINISHED_PHASES:
            # Finished and byte-for-byte the same record: nothing to validate or do.
            self.counts[Change.UNCHANGED.value] += 1
            if stored.phase in ATTENTION_PHASES:
                self.counts[stored.phase.value] += 1
            return
        invoice = self.rejections.validated(
            record, own_id, unique=self.source.unique_invoice_numbers
        )
        if invoice is None:
            if aid is not None and stored is not None and stored.phase in SETTLING_PHASES:
                self._settle.add(aid)
            return
        self._keep(record.key, invoice, hashed, aid, stored)

    def _keep(
        self,
        key: str,
        invoice: Invoice,
        hashed: str,
        case_id: str | None,
        stored: CaseSummary | None,
    ) -> None:
        """A valid invoice (with its own id) into the diff: `case_id` is the case its id names
        (through an alias or not), `stored` that case's summary, if stored."""
        if (
            case_id is not None
            and stored is not None
            and self.ids.withheld_as_renamed(key, invoice, hashed, case_id, stored)
        ):
            return
        if case_id is not None and case_id != invoice.accounting_invoice_id:
            # An alias: the case keeps the id it was sent with.
            invoice = invoice.model_copy(update={"accounting_invoice_id": case_id})
        if stored is None:
            if not self.ids.drifts.withhold(key, invoice, hashed):
                self._add_new(key, invoice, hashed)
            return
        self._kept.put(invoice.accounting_invoice_id, KeptRecord(invoice, key, hashed))

    def _add_new(self, key: str, invoice: Invoice, hashed: str) -> None:
        """A valid invoice nothing is stored for: into the work list now, unless the gate
        keeps it out (and Kravia holds nothing that may be its case) or an earlier source of
        the pass has its id. A later record with its id takes it out again (see
        `Rejections.duplicate`)."""
        refusal, copy = self._judge(Step.REGISTER, None, invoice)
        if refusal is not None and not self.kravia_has(invoice, None):
            self.rejections.kept_out_by_gate(key, invoice, refusal)
            return
        assessment = assess(
            invoice,
            source=self.source.name,
            record_key=key,
            hashed=hashed,
            existing=None,
            now=self.now,
        )
        kept = self.work_list.kept_copy(copy)
        item = WorkItem(
            assessment.case,
            invoice,
            assessment.change,
            # The gate read the copy and found nothing wrong; a refused case's is read again
            # by the driver before any call.
            copy_checked=self.check_document is not None and refusal is None,
            copy=kept,
            copy_recheck=copy is not None and kept is None,
            # Never registered as far as the store knows, yet Kravia may have it (the store
            # was restored from an older copy, or lost): the driver adopts it.
            kept_out=refusal,
        )
        owner = self.work_list.add_new(self.source.name, item)
        if owner is not None:
            self.rejections.owned_elsewhere(
                key, invoice.accounting_invoice_id, owner, invoice.invoice_number
            )

    def adopt_drifts(self, seen: Collection[str]) -> list[InvoiceAlias]:
        """After a complete read (`seen`: which of `ids.drifts.registered()` its look-ups
        had): each record withheld for an id changed since its case was registered, or naming
        another invoice's case, is a case's, a new invoice, or quarantined (see
        `kravia_sync.engine.drift`); the aliases of the cases taken. Before `finish`: a case
        taken is assessed there."""
        for verdict, drifting, invoice, hashed in self.ids.judged(seen):
            if isinstance(verdict, Freed):
                self._add_new(drifting.key, invoice, hashed)
            elif isinstance(verdict, Conflict):
                self.rejections.reject(conflict_entry(drifting, verdict))
            else:
                case_id = verdict.registered
                adopted = invoice.model_copy(update={"accounting_invoice_id": case_id})
                self._kept.put(case_id, KeptRecord(adopted, drifting.key, hashed))
                self.counts["ids_adopted"] += 1
        return list(self.ids.adopted)

    def finish(
        self,
        load_cases: Callable[[list[str]], Mapping[str, CaseState]],
        *,
        gone: int = 0,
        gone_settling: Iterable[CaseState] = (),
    ) -> None:
        """After a complete read: assess the kept records of stored cases, settle lost
        answers, and put their work in the work list after the new invoices'.

        `load_cases`: the stored cases with these ids (asked a chunk of kept records at a
        time, and for the records invalid now with a lost answer to settle); `gone`: how many
        stored cases of this source the read did not have; `gone_settling`: those of them
        with a lost answer.
        """
        self.payments_read.name_cases(self.ids.aliases_now(), self.ids.unclear)
        for chunk in self._kept.chunks():
            known = load_cases([aid for aid, _ in chunk])
            for aid, kept in chunk:
                try:
                    self._assess(kept, known.get(aid))
                except Exception as exc:  # bad input is data: one record never stops the rest
                    self._unjudgeable(kept.key, aid, exc)
        self.work_list.drop_kept(self.source.name)
        self.counts["gone"] += gone
        settling = load_cases(sorted(self._settle)) if self._settle else {}
        for case in [*(settling[aid] for aid in self._settle if aid in settling), *gone_settling]:
            if case.accounting_invoice_id not in self._items:
                self._items[case.accounting_invoice_id] = WorkItem(case, None, Change.PENDING)
        self.counts[Change.NEW.value] += self.work_list.new_count(self.source.name)
        for item in self.work_list.new_kept_out(self.source.name):
            if item.invoice is not None and item.kept_out is not None:  # as `_add_new` adds them
                self.rejections.kept_out_by_gate(item.case.record_key, item.invoice, item.kept_out)
        for item in self._items.values():
            self.work_list.add(item)

    def stored(self, cases: Iterable[CaseState]) -> None:
        """The `updates` as the state store wrote them (each at its new revision): the work
        items carry those from now on."""
        for case in cases:
            item = self._items.get(case.accounting_invoice_id)
            if item is not None:
                item.case = case

    def _assess(self, valid: KeptRecord, existing: CaseState | None) -> None:
        assessment = assess(
            valid.invoice,
            source=self.source.name,
            record_key=valid.key,
            hashed=valid.hashed,
            existing=existing,
            now=self.now,
        )
        self.counts[assessment.change.value] += 1
        if existing is not None and assessment.case.attention not in {None, existing.attention}:
            self.counts["noted_changes"] += 1  # a change a person must make in Kravia
        if assessment.write:
            self.updates.append(assessment.case)
        if assessment.dropped_from is not None:
            self.payments_read.add_drop(
                valid.key, valid.invoice, assessment.dropped_from, existing, on=self.today
            )
        case = assessment.case
        if case.phase in ATTENTION_PHASES:
            self.counts[case.phase.value] += 1
        elif case.phase is Phase.STARTED:
            return
        else:
            refusal, copy = (
                self._judge(_sending_step(case), case, valid.invoice)
                if case.phase in SENDS_NEXT
                else (None, None)
            )
            if refusal is not None:
                # Re-judged each pass, and again at the moment of any call.
                self.rejections.kept_out_by_gate(valid.key, valid.invoice, refusal)
                if case.phase is not Phase.NEW or not self.kravia_has(valid.invoice, case):
                    return
                # Never registered as far as the store knows, yet Kravia has it (the store
                # was restored from an older copy, or lost): the driver adopts it.
            kept = self.work_list.kept_copy(copy)
            self._items[valid.invoice.accounting_invoice_id] = WorkItem(
                case,
                valid.invoice,
                assessment.change,
                # The gate read the copy and found nothing wrong; a refused case's is read
                # again by the driver before any call.
                copy_checked=self.check_document is not None
                and case.phase in SENDS_NEXT
                and refusal is None,
                copy=kept,
                copy_recheck=copy is not None and kept is None,
                kept_out=refusal,
            )


def _not_quiet(
    counts: Counter[str],
    items: Sequence[_T],
    identities: Sequence[tuple[str, str] | None],
    looked_at: Mapping[str, CaseSummary | None],
    earlier: Iterable[str | None],
) -> Iterator[tuple[_T, Lookup]]:
    """The items with their look-up, in read order, but for those of unchanged records in
    a quiet phase: those are only counted."""
    firsts = iter(earlier)
    quiet = 0
    for item, identity in zip(items, identities, strict=True):
        if identity is None:
            yield item, NOTHING_KNOWN
            continue
        aid, hashed = identity
        first = next(firsts)
        if first is None and aid not in looked_at:
            quiet += 1
        else:
            yield item, Lookup(aid, looked_at.get(aid), first, hashed)
    counts["read"] += quiet
    counts[Change.UNCHANGED.value] += quiet


# Phases whose next step sends something to Kravia (see `_sending_step`).
SENDS_NEXT = frozenset({Phase.NEW, Phase.REGISTERED, Phase.DOCUMENTED})


def _sending_step(case: CaseState) -> Step:
    if case.phase is Phase.NEW:
        return Step.REGISTER
    if case.phase is Phase.REGISTERED and case.has_document:
        return Step.UPLOAD
    return Step.START
