"""The payments stage of a pass: forward the payments and credit notes the sources reported,
after the cases they cover had their turn (see `kravia_sync.engine.forwarding`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from kravia_sync.engine.errors import PassFailedError
from kravia_sync.engine.forwarding import HAS_KRAVIA_CASE, AuthRefusedError, PaymentForwarder
from kravia_sync.engine.summary import RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import backoff_delay
from kravia_sync.lifecycle import Timing
from kravia_sync.payments import PaymentState, PaymentStep, next_payment_step
from kravia_sync.settings import Settings
from kravia_sync.state.committer import GroupCommitter
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.store import StateStore

__all__ = ["PaymentStage", "payments_due"]


def payments_due(
    store: StateStore, payments: list[PaymentState], *, now: datetime, settle: timedelta
) -> list[tuple[PaymentState, PaymentStep]]:
    """The payments a pass would send or verify now, each with that step (a payment waiting
    for its invoice to reach Kravia, or backing off, is not work for this pass)."""
    invoices = {aid for payment in payments for aid in payment.invoices}
    cases = store.load_cases_by_id(invoices)
    in_kravia = {
        aid: case.kravia_id if case.phase in HAS_KRAVIA_CASE else None
        for aid, case in cases.items()
    }
    due: list[tuple[PaymentState, PaymentStep]] = []
    for payment in payments:
        step = next_payment_step(payment, in_kravia=in_kravia, now=now, settle=settle).step
        if step in {PaymentStep.SEND, PaymentStep.VERIFY}:
            due.append((payment, step))
    return due


class PaymentStage:
    """Forwards one pass's payments, under the pass's lease, after its case outcomes are
    written."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        client: KraviaClient,
        *,
        timing: Timing,
        clock: Callable[[], datetime],
        run_id: int | None,
        lease: LeaseKeeper,
        committer: GroupCommitter,
        should_stop: Callable[[], bool],
    ) -> None:
        self.committer = committer
        self.forwarder = PaymentForwarder(
            store,
            client,
            clock=clock,
            settle=timing.settle,
            retry_in=lambda attempts: timedelta(
                seconds=backoff_delay(
                    attempts,
                    base=timing.backoff_base.total_seconds(),
                    cap=timing.backoff_cap.total_seconds(),
                )
            ),
            run_id=run_id,
            lease=lease,
            max_inline_wait=settings.retry.max_inline_wait_seconds,
            max_waits=settings.retry.retries_per_pass,
            should_stop=should_stop,
        )

    async def forward(self, work: list[PaymentState], summary: RunSummary) -> None:
        """Forward `work`; what came of it is counted in `summary`. Kravia refusing the token
        fails the pass."""
        if not work:
            return
        await self.committer.flush()  # every case outcome written before payments read cases
        try:
            outcome = await self.forwarder.forward(work)
        except AuthRefusedError as exc:
            raise PassFailedError(str(exc)) from None
        outcome.add_to(summary)
