"""What Kravia tells back, after a pass has sent what it had to: the status and capital left of
its cases (one search of the mirror, when due), cases gone from the source that Kravia still
collects, and any invoice Kravia holds twice. Each is flagged on its case and in the run; the
note on a gone case clears itself, journaled, once what it asks for has happened (Kravia
closed the case, or money forwarded covers it: `kravia_sync.engine.gone`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from kravia_sync.engine.case_writes import journal_entry
from kravia_sync.engine.errors import PassFailedError
from kravia_sync.engine.gone import (
    FORWARDED_PHASES,
    GONE_NOTE_START,
    gone_explained,
    gone_note,
    is_gone_note,
    kravia_reports_settled,
)
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.engine.summary import RunStatus, RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import KraviaError
from kravia_sync.lifecycle import CaseState
from kravia_sync.logging import get_logger
from kravia_sync.settings import Settings
from kravia_sync.state.errors import LeaseLostError
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.records import JournalEntry, JournalKind
from kravia_sync.state.store import StateStore

__all__ = ["STATUS_DUE", "StatusPullBack", "refresh_statuses"]

STATUS_DUE = "status_due"  # meta key: when the next pull-back in a pass is due

log = get_logger("kravia_sync.engine.status")


class StatusPullBack:
    """The pull-back stage of a pass (and all of `kravia-sync refresh`)."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        client: KraviaClient,
        clock: Callable[[], datetime],
        mirror: KraviaMirror | None,
        run_id: int | None = None,
    ) -> None:
        """`mirror`: the pass's own, when it has one (a search it made already serves);
        `run_id`: the pass's, for the journal."""
        self.settings = settings
        self.store = store
        self.client = client
        self.clock = clock
        self._mirror = mirror
        self.run_id = run_id

    async def refresh(self, summary: RunSummary, *, force: bool = False, kept_out: int = 0) -> None:
        """Pull back what Kravia reports of its cases (status, capital left): one search of
        the mirror (`kravia_sync.engine.mirror`), unless this pass searched already. Unless
        `force`d, only once `status_every_seconds` passed since the last (the first pass only
        sets the clock), so a no-op pass calls nothing. One exception: a store that never
        searched Kravia's cases (new, lost, or restored to before its first search) and kept
        invoices out in this pass searches once, so that the next pass knows whether Kravia
        holds any of them already (`SourceDiff.kravia_has`; `kept_out`: how many this pass
        kept out)."""
        started = self.clock()
        every = timedelta(seconds=self.settings.kravia.status_every_seconds)
        mirror = self._mirror or KraviaMirror(self.store, self.client, clock=self.clock)
        if not force and every:
            due = await asyncio.to_thread(self.store.meta, STATUS_DUE)
            if due is None and (not kept_out or await asyncio.to_thread(mirror.searched_before)):
                await asyncio.to_thread(
                    self.store.set_meta, STATUS_DUE, (started + every).isoformat()
                )
                return
            if due is not None and started < datetime.fromisoformat(due):
                return
        searched = mirror.last
        if searched is None:
            try:
                searched = await mirror.search()
            except KraviaError as error:
                raise PassFailedError(error.stop_reason("search")) from None
        if searched is None:
            summary.counts["status_refresh_failed"] += 1
            return
        await asyncio.to_thread(self.store.set_meta, STATUS_DUE, (started + every).isoformat())
        summary.counts["status_read"] += searched.cases
        summary.counts["status_changed"] += searched.changed

    async def flag_gone(self, summary: RunSummary, ids: list[str]) -> None:
        """Cases in Kravia that left a complete read (`ids`): explained when Kravia reports
        them closed or nothing left, or money forwarded covers them (`gone_explained`), and
        then any note of theirs cleared; else noted for a person. Nothing is closed."""
        for start in range(0, len(ids), 500):
            cases = self.store.load_cases_by_id(ids[start : start + 500])
            in_kravia = [case for case in cases.values() if case.kravia_id is not None]
            # (A case never confirmed in Kravia has a review note that says why.)
            explained, unexplained = await self._judge_gone(in_kravia)
            if explained:
                summary.counts["gone_settled"] += len(explained)
            if unexplained:
                summary.counts["gone_unexplained"] += len(unexplained)
            notes = [
                (case.accounting_invoice_id, {"attention": note, "updated_at": self.clock()})
                for case in unexplained
                if case.attention != (note := gone_note(case))
            ]
            if notes:
                await asyncio.to_thread(self.store.set_case_notes, notes)
            await self._clear_notes(summary, explained)

    async def clear_back_in_source(self, summary: RunSummary, ids: list[str]) -> None:
        """Clear the gone note of each case whose invoice a complete read of this pass has
        again (`ids`): it is not gone, whatever became of it meanwhile."""
        if not ids:
            return
        cases = await asyncio.to_thread(self.store.load_cases_by_id, ids)
        await self._clear_notes(
            summary, [(case, "its invoice is back in the source") for case in cases.values()]
        )

    async def clear_gone_notes(self, summary: RunSummary) -> None:
        """Clear the note of every case noted as gone that is explained now (`kravia-sync
        refresh`, right after the pull-back)."""
        noted = await asyncio.to_thread(self.store.cases_noted, GONE_NOTE_START)
        explained, _ = await self._judge_gone(noted)
        await self._clear_notes(summary, explained)

    async def _judge_gone(
        self, cases: list[CaseState]
    ) -> tuple[list[tuple[CaseState, str]], list[CaseState]]:
        """These gone cases, explained (with why) and not."""
        # Only where Kravia's own word does not settle it are forwarded payments read.
        ids = [case.accounting_invoice_id for case in cases if not kravia_reports_settled(case)]
        forwarded = (
            await asyncio.to_thread(self.store.payments_on, ids, FORWARDED_PHASES) if ids else {}
        )
        explained: list[tuple[CaseState, str]] = []
        unexplained: list[CaseState] = []
        for case in cases:
            why = gone_explained(case, forwarded.get(case.accounting_invoice_id, ()))
            if why is None:
                unexplained.append(case)
            else:
                explained.append((case, why))
        return explained, unexplained

    async def _clear_notes(
        self, summary: RunSummary, explained: list[tuple[CaseState, str]]
    ) -> None:
        """Clear the gone note of each explained case, journaled with why (once: a note
        cleared already is not cleared again)."""
        now = self.clock()
        clearings = [
            (case.accounting_invoice_id, case.attention, self._cleared_entry(case, why, now))
            for case, why in explained
            if case.attention is not None and is_gone_note(case.attention)
        ]
        if not clearings:
            return
        cleared = await asyncio.to_thread(self.store.clear_case_notes, clearings, now=now)
        summary.counts["gone_notes_cleared"] += len(cleared)
        for aid, _, entry in clearings:
            if aid in cleared:
                log.info("note cleared", accounting_invoice_id=aid, why=entry.message)

    def _cleared_entry(self, case: CaseState, why: str, now: datetime) -> JournalEntry:
        return journal_entry(
            case,
            "note_cleared",
            uuid.uuid4().hex,
            JournalKind.DECISION,
            at=now,
            run_id=self.run_id,
            message=f"{why}; cleared the note: {case.attention}",
        )

    async def flag_duplicates(self, summary: RunSummary) -> None:
        """The net under every other guard: after a search of Kravia, any of our invoices
        Kravia holds twice is flagged on its case and in the run, for a person to withdraw
        the extra case in Kravia."""
        if self._mirror is None or self._mirror.last is None:
            return
        duplicates = await asyncio.to_thread(self.store.kravia_duplicates)
        notes: list[tuple[str, dict[str, object]]] = []
        for aid, kravia_ids in duplicates.items():
            ids = ", ".join(str(kravia_id) for kravia_id in kravia_ids)
            note = (
                f"Kravia holds {len(kravia_ids)} cases for this accountingInvoiceId ({ids}): "
                "withdraw the extra one in Kravia"
            )
            summary.counts["duplicated_in_kravia"] += 1
            summary.problems.append(
                {"source": "kravia", "record": aid, "field": "kravia", "reason": note}
            )
            notes.append((aid, {"attention": note}))
        if notes:
            await asyncio.to_thread(self.store.set_case_notes, notes)


async def refresh_statuses(
    settings: Settings,
    store: StateStore,
    client: KraviaClient,
    *,
    clock: Callable[[], datetime],
    lease: LeaseKeeper,
) -> RunSummary:
    """All of `kravia-sync refresh`: the status pull-back alone, forced, under the writer
    lease (taken here and given up at the end)."""
    summary = RunSummary(run_id=None, started_at=clock())
    clock_start = time.monotonic()
    lease.acquire()
    mirror = KraviaMirror(store, client, clock=clock)
    try:
        pull_back = StatusPullBack(settings, store, client=client, clock=clock, mirror=mirror)
        await pull_back.refresh(summary, force=True)
        if not summary.counts["status_refresh_failed"]:
            await pull_back.clear_gone_notes(summary)
    except (PassFailedError, LeaseLostError) as exc:
        summary.fail(str(exc))
    finally:
        lease.release()
    if summary.counts["status_refresh_failed"]:
        summary.status = RunStatus.FAILED
        summary.error = mirror.failure
    summary.close(client, clock_start=clock_start)
    return summary
