"""First contact with a Kravia: one case end to end, read back, before any other.

While a state store has no confirmed contract with the configured Kravia (`policy.canary =
"on"`, the default), the first pass with a new invoice sends that one case through the
engine's own driver (register, its copy, Start: every call through the one gate), then reads
it back through its details and the search, and judges every assumption the engine relies on
(`kravia_sync.kravia.probe`). Nothing differs: the contract is recorded (meta `contract:<base_url>`)
and the pass goes on. Something differs: the contract is recorded as differing, the pass
stops with the report, and every later pass stops before sending anything until the answers,
read again, are ones the engine reads (or the canary is switched off).

The judgement is pure (`kravia_sync.kravia.probe`); this module only makes the calls and keeps the
record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from kravia_sync.engine.diff import WorkItem, WorkList
from kravia_sync.engine.errors import PassFailedError
from kravia_sync.engine.summary import RunSummary
from kravia_sync.errors import KraviaSyncError
from kravia_sync.kravia.answers import RawAnswer, parse_http_date
from kravia_sync.kravia.assumptions import SEARCH_PAGE_SIZE
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.contract import (
    CanaryAnswers,
    Contract,
    canary_findings,
    contract_of,
    recheck_findings,
    state_of,
)
from kravia_sync.kravia.errors import Failure, KraviaError, backoff_delay
from kravia_sync.kravia.probe import (
    Finding,
    Verdict,
    details_findings,
    differing,
    search_findings,
    settlements_findings,
)
from kravia_sync.lifecycle import CaseState, Step, Timing, next_step
from kravia_sync.logging import get_logger
from kravia_sync.settings import Settings
from kravia_sync.state.store import StateStore

__all__ = [
    "CanaryFailedError",
    "CanaryRun",
    "canary_stage",
    "contract_key",
    "probe",
    "report",
    "stored_contract",
]

log = get_logger("kravia_sync.engine.canary")

# Kravia's search is read back from this long before the canary's first answer.
READ_BACK_MARGIN = timedelta(minutes=1)
READ_BACK_TRIES = 3  # a read-back met with a 429, a 503 or no answer is tried this often
# Candidates looked at for one with a copy (so the upload is checked too).
CANDIDATES_FOR_A_COPY = 50


class CanaryFailedError(KraviaSyncError):
    """The canary found answers the engine cannot read: the pass stops, nothing more is sent."""

    def __init__(self, message: str, findings: Sequence[Finding]) -> None:
        super().__init__(message)
        self.findings = list(findings)


def contract_key(base_url: str) -> str:
    return f"contract:{base_url}"


def stored_contract(store: StateStore, base_url: str) -> Contract | None:
    text = store.meta(contract_key(base_url))
    return None if text is None else Contract.loads(text)


def report(base_url: str, findings: Sequence[Finding]) -> str:
    """Why the pass stops: every finding that differs, naming the field."""
    lines = "; ".join(
        f"{finding.assumption} (came back: {finding.seen})"
        + (f": {finding.note}" if finding.note else "")
        for finding in differing(findings)
    )
    return (
        f"first contact with Kravia at {base_url}: its answers differ from what kravia-sync "
        f"reads: {lines}. Nothing more is sent until they are read right; see `kravia-sync "
        'check --probe` and "Going live" in the documentation, docs/going-live.md (or set '
        'policy.canary = "off")'
    )


@dataclass
class CanaryRun:
    """The canary of one pass."""

    settings: Settings
    store: StateStore
    client: KraviaClient
    timing: Timing
    clock: Callable[[], datetime]

    @property
    def base_url(self) -> str:
        return self.settings.kravia.base_url

    async def before_work(
        self,
        work: WorkList,
        apply: Callable[[list[WorkItem]], Awaitable[list[CaseState]]],
    ) -> str:
        """What the canary did (`confirmed`, `rechecked`, `inconclusive`, `waiting`, or
        `known`: a contract was confirmed before); the case it sent is taken out of `work`.
        CanaryFailedError when something differs."""
        contract = stored_contract(self.store, self.base_url)
        if contract is not None and contract.confirmed:
            return "known"
        if contract is not None:
            await self._recheck(contract)
            return "rechecked"
        item = self._candidate(work)
        if item is None:
            return "waiting"
        work.remove(item)
        answers = await self._send(item, apply)
        if answers is None:
            log.warning(
                "canary inconclusive: its case did not reach Kravia this pass (a fault, not an "
                "answer's shape); the next new case is the canary",
                accounting_invoice_id=item.case.accounting_invoice_id,
            )
            return "inconclusive"
        findings = canary_findings(answers)
        return self._keep(contract_of(findings, now=self.clock(), answers=answers))

    def _keep(self, contract: Contract) -> str:
        self.store.set_meta(contract_key(self.base_url), contract.dumps())
        if not contract.confirmed:
            raise CanaryFailedError(report(self.base_url, contract.findings), contract.findings)
        log.info(
            "canary confirmed: Kravia's answers are read as assumed",
            base_url=self.base_url,
            accounting_invoice_id=contract.accounting_invoice_id,
        )
        return "confirmed"

    def _candidate(self, work: WorkList) -> WorkItem | None:
        """The first new invoice to register, preferring one with a copy (not one the gate
        keeps out, which is driven only to adopt a case Kravia may hold)."""
        now = self.clock()
        first: WorkItem | None = None
        looked = 0
        for item in work:
            if item.invoice is None or item.kept_out is not None:
                continue
            decision = next_step(
                item.case, start=self.settings.policy.start, now=now, timing=self.timing
            )
            if decision.step is not Step.REGISTER:
                continue
            if item.invoice.document is not None:
                return item
            first = first or item
            looked += 1
            if looked >= CANDIDATES_FOR_A_COPY:
                break
        return first

    async def _send(
        self,
        item: WorkItem,
        apply: Callable[[list[WorkItem]], Awaitable[list[CaseState]]],
    ) -> CanaryAnswers | None:
        """Drive the canary's case through the engine's driver, watching Kravia's answers,
        then read it back; None when it did not reach Kravia (nothing learnt)."""
        seen: list[RawAnswer] = []
        with self.client.watching(seen.append):
            finals = await apply([item])
        case = finals[0] if finals else None
        register = _ok(seen, "register")
        changed = [_ok(seen, operation) for operation in ("register", "document", "action")]
        if case is None or not any(changed):
            # Nothing it sent was answered (a fault, a refusal, or a case Kravia already had
            # and that needed nothing): its read-back could not show what a change looks like.
            return None
        first_date = next(
            (moment for moment in (parse_http_date(a.date) for a in seen) if moment), None
        )
        since = (first_date or self.client.kravia_now() or self.clock()) - READ_BACK_MARGIN
        details, search = await self._read_back(case.kravia_id, since)
        if details is None and search is None:
            return None
        return CanaryAnswers(
            kravia_id=case.kravia_id,
            accounting_invoice_id=case.accounting_invoice_id,
            register=register,
            uploaded=_ok(seen, "document") is not None,
            started=_ok(seen, "action") is not None,
            first_date=first_date,
            details=details,
            search=search,
            search_page_size=SEARCH_PAGE_SIZE,
        )

    async def _read_back(
        self, kravia_id: int | None, since: datetime
    ) -> tuple[RawAnswer | None, RawAnswer | None]:
        """The case's details and a search page from `since` (each None when it could not
        be read; a refused token stops the pass)."""
        details: RawAnswer | None = None
        search: RawAnswer | None = None
        for attempt in range(READ_BACK_TRIES):
            try:
                if details is None and kravia_id is not None:
                    details = await self.client.look("details", kravia_id=kravia_id)
                search = await self.client.look("search", since=since, top=SEARCH_PAGE_SIZE)
            except KraviaError as error:
                if error.failure.stops_pass:
                    raise
                if error.failure is not Failure.TRANSIENT or attempt + 1 == READ_BACK_TRIES:
                    log.warning("canary read-back failed", error=str(error))
                    break
                # A 429 or a 503 is Kravia asking for time, not an answer about the case.
                await asyncio.sleep(error.retry_after or backoff_delay(attempt, base=1, cap=5))
            else:
                break
        return details, search

    async def _recheck(self, contract: Contract) -> None:
        """A contract that differed, judged again: the canary's case read back (nothing is
        sent) and the register answer's stored shape, with today's readers."""
        first = contract.evidence.get("first_date")
        since = (
            datetime.fromisoformat(first) if first else contract.checked_at - timedelta(days=1)
        ) - READ_BACK_MARGIN
        details, search = await self._read_back(contract.kravia_id, since)
        if details is None and search is None:
            raise CanaryFailedError(
                report(self.base_url, contract.findings)
                + " (its case could not be read again this pass)",
                contract.findings,
            )
        findings = recheck_findings(contract, details=details, search=search)
        again = Contract(
            state=state_of(findings),
            checked_at=self.clock(),
            accounting_invoice_id=contract.accounting_invoice_id,
            kravia_id=contract.kravia_id,
            findings=tuple(findings),
            register_shape=contract.register_shape,
            evidence=contract.evidence,
        )
        self._keep(again)


async def probe(client: KraviaClient, *, kravia_id: int | None) -> list[Finding]:
    """`check --probe`: read-only calls (the newest case in the search, the unbooked
    settlements, the details of a case the state store knows) judged against what the engine
    assumes. KraviaError when Kravia cannot be reached or refuses the token."""
    findings = search_findings(await client.look("search", top=1))
    findings += settlements_findings(await client.look("settlements"))
    if kravia_id is None:
        return [
            *findings,
            Finding("details: a known case", "no case in the state store", Verdict.NOT_SEEN),
        ]
    try:
        details = await client.look("details", kravia_id=kravia_id)
    except KraviaError as error:
        if error.failure.stops_pass:
            raise
        note = f"case {kravia_id} could not be read: {error.failure.value} ({error.status})"
        return [*findings, Finding("details: a known case", "no answer", Verdict.NOT_SEEN, note)]
    return findings + details_findings(details)


def _ok(answers: list[RawAnswer], operation: str) -> RawAnswer | None:
    return next((a for a in answers if a.operation == operation and 200 <= a.status < 300), None)


async def canary_stage(
    canary: CanaryRun,
    work: WorkList,
    summary: RunSummary,
    apply: Callable[[list[WorkItem]], Awaitable[list[CaseState]]],
    *,
    on_failed: Callable[[], None],
) -> None:
    """First contact, as a stage of a pass: while no contract with this Kravia is confirmed,
    one case goes end to end and is read back before the rest of the work (it is taken out
    of `work`). When Kravia's answers differ from what the engine reads, `on_failed` is
    called, the differences are the summary's problems and the pass fails here."""
    try:
        outcome = await canary.before_work(work, apply)
    except CanaryFailedError as exc:
        on_failed()
        summary.problems.extend(
            {
                "source": "kravia",
                "record": canary.base_url,
                "field": finding.assumption,
                "reason": f"came back: {finding.seen}" + (f"; {finding.note}" * bool(finding.note)),
            }
            for finding in exc.findings
            if finding.verdict.value == "differs"
        )
        summary.counts["canary_differs"] += 1
        raise PassFailedError(str(exc)) from None
    except KraviaError as exc:
        raise PassFailedError(exc.stop_reason("search")) from None
    if outcome not in {"known", "waiting"}:
        summary.counts[f"canary_{outcome}"] += 1
