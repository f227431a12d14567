"""What the daemon answers from outside: /readyz's readiness, and the webhook listener with the
case reads it asks for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.logging import get_logger, redact
from kravia_sync.service.daemon_parts import SourceState
from kravia_sync.service.metrics import Metrics
from kravia_sync.service.overrun import Overruns
from kravia_sync.service.webhook_server import WebhookServer
from kravia_sync.settings import ConfigError, Settings
from kravia_sync.state.store import StateStore
from kravia_sync.state.stored import utc_now

__all__ = ["Serving"]

log = get_logger("kravia_sync.service.daemon")


class Serving:
    """Readiness for /readyz, and the webhook listener's questions about our cases."""

    settings: Settings
    metrics: Metrics
    sources: dict[str, SourceState]
    webhook: WebhookServer | None
    _client_factory: Callable[[Settings], KraviaClient]
    _store: StateStore | None
    _stop: asyncio.Event
    _lease_held: bool
    _overruns: Overruns

    # --- the webhook ----------------------------------------------------------------------------
    async def _start_webhook(self) -> None:
        """With webhook.enabled, the receiver's own listener (`service.webhook_server`)."""
        hook = self.settings.webhook
        if not hook.enabled:
            return
        if self.settings.kravia_webhook_secret is None:
            log.warning(
                "webhook enabled without a secret: signatures cannot be checked (every webhook "
                "is still only a hint to read that case sooner)"
            )
        server = WebhookServer(
            settings=lambda: self.settings,
            metrics=self.metrics,
            is_ours=self._is_ours,
            refresh=self._refresh_case,
        )
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                f"webhook.host/webhook.port: cannot listen on {hook.host}:{hook.port}: {exc}"
            ) from None
        self.webhook = server

    async def _is_ours(self, kravia_id: int) -> bool:
        """Whether one of our cases has this Kravia id."""
        store = self._store
        if store is None:
            return False
        found = await asyncio.to_thread(store.find_cases, str(kravia_id))
        return any(case.kravia_id == kravia_id for case in found)

    async def _refresh_case(self, kravia_id: int) -> str:
        """Read one case's details and store its status and capital. Only while this daemon
        holds the writer lease: a daemon waiting for it writes nothing."""
        store = self._store
        if store is None or not self._lease_held or self._stop.is_set():
            return "skipped"
        async with self._client_factory(self.settings) as client:
            try:
                mirror = KraviaMirror(store, client, clock=utc_now)
                changed = await mirror.refresh_case(kravia_id)
            finally:
                self.metrics.record_calls(client.stats.counts)
        return "changed" if changed else "unchanged"

    # --- health -------------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: the state store answers, no source failed `alert_after_failures` times in a
        row, and no pass is overrunning its deadline (nor a read it left running)."""
        store_ok = False
        store_detail = "not open"
        if self._store is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._store.schema_version), timeout=5)
            except Exception as exc:
                store_detail = redact(f"{type(exc).__name__}: {exc}")
            else:
                store_ok, store_detail = True, "ok"
        threshold = self.settings.daemon.alert_after_failures
        sources = {
            name: {
                "last_status": state.last_status,
                "consecutive_failures": state.failures,
                "failing": state.failures >= threshold,
                "last_error": state.last_error,
            }
            for name, state in self.sources.items()
        }
        overrunning = self._overruns.details()
        failing = any(item["failing"] for item in sources.values())
        ready = store_ok and not failing and not overrunning
        details = {
            "store": store_detail,
            "lease": "held" if self._lease_held else "waiting",
            "stopping": self._stop.is_set(),
            "sources": sources,
            "overrunning": overrunning,
        }
        return ready, details
