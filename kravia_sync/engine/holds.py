"""Holds on invoices already in Kravia: a held invoice cannot be taken back, so its case is
flagged in every run until released, and with `policy.hold_action` a started case is sent that
action once, through the same door as every call (a place in flight, the intent, the call)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from kravia_sync.engine.driver import journal_entry
from kravia_sync.engine.errors import PassFailedError
from kravia_sync.engine.summary import PlannedAction, StageOutcome
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import KraviaError
from kravia_sync.lifecycle import IN_KRAVIA_PHASES, CaseState, Phase, note_columns
from kravia_sync.logging import redact
from kravia_sync.settings import Settings
from kravia_sync.state.committer import GroupCommitter
from kravia_sync.state.errors import LeaseLostError
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.records import CaseWrite, JournalEntry, JournalKind, WriteStatus
from kravia_sync.state.store import StateStore

__all__ = ["HoldEffect", "HoldsInKravia", "hold_effect", "hold_effect_text"]


class HoldEffect(StrEnum):
    """What a hold comes to for one case: where the case is, and `policy.hold_action`."""

    NOTHING_TO_PAUSE = "nothing_to_pause"  # not in Kravia: nothing is sent while it is held
    PAUSE_NEXT_PASS = "pause_next_pass"  # in collection: the next pass sends the hold action
    PAUSE_SENT = "pause_sent"  # the hold action went out (how it went: the case's note)
    PAUSE_BY_HAND = "pause_by_hand"  # in Kravia, and no pass pauses it: a person does


def hold_effect(case: CaseState | None, action: str | None) -> HoldEffect:
    """What holding `case` comes to, `action` being `policy.hold_action` (None: unset). The
    hold action goes only to a case in collection, once per hold."""
    if case is None or not _in_kravia(case):
        return HoldEffect.NOTHING_TO_PAUSE
    if case.hold_action_at is not None:
        return HoldEffect.PAUSE_SENT
    if action and case.phase is Phase.STARTED:
        return HoldEffect.PAUSE_NEXT_PASS
    return HoldEffect.PAUSE_BY_HAND


def _in_kravia(case: CaseState) -> bool:
    return case.phase in IN_KRAVIA_PHASES or case.kravia_id is not None


def hold_effect_text(case: CaseState | None, action: str | None) -> str:
    """`hold_effect` in words, for `hold`, `status` and `plan`."""
    effect = hold_effect(case, action)
    if case is None or effect is HoldEffect.NOTHING_TO_PAUSE:
        return "not in Kravia: nothing is sent for it while it is held, so nothing to pause"
    where = f"already in Kravia ({case.phase.value}, Kravia id {case.kravia_id})"
    if effect is HoldEffect.PAUSE_NEXT_PASS:
        return f"{where}: the next pass sends {action!r} to pause it"
    if effect is HoldEffect.PAUSE_SENT:
        return f"{where}: {case.attention or 'the hold action was sent'}"
    why = (
        "set policy.hold_action to have a pass send the pause"
        if not action
        else f"{action!r} is sent only to a case in collection"
    )
    return f"{where}: pause it in Kravia yourself ({why})"


class HoldsInKravia:
    """The holds stage of a pass: every held invoice Kravia already has, flagged (and paused
    where configured), with what it did counted in a `StageOutcome`."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        client: KraviaClient | None,
        committer: GroupCommitter | None,
        lease: LeaseKeeper | None,
        clock: Callable[[], datetime],
        run_id: int | None,
        holds: dict[str, str],
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.committer = committer
        self._lease = lease
        self.clock = clock
        self._run_id = run_id
        self._holds = holds

    async def flag(self, outcome: StageOutcome, *, dry_run: bool) -> None:
        """A held invoice already in Kravia cannot be taken back: it is flagged on the case and
        in every run until released; with `policy.hold_action`, a started case is also sent
        that action once (journaled; a lost answer is left to a person, never resent)."""
        action = self.settings.policy.hold_action
        for case, reason in self._held_in_kravia():
            outcome.counts["held_in_kravia"] += 1
            flagged = case
            if action and hold_effect(case, action) is HoldEffect.PAUSE_NEXT_PASS:
                if dry_run:
                    outcome.counts["hold_actions_to_send"] += 1
                    continue
                flagged = await self._send_action(case, action, reason, outcome)
            paused = flagged.attention == _paused_note(reason, action)
            if flagged.hold_action_at is None:  # no action configured, or it waits
                note = f"on hold ({reason}) but already in Kravia: pause it in Kravia"
                if flagged.attention != note:
                    flagged = replace(flagged, attention=note, updated_at=self.clock())
            if not paused:
                outcome.counts["held_not_paused"] += 1
                outcome.problems.append(
                    {
                        "source": case.source,
                        "record": case.record_key,
                        "field": "hold",
                        "reason": f"{flagged.attention} (Kravia id {case.kravia_id})",
                    }
                )
            if flagged != case and not dry_run:
                notes = [(flagged.accounting_invoice_id, note_columns(flagged))]
                await asyncio.to_thread(self.store.set_case_notes, notes)

    def planned(self) -> list[PlannedAction]:
        """What `plan` shows of the held cases Kravia has: each with its hold's reason and
        what comes of it (step `hold_action` when the next pass sends the pause)."""
        action = self.settings.policy.hold_action
        return [
            PlannedAction(
                source=case.source,
                accounting_invoice_id=case.accounting_invoice_id,
                invoice_number=case.invoice_number,
                change="held",
                step=(
                    "hold_action"
                    if hold_effect(case, action) is HoldEffect.PAUSE_NEXT_PASS
                    else "held"
                ),
                detail=f"on hold: {reason}; {hold_effect_text(case, action)}",
            )
            for case, reason in self._held_in_kravia()
        ]

    def _held_in_kravia(self) -> list[tuple[CaseState, str]]:
        """Cases already in Kravia whose invoice is on hold, with the hold's reason."""
        found: list[tuple[CaseState, str]] = []
        for invoice, reason in self._holds.items():
            found.extend(
                (case, reason) for case in self.store.cases_named(invoice) if _in_kravia(case)
            )
        return found

    async def _send_action(
        self, case: CaseState, action: str, reason: str, outcome: StageOutcome
    ) -> CaseState:
        """Send the configured pause action for a held case, through the same door as every
        call: a slot first, then the intent (only while the hold still stands and the lease
        is ours), then the call, journaled before and after."""
        assert self.client is not None  # noqa: S101 - a pass that sends has a client
        assert self._lease is not None  # noqa: S101 - and holds the lease
        assert self.committer is not None  # noqa: S101 - and a committer
        assert case.kravia_id is not None  # noqa: S101 - started cases have one
        attempt_id = uuid.uuid4().hex
        now = self.clock()
        # Marked sent with its intent: a crash before its answer never sends it twice.
        lost = (
            f"the hold action {action!r} was sent but its answer was lost: check in Kravia "
            "that the case is paused"
        )
        async with self.client.reserve() as reservation:
            self._lease.check()
            written = await self.committer.commit(
                CaseWrite(
                    entry=self._journal(case, "hold_action", attempt_id, JournalKind.INTENT),
                    intent=True,
                    holds=(case.accounting_invoice_id, case.invoice_number),
                    held_only=True,
                    notes=(
                        case.accounting_invoice_id,
                        {"hold_action_at": now, "attention": lost, "updated_at": now},
                    ),
                )
            )
            if written.status is WriteStatus.FENCED:
                raise LeaseLostError("the writer lease was taken over by another process")
            if not written.ok:
                return case  # released meanwhile: nothing to pause
            self._lease.check()
            started = time.monotonic()
            try:
                await self.client.send_action(
                    case.kravia_id, action, message=f"On hold: {reason}", reservation=reservation
                )
            except KraviaError as error:
                return self._action_failed(
                    case,
                    action=action,
                    error=error,
                    attempt_id=attempt_id,
                    started=started,
                    outcome=outcome,
                )
        await self.committer.commit(
            CaseWrite(
                entry=self._journal(
                    case,
                    "hold_action",
                    attempt_id,
                    JournalKind.OUTCOME,
                    outcome="ok",
                    status=200,
                    started=started,
                )
            )
        )
        outcome.counts["hold_actions_sent"] += 1
        return replace(
            case, hold_action_at=now, attention=_paused_note(reason, action), updated_at=now
        )

    def _action_failed(
        self,
        case: CaseState,
        *,
        action: str,
        error: KraviaError,
        attempt_id: str,
        started: float,
        outcome: StageOutcome,
    ) -> CaseState:
        assert self.committer is not None  # noqa: S101 - only after a call was sent
        self.committer.submit(
            CaseWrite(
                entry=self._journal(
                    case,
                    "hold_action",
                    attempt_id,
                    JournalKind.OUTCOME,
                    outcome=error.failure.value,
                    status=error.status,
                    message=str(error),
                    started=started,
                )
            )
        )
        if error.failure.stops_pass:
            self.store.set_case_notes([(case.accounting_invoice_id, note_columns(case))])
            raise PassFailedError(error.stop_reason("hold action")) from None
        if error.failure.value == "transient":  # not applied: tried again next pass
            outcome.counts["hold_action_deferred"] += 1
            self.store.set_case_notes([(case.accounting_invoice_id, note_columns(case))])
            return case
        outcome.counts["hold_action_failed"] += 1
        now = self.clock()
        note = (
            f"the hold action {action!r} was sent but its answer was lost: check in Kravia "
            "that the case is paused"
            if error.failure.value == "ambiguous"
            else f"the hold action {action!r} was refused by Kravia ({redact(str(error))}): "
            "pause the case in Kravia"
        )
        return replace(case, hold_action_at=now, attention=note, updated_at=now)

    def _journal(
        self,
        case: CaseState,
        operation: str,
        attempt_id: str,
        kind: JournalKind,
        **details: Any,  # noqa: ANN401 - journal_entry's keywords
    ) -> JournalEntry:
        return journal_entry(
            case, operation, attempt_id, kind, at=self.clock(), run_id=self._run_id, **details
        )


def _paused_note(reason: str, action: str | None) -> str:
    return f"on hold ({reason}): {action} sent to Kravia"
