"""The first contact with a Kravia, judged: what the canary case's answers show against what the
engine assumes, and the contract recorded from them (what a later pass checks again). Pure:
the calls are made by `kravia_sync.engine.canary`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from kravia_sync.kravia.answers import (
    RawAnswer,
    case_progress,
    field_of,
    parse_http_date,
    parse_search_items,
)
from kravia_sync.kravia.assumptions import (
    DETAILS_ACTIONS_KEY,
    DETAILS_DOCUMENTS_KEY,
)
from kravia_sync.kravia.errors import KraviaError
from kravia_sync.kravia.probe import (
    Finding,
    Verdict,
    details_findings,
    differing,
    field_shape,
    register_finding,
    register_findings,
    sample_of,
    search_findings,
    shape_of,
    shape_tree,
    zone_finding,
)

__all__ = [
    "CanaryAnswers",
    "Contract",
    "ContractState",
    "canary_findings",
    "contract_of",
    "recheck_findings",
    "rejudged_register",
    "state_of",
    "zone_evidence",
    "zone_from_evidence",
]


@dataclass(frozen=True, slots=True)
class CanaryAnswers:
    """What the canary saw of its one case: the answers to its calls and the read-back."""

    kravia_id: int | None
    accounting_invoice_id: str
    register: RawAnswer | None  # None: not registered by this canary (adopted, or a fault)
    uploaded: bool  # a copy was sent and accepted
    started: bool  # Start was sent and accepted
    first_date: datetime | None  # Kravia's Date on the first answer of the canary's calls
    details: RawAnswer | None
    search: RawAnswer | None
    search_page_size: int = 100


def canary_findings(answers: CanaryAnswers) -> list[Finding]:
    """Every assumption the engine relies on, checked on the one case the canary sent."""
    findings = register_findings(answers.register)
    if answers.details is None:
        findings.append(Finding("details: read back", "no answer", Verdict.NOT_SEEN))
    else:
        findings.extend(details_findings(answers.details))
        findings.extend(_progress_findings(answers))
    if answers.search is None:
        findings.append(Finding("search: read back", "no answer", Verdict.NOT_SEEN))
    else:
        page = search_findings(answers.search)
        findings.extend(f for f in page if not f.assumption.startswith("search: lastUpdated"))
        findings.append(_found_finding(answers)[0])
    findings.append(zone_from_evidence(zone_evidence(answers)))
    return findings


def zone_evidence(answers: CanaryAnswers) -> dict[str, str]:
    """What the time-zone check needs, kept with the contract: the case's `lastUpdatedTime`
    right after the canary's calls, and Kravia's Date headers before and after them (times
    only, nothing personal)."""
    updated: str | None = None
    last_date: str | None = None
    if answers.details is not None:
        if isinstance(answers.details.body, Mapping):
            raw = field_of(answers.details.body, "lastUpdatedTime")
            updated = raw if isinstance(raw, str) else None
        last_date = answers.details.date
    if answers.search is not None:
        if updated is None:
            updated = _found_finding(answers)[1]
        last_date = last_date or answers.search.date
    evidence = {"updated": updated, "last_date": last_date}
    if answers.first_date is not None:
        evidence["first_date"] = answers.first_date.isoformat()
    return {key: value for key, value in evidence.items() if value is not None}


def zone_from_evidence(evidence: Mapping[str, str]) -> Finding:
    """The time-zone finding from `zone_evidence` (judged again with today's readers)."""
    first = evidence.get("first_date")
    return zone_finding(
        evidence.get("updated"),
        not_before=None if first is None else datetime.fromisoformat(first),
        not_after=parse_http_date(evidence.get("last_date")),
        assumption="lastUpdatedTime is UTC (compared with Kravia's Date headers)",
    )


def _progress_findings(answers: CanaryAnswers) -> list[Finding]:
    assert answers.details is not None  # noqa: S101 - only called with details
    body = answers.details.body
    assert isinstance(body, Mapping)  # noqa: S101 - details_findings judged it
    progress = case_progress(body)
    findings = []
    if answers.uploaded:
        findings.append(
            _expected(
                "details: the uploaded copy is listed",
                progress.documented,
                field_shape(body, DETAILS_DOCUMENTS_KEY, depth=1),
            )
        )
    if answers.started:
        findings.append(
            _expected(
                "details: a started case shows it (status, or Start no longer available)",
                progress.started,
                field_shape(body, DETAILS_ACTIONS_KEY, depth=2),
            )
        )
    return findings


def _expected(assumption: str, value: bool | None, seen: str) -> Finding:
    if value is None:
        return Finding(assumption, seen, Verdict.NOT_SEEN, "the details do not say")
    if value:
        return Finding(assumption, seen, Verdict.HOLDS)
    return Finding(assumption, seen, Verdict.DIFFERS, "the details say the opposite")


def _found_finding(answers: CanaryAnswers) -> tuple[Finding, str | None]:
    """Whether the search lists the canary's case under its accountingInvoiceId (and that
    item's `lastUpdatedTime`)."""
    assumption = "search: lists the case under its accountingInvoiceId"
    assert answers.search is not None  # noqa: S101 - only called with a search
    try:
        items = parse_search_items(answers.search.body)
    except (ValueError, KraviaError):
        return Finding(assumption, "unreadable search", Verdict.DIFFERS), None
    mine = [
        item
        for item in items
        if item.kravia_id == answers.kravia_id
        or item.accounting_invoice_id == answers.accounting_invoice_id
    ]
    if not mine:
        full = len(items) >= answers.search_page_size
        verdict = Verdict.NOT_SEEN if full else Verdict.DIFFERS
        note = "beyond the first page" if full else "the search does not list the case"
        return Finding(assumption, f"{len(items)} item(s)", verdict, note), None
    item = mine[0]
    if item.accounting_invoice_id is None:
        note = "listed without it: the engine reads the details to identify it"
        return Finding(assumption, "no accountingInvoiceId", Verdict.NOT_SEEN, note), item.updated
    if item.accounting_invoice_id != answers.accounting_invoice_id:
        note = "listed under another accountingInvoiceId"
        return Finding(assumption, "accountingInvoiceId: string", Verdict.DIFFERS, note), None
    if answers.kravia_id is not None and item.kravia_id != answers.kravia_id:
        note = "listed under another id than register answered"
        return Finding(assumption, "id: int", Verdict.DIFFERS, note), item.updated
    return Finding(assumption, "accountingInvoiceId: string", Verdict.HOLDS), item.updated


class ContractState(StrEnum):
    CONFIRMED = "confirmed"  # the canary found nothing that differs
    DIFFERS = "differs"  # the canary found something the engine cannot read


@dataclass(frozen=True, slots=True)
class Contract:
    """What the canary found at a Kravia (kept in the state store's meta table under
    `contract:<base_url>`), with what is needed to judge it again without sending: the
    register answer's shape and the case."""

    state: ContractState
    checked_at: datetime
    accounting_invoice_id: str | None
    kravia_id: int | None
    findings: tuple[Finding, ...]
    register_shape: object = None  # the register answer's shape (`shape_tree`), if seen
    evidence: dict[str, str] = field(default_factory=dict)  # time texts, no personal data

    @property
    def confirmed(self) -> bool:
        return self.state is ContractState.CONFIRMED

    def dumps(self) -> str:
        return json.dumps(
            {
                "state": self.state.value,
                "checked_at": self.checked_at.astimezone(UTC).isoformat(),
                "accounting_invoice_id": self.accounting_invoice_id,
                "kravia_id": self.kravia_id,
                "findings": [finding.to_dict() for finding in self.findings],
                "register_shape": self.register_shape,
                "evidence": self.evidence,
            }
        )

    @classmethod
    def loads(cls, text: str) -> Contract:
        data = json.loads(text)
        return cls(
            state=ContractState(data["state"]),
            checked_at=datetime.fromisoformat(data["checked_at"]),
            accounting_invoice_id=data.get("accounting_invoice_id"),
            kravia_id=data.get("kravia_id"),
            findings=tuple(Finding.from_dict(item) for item in data.get("findings", [])),
            register_shape=data.get("register_shape"),
            evidence=dict(data.get("evidence") or {}),
        )


def state_of(findings: Iterable[Finding]) -> ContractState:
    return ContractState.DIFFERS if differing(findings) else ContractState.CONFIRMED


def contract_of(
    findings: Sequence[Finding],
    *,
    now: datetime,
    answers: CanaryAnswers,
) -> Contract:
    """The contract the canary's findings make."""
    register = answers.register
    body = None if register is None else register.body
    return Contract(
        state=state_of(findings),
        checked_at=now,
        accounting_invoice_id=answers.accounting_invoice_id,
        kravia_id=answers.kravia_id,
        findings=tuple(findings),
        register_shape=None if register is None else shape_tree(body),
        evidence=zone_evidence(answers),
    )


def rejudged_register(contract: Contract) -> list[Finding]:
    """The register finding judged again, with today's readers, on the stored shape."""
    assumption = "register: the answer carries the new integer id (bare, id or invoiceId)"
    if contract.register_shape is None:
        return [Finding(assumption, "no answer", Verdict.NOT_SEEN)]
    sample = sample_of(contract.register_shape)
    return [register_finding(assumption, sample, shape_of(sample, depth=1))]


def recheck_findings(
    contract: Contract, *, details: RawAnswer | None, search: RawAnswer | None
) -> list[Finding]:
    """A differing contract judged again with today's readers, without sending anything: the
    canary's case read back now, the register answer and the times as they were stored."""
    stored = {finding.assumption for finding in contract.findings}
    answers = CanaryAnswers(
        kravia_id=contract.kravia_id,
        accounting_invoice_id=contract.accounting_invoice_id or "",
        register=None,
        uploaded=any("uploaded copy" in assumption for assumption in stored),
        started=any("started case" in assumption for assumption in stored),
        first_date=None,
        details=details,
        search=search,
    )
    fresh = [
        finding
        for finding in canary_findings(answers)
        if not finding.assumption.startswith(("register:", "lastUpdatedTime"))
    ]
    return [*rejudged_register(contract), *fresh, zone_from_evidence(contract.evidence)]
