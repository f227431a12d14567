"""The Kravia API client: calls, their pace and their errors, and the readers of Kravia's answers.

What Kravia's API looks like (paths, keys, statuses, each ASSUMED one with its reason) is in
`kravia_sync.kravia.assumptions`; this module writes requests and reads answers through those
names only, so changing an assumption touches that module."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from kravia_sync.kravia.answers import (
    MoneyLine,
    SearchItem,
    Settlement,
    json_answer,
    parse_http_date,
    parse_register_id,
    parse_settlements,
    read_search_item,
    search_item_list,
    search_total,
)
from kravia_sync.kravia.assumptions import (
    ACTION_PATH,
    ACTION_START,
    BOOKKEEP_CREATES,
    BOOKKEEP_PATH,
    BOOKKEEP_REFERENCE_PARAM,
    CREDIT_NOTE_PATH,
    DETAILS_PATH,
    DOCUMENT_FIELD,
    DOCUMENT_PATH,
    DOCUMENT_TYPE_INVOICE,
    PAYMENT_PATH,
    REGISTER_PATH,
    SEARCH_ORDER_BY_LAST_UPDATED,
    SEARCH_PAGE_OVERLAP,
    SEARCH_PAGE_SIZE,
    SEARCH_PATH,
    SETTLEMENTS_PATH,
    WEBHOOK_PATH,
)
from kravia_sync.kravia.bodies import (
    build_credit_note_body,
    build_payment_body,
    build_register_body,
    dumps_exact,
    format_dotnet_time,
)
from kravia_sync.kravia.calls import KraviaCalls, Reservation
from kravia_sync.kravia.errors import (
    Failure,
    KraviaError,
    backoff_delay,
)
from kravia_sync.logging import get_logger
from kravia_sync.model import Invoice

__all__ = ["KraviaClient", "SearchResult"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Every case a search reported, and when (by Kravia's clock) its first page was served:
    every case updated before then is in `items`."""

    items: list[SearchItem]
    server_time: datetime | None  # None: Kravia's answers carried no readable Date header


class KraviaClient(KraviaCalls):
    """Async client for the calls kravia-sync makes. One attempt per call: retry policy lives
    with the engine, which journals every attempt."""

    async def register(
        self, invoice: Invoice, *, creditor_id: int, reservation: Reservation | None = None
    ) -> int:
        """Register the invoice for collection; the new Kravia invoice id."""
        body = dumps_exact(build_register_body(invoice, creditor_id))
        response = await self._call(
            "register",
            "POST",
            REGISTER_PATH,
            creates=True,
            content=body,
            headers={"Content-Type": "application/json"},
            reservation=reservation,
        )
        try:
            return parse_register_id(response.json())
        except ValueError as exc:
            # It was registered, but we cannot tell its id: look it up like an ambiguous call.
            raise KraviaError(Failure.AMBIGUOUS, str(exc), status=response.status_code) from None

    async def upload_document(
        self,
        kravia_id: int,
        *,
        name: str,
        content: bytes,
        reservation: Reservation | None = None,
    ) -> None:
        """Attach a copy of the original invoice (a PDF) to the case."""
        await self._call(
            "document",
            "POST",
            DOCUMENT_PATH.format(id=kravia_id),
            creates=True,
            params={"type": DOCUMENT_TYPE_INVOICE},
            files={DOCUMENT_FIELD: (name, content, "application/pdf")},
            per_case=True,
            reservation=reservation,
        )

    async def start(
        self, kravia_id: int, *, message: str, reservation: Reservation | None = None
    ) -> None:
        """Start the collection process for a registered case."""
        await self.send_action(kravia_id, ACTION_START, message=message, reservation=reservation)

    async def send_action(
        self,
        kravia_id: int,
        action: str,
        *,
        message: str,
        reservation: Reservation | None = None,
    ) -> None:
        """Send a case action by name (`Start`; others, such as a pause, are configured: their
        names are unpublished). Changes the case, so a lost answer is ambiguous."""
        await self._call(
            "action",
            "POST",
            ACTION_PATH.format(id=kravia_id),
            creates=True,
            params={"action": action},
            content=dumps_exact({"Message": message}),
            headers={"Content-Type": "application/json"},
            per_case=True,
            reservation=reservation,
        )

    async def register_payment(
        self,
        *,
        accounting_payment_id: str,
        paid_on: date,
        description: str,
        lines: Sequence[MoneyLine],
        reservation: Reservation | None = None,
    ) -> None:
        """Forward a payment the debtor made to the creditor. Kravia does not de-duplicate
        payments, so a lost answer is AMBIGUOUS: look (`payment_recorded`), never resend."""
        body = build_payment_body(
            accounting_payment_id=accounting_payment_id,
            paid_on=paid_on,
            description=description,
            lines=lines,
        )
        await self._call(
            "payment",
            "POST",
            PAYMENT_PATH,
            creates=True,
            content=dumps_exact(body),
            headers={"Content-Type": "application/json"},
            reservation=reservation,
        )

    async def register_credit_note(
        self,
        *,
        accounting_payment_id: str,
        credited_on: date,
        description: str,
        lines: Sequence[MoneyLine],
        reservation: Reservation | None = None,
    ) -> None:
        """Forward a credit note (sent with negative amounts). A lost answer is AMBIGUOUS."""
        body = build_credit_note_body(
            accounting_payment_id=accounting_payment_id,
            credited_on=credited_on,
            description=description,
            lines=lines,
        )
        await self._call(
            "creditnote",
            "POST",
            CREDIT_NOTE_PATH,
            creates=True,
            content=dumps_exact(body),
            headers={"Content-Type": "application/json"},
            reservation=reservation,
        )

    async def settlements(self, *, exclude_closed: bool = True) -> list[Settlement]:
        """Kravia's payouts to the creditor; with `exclude_closed`, only those not yet booked.
        An answer we cannot read in full fails (TRANSIENT): a payout we cannot see could be
        echoed back as a payment."""
        response = await self._call(
            "settlements",
            "GET",
            SETTLEMENTS_PATH,
            creates=False,
            params={"ExcludeClosed": "true" if exclude_closed else "false"},
        )
        try:
            return parse_settlements(json_answer(response))
        except ValueError as exc:
            raise KraviaError(Failure.TRANSIENT, str(exc), status=response.status_code) from None

    async def bookkeep_settlement(self, settlement_id: int, *, internal_accounting_id: str) -> None:
        """Mark a settlement booked in the creditor's accounts under `internal_accounting_id`."""
        await self._call(
            "bookkeep",
            "PATCH",
            BOOKKEEP_PATH.format(id=settlement_id),
            creates=BOOKKEEP_CREATES,
            params={BOOKKEEP_REFERENCE_PARAM: internal_accounting_id},
            per_case=True,
        )

    async def details(self, kravia_id: int) -> dict[str, Any]:
        """The case's details, numbers parsed exactly (see `case_standing`)."""
        response = await self._call(
            "details", "GET", DETAILS_PATH.format(id=kravia_id), creates=False, per_case=True
        )
        body = json_answer(response)
        if not isinstance(body, dict):
            raise KraviaError(Failure.TRANSIENT, f"unrecognised details answer: {str(body)[:200]}")
        return body

    async def search_updated_since(
        self, since: datetime, *, page_retries: int = 3, retry_base: float = 0.2
    ) -> SearchResult:
        """Every case updated at or after `since` (a time on Kravia's clock), following the
        offset paging to the end, with Kravia's time when the first page was served.

        Offset paging over a list ordered by update time shifts when a case is updated while
        we page (it moves to the end), which could carry an unseen case past a page edge. So
        consecutive pages overlap by SEARCH_PAGE_OVERLAP items, and the overlap must match:
        when it does not, the search starts again (up to `page_retries` times) and then fails
        as transient — never returning an incomplete list as if it were complete. The end is
        a page that brings nothing beyond the overlap, so a server that caps `top` lower than
        we ask still pages to the end. A page that fails transiently is read again. An item
        we cannot read fails the search (transient) for the same reason.
        """
        for _ in range(page_retries + 1):
            found = await self._search_once(since, page_retries=page_retries, base=retry_base)
            if found is not None:
                return found
        raise KraviaError(
            Failure.TRANSIENT, "cases kept moving while Kravia's search was paged; try later"
        )

    async def _search_once(
        self, since: datetime, *, page_retries: int, base: float
    ) -> SearchResult | None:
        """One full paging, or None when the pages shifted under us.

        Consecutive pages overlap (SEARCH_PAGE_OVERLAP items, at most half of what a page
        brought, so a server that serves fewer items than we ask still pages on), and the
        overlap must match. The end: the answer's total count reached, where it gives one, or
        a page that brings no case not seen already."""
        found: dict[int, SearchItem] = {}
        skip = 0
        tail: list[int] = []
        first_page_time: datetime | None = None
        while True:
            items, served_at, total = await self._search_page(
                since, skip, retries=page_retries, base=base
            )
            if skip == 0:
                first_page_time = served_at
            parsed_items = [read_search_item(item) for item in items]
            ids = [parsed.kravia_id for parsed in parsed_items]
            if tail and ids and ids[: len(tail)] != tail:
                return None  # (an empty page is the end: cases only move later, never go)
            new = [kravia_id for kravia_id in ids if kravia_id not in found]
            for parsed in parsed_items:
                found[parsed.kravia_id] = parsed
            if not new or (total is not None and skip + len(ids) >= total):
                return SearchResult(list(found.values()), first_page_time)
            overlap = min(SEARCH_PAGE_OVERLAP, len(ids) // 2)
            tail = ids[len(ids) - overlap :] if overlap else []
            skip += len(ids) - overlap

    async def _search_page(
        self, since: datetime, skip: int, *, retries: int, base: float
    ) -> tuple[list[dict[str, Any]], datetime | None, int | None]:
        """One page of the search, Kravia's time when it served it (its Date header), and the
        total count of matching cases where the answer gives one."""
        attempt = 0
        while True:
            try:
                response = await self._call(
                    "search",
                    "GET",
                    SEARCH_PATH,
                    creates=False,
                    params={
                        "byAscending": "True",
                        "lastUpdatedTime": format_dotnet_time(since),
                        "orderBy": SEARCH_ORDER_BY_LAST_UPDATED,
                        "skip": skip,
                        "top": SEARCH_PAGE_SIZE,
                    },
                )
                served_at = parse_http_date(response.headers.get("Date"))
                body = json_answer(response)
                return search_item_list(body), served_at, search_total(body)
            except (KraviaError, ValueError) as exc:
                failure = exc.failure if isinstance(exc, KraviaError) else Failure.TRANSIENT
                if failure is Failure.AUTH or attempt >= retries:
                    if isinstance(exc, KraviaError):
                        raise
                    raise KraviaError(Failure.TRANSIENT, str(exc)) from None
                hint = exc.retry_after if isinstance(exc, KraviaError) else None
                await asyncio.sleep(hint or backoff_delay(attempt, base=base, cap=5.0))
                attempt += 1

    async def configure_webhook(
        self, *, creditor_id: int, url: str, secret: str, enabled: bool
    ) -> None:
        """Set the creditor's webhook at Kravia (one per creditor): where Kravia sends its
        events, the secret it signs them with, and whether it sends them."""
        body = {"secret": secret, "enabled": enabled, "url": url}
        await self._call(
            "webhook",
            "PUT",
            WEBHOOK_PATH.format(id=creditor_id),
            creates=False,  # a PUT of the whole setting: sending it again does no harm
            content=dumps_exact(body),
            headers={"Content-Type": "application/json"},
        )

    async def check_token(self) -> None:
        """A cheap authenticated read; raises KraviaError(AUTH) for a bad token."""
        await self._call(
            "search",
            "GET",
            SEARCH_PATH,
            creates=False,
            params={
                "byAscending": "False",
                "orderBy": SEARCH_ORDER_BY_LAST_UPDATED,
                "skip": 0,
                "top": 1,
            },
        )
