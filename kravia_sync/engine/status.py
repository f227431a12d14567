"""What Kravia tells back, after a pass has sent what it had to: the status and capital left of
its cases (one search of the mirror, when due), cases gone from the source that Kravia still
collects, and any invoice Kravia holds twice. Each is flagged on its case and in the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from kravia_sync.engine.errors import PassFailedError
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.engine.summary import RunStatus, RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import KraviaError
from kravia_sync.lifecycle import CaseState, note_columns
from kravia_sync.settings import Settings
from kravia_sync.state.errors import LeaseLostError
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.store import StateStore

__all__ = ["STATUS_DUE", "StatusPullBack", "refresh_statuses"]

STATUS_DUE = "status_due"  # meta key: when the next pull-back in a pass is due


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
    ) -> None:
        """`mirror`: the pass's own, when it has one (a search it made already serves)."""
        self.settings = settings
        self.store = store
        self.client = client
        self.clock = clock
        self._mirror = mirror

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
        """Cases in Kravia that left a complete read (`ids`): explained when Kravia reports nothing
        left to collect (paid, credited), else noted for a person. Nothing is closed."""
        flagged: list[CaseState] = []
        for start in range(0, len(ids), 500):
            cases = self.store.load_cases_by_id(ids[start : start + 500])
            for case in cases.values():
                if case.kravia_id is None:
                    continue  # never confirmed in Kravia: its review note says why
                if case.kravia_remaining is not None and case.kravia_remaining <= 0:
                    summary.counts["gone_settled"] += 1
                    continue
                summary.counts["gone_unexplained"] += 1
                left = "" if case.kravia_remaining is None else f" ({case.kravia_remaining} left)"
                note = (
                    "no longer in the source, and no payment or credit note forwarded explains "
                    f"it: Kravia still collects{left}. Was it paid? Forward the payment, or "
                    "stop the case in Kravia"
                )
                if case.attention != note:
                    flagged.append(replace(case, attention=note, updated_at=self.clock()))
        if flagged:
            notes = [(c.accounting_invoice_id, note_columns(c)) for c in flagged]
            await asyncio.to_thread(self.store.set_case_notes, notes)

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
    except (PassFailedError, LeaseLostError) as exc:
        summary.fail(str(exc))
    finally:
        lease.release()
    if summary.counts["status_refresh_failed"]:
        summary.status = RunStatus.FAILED
        summary.error = mirror.failure
    summary.close(client, clock_start=clock_start)
    return summary
