"""The Kravia simulator's public accessors as a mixin of `Simulator` (thread-safe): its faults
and shape, the cases, documents, payments and settlements it holds, payouts, call counts,
webhooks, and `reset`."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from kravia_sync.testing._sim_constants import COLLECTED_TYPE, OPERATIONS, STATUS_CLOSED
from kravia_sync.testing._sim_faults import Faults
from kravia_sync.testing._sim_shapes import Shape
from kravia_sync.testing._sim_state import _Settlement
from kravia_sync.testing._sim_store import _SimulatorState
from kravia_sync.testing._sim_webhooks import Signing, deliveries_for


class _PublicAccessors(_SimulatorState):
    """What a test, a benchmark or the control endpoints read and change of the simulator."""

    # --- public accessors (thread-safe) ---

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        with self._lock:
            self._faults = value
            self._reseed()

    @property
    def shape(self) -> Shape:
        """How the simulator answers (details and search shapes, Kravia's clock offset)."""
        return self._shape

    @shape.setter
    def shape(self, value: Shape) -> None:
        with self._lock:
            self._shape = value

    def cases(self) -> list[dict[str, Any]]:
        """Every case held, in id order (the same as `GET /_sim/cases`)."""
        with self._lock:
            return [self._cases[key].control_view() for key in sorted(self._cases)]

    def document_bytes(self, case_id: int, index: int) -> bytes:
        """The raw bytes of a case's document by 0-based position; KeyError if there is none."""
        with self._lock:
            case = self._cases.get(case_id)
            if case is None or not 0 <= index < len(case.documents):
                raise KeyError((case_id, index))
            return case.documents[index].content

    def payments(self) -> list[dict[str, Any]]:
        """Every payment, credit note and payout accepted, in order (`GET /_sim/payments`).

        Nothing is de-duplicated: the same AccountingPaymentId sent twice is listed twice.
        """
        with self._lock:
            return copy.deepcopy(self._ledger)

    def settlements(self) -> list[dict[str, Any]]:
        """Every settlement, booked or not, in id order (`GET /_sim/settlements`)."""
        with self._lock:
            return [self._settlements[key].view(self._cases) for key in sorted(self._settlements)]

    def payout(
        self, lines: Sequence[tuple[int, Decimal]], *, on: date | None = None
    ) -> dict[str, Any]:
        """The debtor paid Kravia and Kravia paid the creditor out: each (case id, amount)
        comes off that case's capital as a `Collected` payment, and one settlement covers them
        all. ValueError when a case is unknown or closed or an amount is not in (0, capital].
        """
        for _, amount in lines:
            if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
                raise TypeError(f"a payout amount is a Decimal, not {amount!r}")
        lines = [(case_id, Decimal(amount)) for case_id, amount in lines]
        with self._lock:
            problems = self._payout_problems(lines)
            if problems:
                raise ValueError("; ".join(problems))
            now = self._tick()
            settlement = _Settlement(
                id=self._next_settlement_id,
                on=on or now.date(),
                lines=[(case_id, amount) for case_id, amount in lines],
                created=now,
            )
            self._next_settlement_id += 1
            self._settlements[settlement.id] = settlement
            applied_lines = []
            for case_id, amount in lines:
                payment = self._new_payment(
                    COLLECTED_TYPE,
                    None,
                    on=settlement.on,
                    amount=amount,
                    applied=amount,
                    now=now,
                    settlement_id=settlement.id,
                )
                self._cases[case_id].record(payment, f"Payment collected by Kravia: {amount}")
                applied_lines.append((case_id, amount, amount))
                self._changed(case_id)
            self._log_money(
                COLLECTED_TYPE,
                None,
                on=settlement.on,
                description=None,
                lines=applied_lines,
                now=now,
                settlement_id=settlement.id,
            )
            self._save()
            return settlement.view(self._cases)

    def _payout_problems(self, lines: Sequence[tuple[int, Decimal]]) -> list[str]:
        problems: list[str] = []
        if not lines:
            problems.append("a payout needs at least one invoice")
        if len({case_id for case_id, _ in lines}) != len(lines):
            problems.append("an invoice is listed more than once")
        for case_id, amount in lines:
            case = self._cases.get(case_id)
            if case is None:
                problems.append(f"invoice {case_id} does not exist")
            elif case.status == STATUS_CLOSED:
                problems.append(f"invoice {case_id} is closed")
            elif not 0 < amount <= case.remaining_amount:
                problems.append(
                    f"invoice {case_id}: the amount {amount} is not in (0, {case.remaining_amount}]"
                )
        return problems

    def calls(self) -> dict[str, Any]:
        """Counts of API calls received (the same as `GET /_sim/calls`)."""
        with self._lock:
            result: dict[str, Any] = {"total": self._total_calls}
            for name in OPERATIONS:
                result[name] = {
                    str(status): n for status, n in sorted(self._statuses[name].items())
                }
            result["processed"] = dict(self._processed)
            return result

    def webhook(self) -> dict[str, Any]:
        """The creditor's webhook setting (never its secret) and every delivery so far, in
        order (the same as `GET /_sim/webhook`)."""
        with self._lock:
            setting = self._webhook
            return {
                "url": None if setting is None else setting.url,
                "enabled": setting is not None and setting.enabled,
                "secretSet": setting is not None,
                "deliveries": copy.deepcopy(self._deliveries),
            }

    def webhook_secret(self) -> str | None:
        """The secret the webhook was set with (for tests that sign as Kravia would)."""
        with self._lock:
            return None if self._webhook is None else self._webhook.secret

    def send_webhook(
        self,
        claim_id: int,
        *,
        signing: Signing | str = Signing.GOOD,
        duplicate: bool = False,
        out_of_order: bool = False,
    ) -> list[dict[str, Any]]:
        """Send a webhook for `claim_id` to the configured URL now, whether or not the case
        exists or the webhook is enabled (blocking); what came back from each delivery.
        ValueError when no webhook URL is set."""
        with self._lock:
            setting = self._webhook
            timestamp = int(self._now().timestamp())
        if setting is None:
            raise ValueError("no webhook is set (PUT /api/v2/creditor/{id}/webhook)")
        deliveries = deliveries_for(
            setting,
            claim_id,
            timestamp,
            signing=Signing(signing),
            duplicate=duplicate,
            out_of_order=out_of_order,
        )
        return self._sender.send_now(deliveries)

    def reset(self) -> None:
        """Forget every case, call count and fault (ids keep increasing: they are never reused).

        The shape stays: it says which Kravia is simulated, not what went wrong in one test.
        """
        with self._lock:
            self._cases.clear()
            self._ledger.clear()
            self._settlements.clear()
            self._total_calls = 0
            self._statuses = {name: {} for name in OPERATIONS}
            self._processed = dict.fromkeys(OPERATIONS, 0)
            self._faults = Faults()
            self._webhook = None
            self._deliveries.clear()
            self._reseed()
            self._save()
