"""Read one source and diff it against the state store: the first stage of a pass.

A `SourceReader` reads a source completely, a chunk at a time (or in two phases where the
connector offers a stamped read), diffs it (`kravia_sync.engine.diff`), plans its payments
(`kravia_sync.payments`), stores what the diff decided, and returns a `SourceReadOutcome`:
the diff, the payments to forward, their problems, and the cases gone from the source that
Kravia may still hold. It runs in a worker thread: a long read must not hold up the event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from kravia_sync.connector import (
    Connector,
    ConnectorError,
    PaymentRecord,
    RecordError,
    RecordStamp,
    SourceRecord,
    StampedRead,
    load_connector,
)
from kravia_sync.documents import read_copy
from kravia_sync.engine.diff import QUIET_PHASES, SETTLING_PHASES, Lookup, SourceDiff, WorkList
from kravia_sync.engine.driver import kravia_may_hold
from kravia_sync.engine.errors import PassFailedError
from kravia_sync.engine.gone import GONE_NOTE_START
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.engine.summary import RunStatus, RunSummary, SourceResult
from kravia_sync.engine.target import StoreTarget
from kravia_sync.lifecycle import IN_KRAVIA_PHASES, CaseState, CaseSummary, Phase
from kravia_sync.logging import get_logger, redact, register_secrets
from kravia_sync.model import Invoice
from kravia_sync.payments import (
    CHANGED_AFTER_SENT,
    PaymentPhase,
    PaymentPlan,
    PaymentState,
    PayoutRule,
    plan_payments,
)
from kravia_sync.settings import ConfigError, Settings, SourceConfig
from kravia_sync.state.errors import StateConflictError
from kravia_sync.state.records import InvoiceAlias
from kravia_sync.state.source_read import SourceRead
from kravia_sync.state.store import StateStore

__all__ = [
    "READ_CHUNK",
    "STAMPED_BATCH",
    "STAMPED_MAX_BATCHES",
    "GoneBreakerError",
    "SourceReadOutcome",
    "SourceReader",
    "build_connector",
]

log = get_logger("kravia_sync.engine.reading")
_T = TypeVar("_T")
_Stamped = RecordStamp | PaymentRecord | RecordError  # an item of a stamped read's first phase


class GoneBreakerError(PassFailedError):
    """Too many known cases are missing from one complete read: a person must confirm."""


def build_connector(settings: Settings, source: SourceConfig) -> Connector:
    """The configured connector for `source`; a bad setting is a `ConfigError` naming the key."""
    from pydantic import ValidationError  # noqa: PLC0415

    try:
        connector_class = load_connector(source.connector)
    except (LookupError, TypeError) as exc:
        raise ConfigError(f"sources.{source.name}.connector: {exc}") from None
    try:
        connector = connector_class.from_settings(source.settings, base_dir=settings.base_dir)
    except ValidationError as exc:
        details = "; ".join(
            f"sources.{source.name}.settings.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(details) from None
    connector.timezone = ZoneInfo(settings.policy.timezone)
    register_secrets(connector.secret_values())
    return connector


@dataclass
class SourceReadOutcome:
    """What reading one source left for the rest of the pass."""

    diff: SourceDiff
    payment_work: list[PaymentState] = field(default_factory=list)
    payment_problems: list[dict[str, str]] = field(default_factory=list)
    # Cases missing from the read that Kravia may hold: their status is looked at there.
    gone_in_kravia: list[str] = field(default_factory=list)
    # Cases noted as gone whose invoice this read has again: the note no longer holds.
    back_in_source: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Unseen:
    """The stored cases of a source that a complete read did not have."""

    gone: int
    settling: list[str]  # those with a lost answer to settle
    in_kravia: list[str]  # those Kravia may hold
    back: list[str]  # not unseen: those noted as gone that this read has again


class SourceReader:
    """Reads sources for one pass: each `read` is one source, diffed and stored."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        target: StoreTarget,
        now: datetime,
        mirror: KraviaMirror | None,
        holds: Mapping[str, str],
        confirm_gone: Collection[str] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.target = target
        self.now = now
        self.mirror = mirror
        self.holds = holds
        # Sources whose large disappearance an operator confirmed for this pass.
        self.confirm_gone = frozenset(confirm_gone)

    async def read_into(
        self,
        work: WorkList,
        source: SourceConfig,
        summary: RunSummary,
        *,
        dry_run: bool,
    ) -> SourceReadOutcome | None:
        """Read one source and put its work in `work`; a source that fails leaves none (and
        None is returned)."""
        result = SourceResult(source.name)
        summary.sources.append(result)
        read: SourceReadOutcome | None = None
        try:
            self.target.check_prefix(source, dry_run=dry_run)
            connector = build_connector(self.settings, source)
            # In a thread: a long read must not hold up the event loop.
            read = await asyncio.to_thread(
                self.read, source, connector, work, result, dry_run=dry_run
            )
        except (ConnectorError, ConfigError, OSError, StateConflictError) as exc:
            work.drop_source(source.name)  # nothing of a source read in part is driven
            result.status = "failed"
            result.error = redact(f"{type(exc).__name__}: {exc}")
            summary.status = RunStatus.FAILED
            log.error("source read failed", source=source.name, error=result.error)  # noqa: TRY400
        else:
            summary.problems.extend(read.diff.rejections.problems())
            summary.problems.extend(read.payment_problems)
        summary.counts.update(result.counts)
        return read

    def read(
        self,
        source: SourceConfig,
        connector: Connector,
        work: WorkList,
        result: SourceResult,
        *,
        dry_run: bool,
    ) -> SourceReadOutcome:
        """Read one source completely, a chunk at a time, and diff it against the state; new
        work goes into `work`, counts into `result`. Unless `dry_run`, what the diff decided
        is stored (cases, payments, quarantine)."""
        now = self.now
        mirror = self.mirror
        aliases = self.store.aliases(source.name)

        def kravia_has(invoice: Invoice, case: CaseState | None) -> bool:
            return mirror is not None and kravia_may_hold(
                self.settings, mirror, source.name, invoice, case
            )

        def new_diff() -> SourceDiff:
            return SourceDiff(
                source,
                policy=self.settings.policy,
                now=now,
                check_document=lambda invoice: read_copy(invoice.document),
                payments=source.payments or connector.payments_source(),
                holds=self.holds,
                kravia_has=kravia_has,
                work=work,
                aliases=aliases,
            )

        with _bulk_reading():
            read = self._read_stamped(source, connector, new_diff())
            if read is None:
                work.drop_source(source.name)  # what the stamped read added, if anything
                read = self._read_whole(source, connector, new_diff())
        diff, unseen = read
        diff.finish(
            self.store.load_cases_by_id,
            gone=unseen.gone,
            gone_settling=self.store.load_cases_by_id(unseen.settling).values(),
        )
        plan = self._plan_payments(source, diff, now)
        outcome = SourceReadOutcome(
            diff,
            payment_work=plan.work,
            gone_in_kravia=unseen.in_kravia,
            back_in_source=unseen.back,
        )
        result.counts.update(diff.counts)
        if plan.waiting:
            result.counts["payments_waiting_for_credit_note"] += plan.waiting
        for written in plan.writes:
            if written.note is not None and written.note.startswith(CHANGED_AFTER_SENT):
                result.counts["payments_changed_after_sent"] += 1
                outcome.payment_problems.append(
                    {
                        "source": source.name,
                        "record": f"payment {written.payment_id}",
                        "field": "payment",
                        "reason": written.note,
                    }
                )
            elif written.phase is not PaymentPhase.NEW:
                result.counts[f"payments_{written.phase.value}"] += 1
        if not dry_run:
            # Before the cases: an alias kept alone only keeps its id from being registered.
            self.store.record_aliases(diff.ids.new_aliases)
            if diff.updates or plan.writes:
                # One transaction: a drop in an amount is never stored without its payment.
                stored = self.store.write_payments(plan.writes, [], diff.updates)
                diff.stored(stored)
            self.store.sync_quarantine(source.name, diff.quarantine, complete=True, now=now)
        return outcome

    def _read_whole(
        self, source: SourceConfig, connector: Connector, diff: SourceDiff
    ) -> tuple[SourceDiff, _Unseen]:
        """The plain read: every record built, looked up in the state a chunk at a time."""
        with self.store.source_read(source.name) as state:
            diff.ids.drifts.look_up_with(state.same_number, state.case_number)
            for chunk in _chunked(connector.read(), READ_CHUNK):
                diff.add_chunk(chunk, *_triaged(diff, state, chunk))
            unseen = self._unseen(source, diff, state)
        return diff, unseen

    def _read_stamped(
        self, source: SourceConfig, connector: Connector, diff: SourceDiff
    ) -> tuple[SourceDiff, _Unseen] | None:
        """The two-phase read where the connector offers one: stamps looked up in the state a
        chunk at a time; every STAMPED_BATCH items that need a look, the full records of those
        stamps are fetched and everything is added in read order (duplicates are judged as in
        a plain read). None when the connector has none, when more than STAMPED_MAX_BATCHES
        batches are needed (a first sync: a plain read is cheaper), or when the second phase
        misses a record of the first: then the caller reads the source whole."""
        stamped = connector.stamped_read()
        if stamped is None:
            return None
        pending: list[tuple[_Stamped, Lookup]] = []
        batches = 0
        with stamped, self.store.source_read(source.name) as state:
            diff.ids.drifts.look_up_with(state.same_number, state.case_number)
            for chunk in _chunked(stamped.stamps(), READ_CHUNK):
                pending.extend(diff.add_stamps(chunk, *_triaged(diff, state, chunk)))
                if len(pending) < STAMPED_BATCH:
                    continue
                batches += 1
                if batches > STAMPED_MAX_BATCHES:
                    log.info(
                        "many records to look at: reading the source whole",
                        source=source.name,
                        at_least=batches * STAMPED_BATCH,
                    )
                    return None
                if not self._add_full_records(source, diff, stamped, pending):
                    return None
                pending = []
            if pending and not self._add_full_records(source, diff, stamped, pending):
                return None
            unseen = self._unseen(source, diff, state)
        return diff, unseen

    @staticmethod
    def _add_full_records(
        source: SourceConfig,
        diff: SourceDiff,
        stamped: StampedRead,
        pending: list[tuple[_Stamped, Lookup]],
    ) -> bool:
        """Fetch the full records of the pending stamps and add everything pending to the
        diff in read order; False (nothing added) when a stamp finds no record."""
        stamps = [item for item, _ in pending if isinstance(item, RecordStamp)]
        records = _matched(stamps, stamped.records(_distinct(stamps))) if stamps else []
        if isinstance(records, str):
            log.warning(
                "a record of the first phase was not read again in the second (a volatile "
                "function such as random() or clock_timestamp() in the query?): reading the "
                "source whole",
                source=source.name,
                record=records,
            )
            return False
        full = iter(records)
        for item, lookup in pending:
            if isinstance(item, RecordStamp):
                diff.add(replace(next(full), key=item.key), lookup)
            else:
                diff.add(item, lookup)
        return True

    def _unseen(self, source: SourceConfig, diff: SourceDiff, state: SourceRead) -> _Unseen:
        """After a complete read: the stored cases of the source it did not have (but those
        whose invoice came back under another id, adopted first; and with those whose id only
        a record of another invoice number had); the circuit breaker first."""
        gone, gone_settling = state.unseen()
        renamed = diff.ids.unclaimed()  # seen, but only by another invoice's record
        adopted = diff.adopt_drifts(state.seen_among(diff.ids.drifts.registered()))
        taken = {alias.accounting_invoice_id for alias in adopted}
        self._check_gone(source, gone + len(renamed), state.known(), came_back=len(taken))
        for alias in adopted:
            _log_adopted(source, alias)
        for freed in diff.ids.freed:
            log.warning(
                "an id that was another invoice's alias (never sent to Kravia) is now a new "
                "invoice's: the alias is forgotten",
                source=source.name,
                accounting_invoice_id=freed,
            )
        left = self.store.load_cases_by_id(sorted(renamed - taken)).values()
        in_kravia = state.unseen_in(_IN_KRAVIA_VALUES) if gone else []
        # Noted as gone, and read again: under their own id in a record kept (not only in
        # another invoice's record, as `renamed`, nor only in one quarantined, which may be
        # another invoice's too), or under another id that was adopted.
        noted = self.store.ids_noted(source.name, GONE_NOTE_START)
        back: list[str] = []
        if noted:
            quarantined = {entry.accounting_invoice_id for entry in diff.quarantine.values()}
            seen = state.seen_among(noted) - renamed - quarantined
            back = sorted(seen | (set(noted) & taken))
        return _Unseen(
            gone - len(taken - renamed) + len(left),
            [aid for aid in gone_settling if aid not in taken]
            + [case.accounting_invoice_id for case in left if case.phase in SETTLING_PHASES],
            [aid for aid in in_kravia if aid not in taken]
            + [
                case.accounting_invoice_id for case in left if case.phase.value in _IN_KRAVIA_VALUES
            ],
            back,
        )

    def _check_gone(self, source: SourceConfig, gone: int, known: int, *, came_back: int) -> None:
        """The circuit breaker: a complete read that misses more than `max_gone_share` of a
        source's known cases stops the pass before anything is written or sent. Those whose
        invoice is in the read under a new id (`came_back`) count as missing all the same: a
        source whose ids all changed at once may be another source than it was (a query
        pointed at another company's books), and is confirmed by a person."""
        policy = self.settings.policy
        if known < policy.gone_breaker_min_cases or gone <= policy.max_gone_share * known:
            return
        if source.name in self.confirm_gone:
            log.warning("large disappearance confirmed", source=source.name, gone=gone, known=known)
            return
        under_new_ids = (
            f" ({came_back} of them are in the read under new ids, with their invoice "
            "numbers: confirmed, each is taken to be its case)"
            if came_back
            else ""
        )
        raise GoneBreakerError(
            f"{gone} of the {known} cases known from source {source.name!r} "
            f"({gone / known:.0%}) are not in its read{under_new_ids}, more than "
            f"max_gone_share ({policy.max_gone_share:.0%}); the pass stopped and changed "
            f"nothing. Check the source; if they really are gone, run: kravia-sync reconcile "
            f"--confirm-gone {source.name}"
        )

    def _plan_payments(self, source: SourceConfig, diff: SourceDiff, now: datetime) -> PaymentPlan:
        """The payments of this read against the stored ones (see `kravia_sync.payments`)."""
        ids = {payment.payment_id for _, payment in diff.payments}
        stored = self.store.load_payments(source.name, ids, unfinished=True)
        payouts = self.settings.policy.payouts
        rule = PayoutRule(
            payers=frozenset(name.casefold() for name in payouts.payers),
            references=tuple(prefix.casefold() for prefix in payouts.reference_prefixes),
            kids=frozenset(payouts.kids),
            accounts=frozenset(payouts.accounts),
        )
        return plan_payments(
            diff.payments,
            stored,
            source=source.name,
            rule=rule,
            now=now,
        )


def _log_adopted(source: SourceConfig, alias: InvoiceAlias) -> None:
    if alias.alias_id == alias.accounting_invoice_id:
        log.warning(
            "an invoice has its case's own id (again): any other id kept for that id is forgotten",
            source=source.name,
            invoice_number=alias.invoice_number,
            accounting_invoice_id=alias.accounting_invoice_id,
        )
        return
    log.warning(
        "an invoice's id changed since its case was registered: the case keeps its id",
        source=source.name,
        invoice_number=alias.invoice_number,
        new_id=alias.alias_id,
        accounting_invoice_id=alias.accounting_invoice_id,
    )


READ_CHUNK = 2000  # records looked up in the state store together
# A stamped read fetches full records in batches of this many items that need a look (held
# in memory until added), and reads the source whole instead when it would take more than
# STAMPED_MAX_BATCHES of them (each batch runs the source's query once more).
STAMPED_BATCH = 10_000
STAMPED_MAX_BATCHES = 4
# Phases of a case in Kravia, for the gone check (needs_review ones may be collecting too).
_IN_KRAVIA_VALUES = frozenset(phase.value for phase in IN_KRAVIA_PHASES | {Phase.NEEDS_REVIEW})


def _chunked(items: Iterator[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_BULK_READS = threading.Lock()
_bulk_depth = 0


@contextlib.contextmanager
def _bulk_reading() -> Iterator[None]:
    """While a source is read, the cyclic garbage collector leaves alone the objects that
    existed before (kravia-sync's and its libraries' own) and runs less often: a read makes
    a few short-lived objects per row, freed as it goes, and a read of a million rows would
    otherwise spend a fifth of its time rescanning everything else. Restored afterwards (by
    the outermost of overlapping reads); a collector switched off stays off."""
    global _bulk_depth  # noqa: PLW0603 - one process-wide setting, counted under a lock
    with _BULK_READS:
        _bulk_depth += 1
        if _bulk_depth == 1:
            thresholds = gc.get_threshold()
            gc.freeze()
            if thresholds[0]:
                gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
            _SAVED_THRESHOLDS[:] = thresholds
    try:
        yield
    finally:
        with _BULK_READS:
            _bulk_depth -= 1
            if _bulk_depth == 0:
                gc.set_threshold(*_SAVED_THRESHOLDS)
                gc.unfreeze()


_SAVED_THRESHOLDS: list[int] = []


def _triaged(
    diff: SourceDiff,
    state: SourceRead,
    chunk: list[SourceRecord | PaymentRecord | RecordError] | list[_Stamped],
) -> tuple[list[tuple[str, str] | None], dict[str, CaseSummary | None], list[str | None]]:
    """Each item's identity, and what the state says of the identified ones (see
    `SourceRead.triage`)."""
    identities = [diff.identify(item) for item in chunk]
    looked_at, earlier = state.triage(
        [
            (identity[0], item.key, identity[1])
            for item, identity in zip(chunk, identities, strict=True)
            if identity is not None
        ],
        quiet=QUIET_PHASES,
    )
    return identities, looked_at, earlier


def _distinct(stamps: list[RecordStamp]) -> list[RecordStamp]:
    """The stamps to ask full records for: one per digest."""
    return list({stamp.digest: stamp for stamp in stamps}.values())


def _matched(
    stamps: list[RecordStamp], records: Iterator[SourceRecord]
) -> list[SourceRecord] | str:
    """The full record of each stamp, in the stamps' order. Records with the same digest are
    the same row content, so any of them serves any of those stamps; a record nobody asked
    for is passed over. A stamp left without a record (the source changed between the
    phases, which one snapshot should prevent) is returned instead: its key."""
    records_by_digest: dict[str, list[SourceRecord]] = {}
    need = Counter(stamp.digest for stamp in stamps)
    for record in records:
        digest = record.digest or ""
        found = records_by_digest.setdefault(digest, [])
        if len(found) < need[digest]:
            found.append(record)
    matched: list[SourceRecord] = []
    for stamp in stamps:
        candidates = records_by_digest.get(stamp.digest)
        if not candidates:
            return stamp.key
        matched.append(candidates.pop())
    return matched
