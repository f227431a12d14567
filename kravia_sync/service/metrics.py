"""The daemon's Prometheus metrics. Labels stay low-cardinality: source names (from the
configuration), Kravia endpoints, outcomes and phases; never an invoice number or id."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kravia_sync.kravia.pacing import PacingSnapshot
from kravia_sync.lifecycle import Phase
from kravia_sync.state.records import QuarantineKind

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
QUARANTINE_KINDS = tuple(kind.value for kind in QuarantineKind)


class Metrics:
    """One registry per daemon (not the global one), so tests can run several."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.passes = Counter(
            "kravia_sync_passes",
            "Passes by source and outcome (done, attention, failed, stopped).",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.remote_calls = Counter(
            "kravia_sync_remote_calls",
            "Calls to Kravia by endpoint and outcome (ok, transient, terminal, ambiguous, auth).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.pass_seconds = Histogram(
            "kravia_sync_pass_duration_seconds",
            "How long a source's pass took.",
            ["source"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.cases = Gauge(
            "kravia_sync_cases",
            "Cases in the state store by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.quarantined = Gauge(
            "kravia_sync_quarantined_records",
            "Records kept out of Kravia: invalid (needs a fix in the source) or waiting "
            "(not yet eligible under the policy).",
            ["kind"],
            registry=self.registry,
        )
        self.since_success = Gauge(
            "kravia_sync_seconds_since_last_success",
            "Seconds since the source's last successful pass (since the daemon started, when "
            "it has had none).",
            ["source"],
            registry=self.registry,
        )
        self.failures = Gauge(
            "kravia_sync_source_consecutive_failures",
            "Failed passes of the source in a row (0 after a successful pass).",
            ["source"],
            registry=self.registry,
        )
        self.lease = Gauge(
            "kravia_sync_writer_lease_held",
            "1 while this daemon holds the state store's writer lease, 0 while it waits for it.",
            registry=self.registry,
        )
        self.webhooks = Counter(
            "kravia_sync_webhook_requests",
            "Webhook requests by outcome (queued, coalesced, dropped, unknown_claim, oversized, "
            "malformed, refused).",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_signatures = Counter(
            "kravia_sync_webhook_signatures",
            "Webhook signatures by result (valid, mismatch, missing, unchecked).",
            ["result"],
            registry=self.registry,
        )
        self.webhook_refreshes = Counter(
            "kravia_sync_webhook_refreshes",
            "Case reads a webhook asked for, by outcome (changed, unchanged, failed, skipped).",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_pending = Gauge(
            "kravia_sync_webhook_pending",
            "Cases waiting to be read after a webhook.",
            registry=self.registry,
        )
        self.pace = Gauge(
            "kravia_sync_kravia_pace",
            "The pace of calls to Kravia: limit (calls allowed in flight), max_in_flight, "
            "rate (calls/s allowed; +Inf when no rate applies), achieved (calls answered in the "
            "last second), throttled (429s seen), overloaded (502/503/504s and timeouts seen).",
            ["measure"],
            registry=self.registry,
        )
        for phase in Phase:
            self.cases.labels(phase.value).set(0)
        for kind in QUARANTINE_KINDS:
            self.quarantined.labels(kind).set(0)

    def watch_source(self, name: str, last_success: Callable[[], float | None]) -> None:
        """Export the source's staleness, computed at each scrape from `last_success()` (a
        Unix time, or None before the first success)."""
        started = time.time()

        def seconds() -> float:
            when = last_success()
            value = time.time() - (started if when is None else when)
            return max(value, 0.0) if math.isfinite(value) else 0.0

        self.since_success.labels(name).set_function(seconds)
        self.failures.labels(name).set(0)

    def watch_pace(self, pace: Callable[[], PacingSnapshot | None]) -> None:
        """Export the pace, read at each scrape from `pace()` (None before the first call)."""

        def measure(name: str) -> Callable[[], float]:
            def value() -> float:
                snapshot = pace()
                if snapshot is None:
                    return math.nan
                if name == "rate":
                    return math.inf if snapshot.rate is None else snapshot.rate
                return float(getattr(snapshot, name))

            return value

        for name in ("limit", "max_in_flight", "rate", "achieved", "throttled", "overloaded"):
            self.pace.labels(name).set_function(measure(name))

    def record_pass(
        self, source: str, *, outcome: str, seconds: float, calls: Mapping[str, int]
    ) -> None:
        """Count a finished pass and its Kravia calls (`operation:outcome` -> count)."""
        self.passes.labels(source, outcome).inc()
        self.pass_seconds.labels(source).observe(seconds)
        self.record_calls(calls)

    def record_calls(self, calls: Mapping[str, int]) -> None:
        """Count Kravia calls (`operation:outcome` -> count), a pass's or a webhook's."""
        for key, count in calls.items():
            endpoint, _, result = key.partition(":")
            self.remote_calls.labels(endpoint, result or "unknown").inc(count)

    def set_store_counts(self, phases: Mapping[str, int], quarantined: Mapping[str, int]) -> None:
        for phase in Phase:
            self.cases.labels(phase.value).set(phases.get(phase.value, 0))
        for kind in QUARANTINE_KINDS:
            self.quarantined.labels(kind).set(quarantined.get(kind, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
