"""The mirror of Kravia's cases: what Kravia's search reported, kept in the state store.

Kravia documents no idempotency key, so before an accountingInvoiceId is registered the
engine must know whether Kravia already has it, also when the state store was lost, restored
from an older copy, or written by an older version. The mirror answers that locally:

- A search pages through every case Kravia reports updated since the last complete search
  (from the beginning of time on a cold start), and stores each by its Kravia id.
- Windows are measured on **Kravia's clock**: the cursor is the time Kravia's `Date` header
  gave when the first page was served, and each search starts a margin before it. Our clock
  can be off by any amount without a case slipping between two searches.
- A search that cannot be read in full stores nothing: the mirror is then not fresh, and
  nothing is registered or settled on it until a later search succeeds.
- Only a search made in the pass itself counts: a time stored by an earlier run may be on a
  clock that has moved since. Registers need a search of their pass; a register whose answer
  was lost is settled on a search that began (on Kravia's clock) at least
  `retry.settle_seconds` after the call was sent or its answer lost. One search serves every
  case of the pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kravia_sync.identity import OwnIds, Verdict, identity_verdict
from kravia_sync.kravia.answers import SearchItem, details_summary, parse_dotnet_time
from kravia_sync.kravia.client import KraviaClient, SearchResult
from kravia_sync.kravia.errors import Failure, KraviaError
from kravia_sync.logging import get_logger, redact
from kravia_sync.state.records import MirrorItem
from kravia_sync.state.store import StateStore

__all__ = ["MIRROR_EPOCH", "SEARCH_OVERLAP", "KraviaMirror", "MirrorSync"]

log = get_logger("kravia_sync.engine.mirror")

# A cold start searches from here: every case the creditor ever had in Kravia.
MIRROR_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# Each search starts this long before the last one began (on Kravia's clock): Kravia's `Date`
# has a resolution of a second, and a case written in a transaction that began before the
# last search may carry a time just before it.
SEARCH_OVERLAP = timedelta(minutes=2)
CURSOR = "mirror_cursor"  # Kravia's time when the last complete search began


@dataclass(frozen=True, slots=True)
class MirrorSync:
    """One complete search, stored."""

    began: datetime  # our clock
    cases: int  # how many Kravia reported
    changed: int  # how many of our cases changed status or capital


class KraviaMirror:
    """The mirror for one pass (or one `refresh`). Only a search made in this pass counts as
    fresh (a time stored by an earlier run could be on a clock that has since moved);
    searches coalesce, and a failed search is not repeated within the pass (`max_searches`
    bounds them too)."""

    def __init__(
        self,
        store: StateStore,
        client: KraviaClient | None,
        *,
        clock: Callable[[], datetime],
        max_searches: int = 20,
        gather: float = 0.5,
    ) -> None:
        self._store = store
        self._client = client
        self._clock = clock
        self._max_searches = max_searches
        self._gather = gather
        self._searches = 0
        self._lock = asyncio.Lock()
        # When the last search of this pass began: on Kravia's clock where its answers say,
        # else on ours.
        self.began: datetime | None = None
        self.failure: str | None = None  # why the last search of this pass failed
        self.last: MirrorSync | None = None

    def searched_before(self) -> bool:
        """Whether a complete search was ever stored in this state store."""
        return self._store.meta(CURSOR) is not None

    def fresh_since(self, moment: datetime | None) -> bool:
        """Whether a search of this pass began at or after `moment` (None: any search)."""
        return self.began is not None and (moment is None or self.began >= moment)

    async def ensure_fresh(self, moment: datetime | None) -> bool:
        """Search unless a search of this pass began at or after `moment` (None: any);
        whether one has now. `moment` is on Kravia's clock (`KraviaClient.kravia_now`) where
        it is known. Callers waiting together share one search. `KraviaError`s that stop the
        pass (a refused token, a wrong base URL) are raised; others leave it False."""
        async with self._lock:
            if self.fresh_since(moment):
                return True
            if self.failure is not None or self._searches >= self._max_searches:
                return False
            if self._searches and self._gather:
                # Not the pass's first search: look-ups falling due now, one after another,
                # share it.
                await asyncio.sleep(self._gather)
            await self.search()
            return self.fresh_since(moment)

    async def search(self) -> MirrorSync | None:
        """One search from the cursor, stored; None (and `failure` set) when it failed."""
        if self._client is None:
            raise ValueError("a client is needed to search Kravia")
        self._searches += 1
        cursor = self._store.meta(CURSOR)
        since = MIRROR_EPOCH if cursor is None else datetime.fromisoformat(cursor) - SEARCH_OVERLAP
        began = self._clock()
        # When the search began on Kravia's clock, estimated the way the engine estimates
        # when a call was sent (`KraviaClient.kravia_now`), so the two compare exactly.
        began_on_kravias_clock = self._client.kravia_now()
        try:
            result = await self._client.search_updated_since(since)
        except KraviaError as exc:
            if exc.failure.stops_pass:
                raise
            self.failure = redact(str(exc))
            log.warning(
                "Kravia's search failed: nothing is registered or settled on it",
                error=self.failure,
            )
            return None
        next_cursor = _next_cursor(result, cursor)
        meta = {} if next_cursor is None else {CURSOR: next_cursor.isoformat()}
        changed = await asyncio.to_thread(
            self._store.record_mirror,
            [_mirror_item(item) for item in result.items],
            meta=meta,
            now=self._clock(),
        )
        self.began = began_on_kravias_clock or result.server_time or began
        self.failure = None
        self.last = MirrorSync(began, len(result.items), len(changed))
        return self.last

    async def identify(self, kravia_ids: Collection[int]) -> bool:
        """Read the details of cases whose search items carried no accountingInvoiceId, and
        mirror the id they do carry; whether every one of them now has one. A failed read
        (short of one that stops the pass) leaves them unidentified."""
        if self._client is None:
            raise ValueError("a client is needed to read Kravia's cases")
        items: list[MirrorItem] = []
        for kravia_id in kravia_ids:
            try:
                summary = details_summary(await self._client.details(kravia_id))
            except KraviaError as exc:
                if exc.failure.stops_pass:
                    raise
                return False
            if summary.kravia_id != kravia_id or summary.accounting_invoice_id is None:
                return False
            items.append(_mirror_item(summary))
        await asyncio.to_thread(self._store.record_mirror, items, meta={}, now=self._clock())
        return True

    async def refresh_case(self, kravia_id: int) -> bool:
        """Read one case's details and store its status and capital, as a search would (what
        a webhook asks for); whether one of our cases changed. KraviaError when the details
        cannot be read or name another case."""
        if self._client is None:
            raise ValueError("a client is needed to read Kravia's cases")
        summary = details_summary(await self._client.details(kravia_id))
        if summary.kravia_id != kravia_id:
            raise KraviaError(
                Failure.TRANSIENT,
                f"the details of case {kravia_id} are those of case {summary.kravia_id}",
            )
        changed = await asyncio.to_thread(
            self._store.record_mirror, [_mirror_item(summary)], meta={}, now=self._clock()
        )
        return bool(changed)

    def verdict(
        self,
        accounting_invoice_id: str,
        invoice_number: str,
        *,
        fallback_id: str,
        not_these: Collection[int] = (),
        own_ids: OwnIds | None = None,
    ) -> Verdict:
        """Whether Kravia (as last mirrored) already has this invoice (`identity_verdict`);
        `not_these`: Kravia ids a person declared are not this invoice."""
        known = self._store.known_in_kravia(accounting_invoice_id, invoice_number)
        return identity_verdict(
            accounting_invoice_id,
            invoice_number,
            fallback_id=fallback_id,
            known=[case for case in known if case.kravia_id not in not_these],
            own_ids=own_ids,
        )


def _mirror_item(item: SearchItem) -> MirrorItem:
    """What the mirror keeps of a case as a search item (or its details) tells it."""
    return MirrorItem(
        item.kravia_id,
        item.accounting_invoice_id,
        item.invoice_number,
        item.status,
        item.remaining_capital,
        item.updated,
    )


def _next_cursor(result: SearchResult, cursor: str | None) -> datetime | None:
    """Kravia's time when this search began: its Date header, or where Kravia sent none, the
    newest update it reported; else the cursor stays."""
    if result.server_time is not None:
        return result.server_time
    updates = [t for item in result.items if (t := parse_dotnet_time(item.updated)) is not None]
    if updates:
        return max(updates)
    return None if cursor is None else datetime.fromisoformat(cursor)
