"""The Kravia simulator's internal state as a mixin of `Simulator`: the attributes it keeps
(declared here, set in `Simulator.__init__`), Kravia's clock, ids, the ledger, call counts, fault
rolls and the rate-limit bucket, webhooks on a change, and the data file (saved and loaded)."""

from __future__ import annotations

import binascii
import json
import random
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from kravia_sync.testing._sim_constants import (
    _OLDER_DATA_FILE_FORMATS,
    DATA_FILE_FORMAT,
    FIRST_PAYMENT_ID,
    FIRST_SETTLEMENT_ID,
)
from kravia_sync.testing._sim_faults import Faults, _Roll
from kravia_sync.testing._sim_json import _dump, _iso
from kravia_sync.testing._sim_shapes import Shape
from kravia_sync.testing._sim_state import _Case, _Payment, _Settlement
from kravia_sync.testing._sim_webhooks import (
    MAX_DELIVERIES_KEPT,
    WebhookSender,
    WebhookSetting,
    deliveries_for,
)


class _SimulatorState:
    """The simulator's state and the internals that keep it (the base of its mixins)."""

    _token: str
    _creditor_id: int | None
    _data_file: Path | None
    _lock: threading.Lock
    _faults: Faults
    _bucket_faults: Faults | None  # the faults the rate-limit bucket is for
    _bucket_tokens: float
    _bucket_at: float
    _rng: random.Random
    _rng_key: tuple[int, int | None]
    _shape: Shape
    _cases: dict[int, _Case]
    _ledger: list[dict[str, Any]]  # every payment, credit note and payout, in order
    _settlements: dict[int, _Settlement]
    _next_id: int
    _next_document_id: int
    _next_payment_id: int
    _next_settlement_id: int
    _last_time: datetime
    _total_calls: int
    _statuses: dict[str, dict[int, int]]
    _processed: dict[str, int]
    _webhook: WebhookSetting | None
    _deliveries: list[dict[str, Any]]
    _sender: WebhookSender

    # --- internals: state (call with the lock held) ---

    def _reseed(self) -> None:
        self._rng = random.Random(self._faults.seed)
        self._rng_key = (id(self._faults), self._faults.seed)

    def _now(self) -> datetime:
        """Kravia's now: the host's clock plus the configured offset (no lock needed: the
        shape is replaced whole, never changed in place)."""
        return datetime.now(UTC) + timedelta(seconds=self._shape.clock_offset_seconds)

    def _tick(self) -> datetime:
        """Kravia's now, strictly later than any time handed out before (microsecond
        resolution); an offset made smaller never moves the times handed out backwards."""
        now = self._now()
        if now <= self._last_time:
            now = self._last_time + timedelta(microseconds=1)
        self._last_time = now
        return now

    def _changed(self, case_id: int) -> None:
        """A case changed: Kravia sends its webhook, when one is set and enabled (call with
        the lock held; the delivery goes from the sender's thread)."""
        setting = self._webhook
        if setting is not None and setting.enabled:
            timestamp = int(self._now().timestamp())
            self._sender.send_later(deliveries_for(setting, case_id, timestamp))

    def _delivered(self, result: Mapping[str, Any]) -> None:
        with self._lock:
            self._deliveries.append(dict(result))
            del self._deliveries[:-MAX_DELIVERIES_KEPT]

    def _new_payment(
        self,
        kind: str,
        accounting_payment_id: str | None,
        *,
        on: date,
        amount: Decimal,
        applied: Decimal,
        now: datetime,
        settlement_id: int | None = None,
    ) -> _Payment:
        payment = _Payment(
            id=self._next_payment_id,
            type=kind,
            accounting_payment_id=accounting_payment_id,
            on=on,
            amount=amount,
            applied=applied,
            registered=now,
            settlement_id=settlement_id,
        )
        self._next_payment_id += 1
        return payment

    def _log_money(
        self,
        kind: str,
        accounting_payment_id: str | None,
        *,
        on: date,
        description: str | None,
        lines: Sequence[tuple[int, Decimal, Decimal]],
        now: datetime,
        settlement_id: int | None = None,
    ) -> None:
        """Append to the ledger `GET /_sim/payments` shows: (case id, amount, applied) lines."""
        self._ledger.append(
            {
                "seq": len(self._ledger) + 1,
                "type": kind,
                "accountingPaymentId": accounting_payment_id,
                "date": on.isoformat(),
                "description": description,
                "amount": sum((amount for _, amount, _ in lines), Decimal(0)),
                "invoices": [
                    {"invoiceId": case_id, "amount": amount, "appliedAmount": applied}
                    for case_id, amount, applied in lines
                ],
                "settlementId": settlement_id,
                "received": _iso(now),
            }
        )

    def _record(self, operation: str, status: int, *, processed: bool) -> None:
        with self._lock:
            self._total_calls += 1
            counts = self._statuses[operation]
            counts[status] = counts.get(status, 0) + 1
            if processed:
                self._processed[operation] += 1

    def _take_token(self, faults: Faults) -> float | None:
        """Spend a token of the rate limit's bucket: None when there was one (or there is no
        rate limit), else the seconds until the next."""
        rate = faults.rate_limit
        if rate is None:
            return None
        burst = faults.rate_limit_burst or max(1.0, rate)
        with self._lock:
            now = time.monotonic()
            if self._bucket_faults is not faults:  # a new limit starts with a full bucket
                self._bucket_faults, self._bucket_tokens, self._bucket_at = faults, burst, now
            tokens = min(burst, self._bucket_tokens + (now - self._bucket_at) * rate)
            self._bucket_at = now
            if tokens >= 1:
                self._bucket_tokens = tokens - 1
                return None
            self._bucket_tokens = tokens
            return (1 - tokens) / rate

    def _roll(self, operation: str) -> tuple[Faults, _Roll]:
        with self._lock:
            faults = self._faults
            if operation not in faults.operations:
                return faults, _Roll()
            if self._rng_key != (id(faults), faults.seed):
                self._reseed()
            rng = self._rng
            rate_limited = rng.random() < faults.rate_limit_429
            server_error = rng.random() < faults.error_5xx
            timeout = rng.random() < faults.timeout
            drop = rng.random() < faults.drop_after_commit
            retry_after: str | None = None
            if rate_limited:
                choice = rng.choice(["1", "0", "-3", "soon", "date", "none"])
                if choice == "date":
                    retry_after = format_datetime(self._now() + timedelta(seconds=1), usegmt=True)
                elif choice != "none":
                    retry_after = choice
            error_status = rng.choice([500, 502, 503]) if server_error else 500
            return faults, _Roll(
                rate_limited=rate_limited,
                server_error=server_error,
                timeout=timeout,
                drop=drop,
                retry_after=retry_after,
                error_status=error_status,
            )

    def _snapshot(self) -> dict[str, Any]:
        return {
            "format": DATA_FILE_FORMAT,
            "nextId": self._next_id,
            "nextDocumentId": self._next_document_id,
            "nextPaymentId": self._next_payment_id,
            "nextSettlementId": self._next_settlement_id,
            "cases": [self._cases[key].to_record() for key in sorted(self._cases)],
            "ledger": self._ledger,
            "settlements": [
                self._settlements[key].to_record() for key in sorted(self._settlements)
            ],
        }

    def _save(self) -> None:
        """Write the state to the data file atomically (temp file + replace), if there is one."""
        if self._data_file is None:
            return
        target = self._data_file
        target.parent.mkdir(parents=True, exist_ok=True)
        data = _dump(self._snapshot()).encode("utf-8")
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before the replace
            mode="wb", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        )
        temp = Path(handle.name)
        try:
            with handle:
                handle.write(data)
            temp.replace(target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise ValueError(f"{path}: not a simulator data file ({exc})") from exc
        known = {DATA_FILE_FORMAT, *_OLDER_DATA_FILE_FORMATS}
        if not isinstance(raw, dict) or raw.get("format") not in known:
            raise ValueError(
                f"{path}: not a simulator data file (format is not {DATA_FILE_FORMAT})"
            )
        try:
            cases = [_Case.from_record(record) for record in raw["cases"]]
            next_id = int(raw["nextId"])
            next_document_id = int(raw["nextDocumentId"])
            next_payment_id = int(raw.get("nextPaymentId", FIRST_PAYMENT_ID))
            next_settlement_id = int(raw.get("nextSettlementId", FIRST_SETTLEMENT_ID))
            ledger = [dict(entry) for entry in raw.get("ledger", [])]
            settlements = [_Settlement.from_record(item) for item in raw.get("settlements", [])]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"{path}: not a simulator data file ({exc})") from exc
        self._cases = {case.id: case for case in cases}
        self._ledger = ledger
        self._settlements = {settlement.id: settlement for settlement in settlements}
        self._next_id = max([next_id, *(case.id + 1 for case in cases)])
        self._next_document_id = max(
            [next_document_id, *(d.id + 1 for case in cases for d in case.documents)]
        )
        self._next_payment_id = max(
            [next_payment_id, *(pay.id + 1 for case in cases for pay in case.payments)]
        )
        self._next_settlement_id = max([next_settlement_id, *(item.id + 1 for item in settlements)])
        times = [case.updated for case in cases]
        if times:
            self._last_time = max(times)
