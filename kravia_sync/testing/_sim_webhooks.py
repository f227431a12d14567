"""The Kravia simulator's webhooks: the creditor's setting (`PUT creditor/{id}/webhook`), the
bodies Kravia sends, and their delivery from a thread of their own.

Kravia does not publish how it signs a webhook. The simulator's choice is the first candidate
kravia-sync's receiver accepts (`kravia_sync.kravia.assumptions.WEBHOOK_SIGNATURE_RECIPES`): the MD5
of the secret followed by `data` serialised as JSON without spaces, which is also exactly the
text of `data` in the body it sends. It is written out here on its own, not imported, so a test that
the receiver accepts it checks the two against each other.

Deliveries are best effort, as the real one is assumed to be: each is one POST with a short
timeout and no retry; what came back (or why nothing did) is kept for `GET /_sim/webhook`.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

__all__ = ["Delivery", "Signing", "WebhookSender", "WebhookSetting", "webhook_body"]

EVENT_CASE_UPDATE: Final = "CaseUpdate"
ALGORITHM: Final = "MD5"
DELIVERY_TIMEOUT_S: Final = 5.0
# An out-of-order delivery follows the event with one this much older for the same case.
OUT_OF_ORDER_S: Final = 60
MAX_DELIVERIES_KEPT: Final = 1000


class Signing(StrEnum):
    """How a delivered webhook is signed."""

    GOOD = "good"  # with the configured secret, by the simulator's recipe
    BAD = "bad"  # with another secret
    NONE = "none"  # no signature at all


@dataclass(frozen=True, slots=True)
class WebhookSetting:
    """The creditor's webhook, as `PUT creditor/{id}/webhook` set it."""

    url: str
    secret: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook to send: where, and the exact body."""

    url: str
    claim_id: int
    timestamp: int
    signing: Signing
    body: bytes


def validate_setting(body: object) -> tuple[dict[str, list[str]], WebhookSetting | None]:
    """ASP.NET-style validation errors for a webhook setting, or the setting."""
    errors: dict[str, list[str]] = {}
    if not isinstance(body, dict):
        return {"$": ["The JSON value could not be converted to the webhook setting."]}, None
    fields = {key.lower(): value for key, value in body.items()}
    url, secret, enabled = fields.get("url"), fields.get("secret"), fields.get("enabled")
    if not isinstance(url, str) or not url:
        errors["Url"] = ["The Url field is required."]
    else:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            errors["Url"] = ["The Url field is not a valid absolute http(s) URL."]
    if not isinstance(secret, str) or not secret:
        errors["Secret"] = ["The Secret field is required."]
    if not isinstance(enabled, bool):
        errors["Enabled"] = ["The Enabled field is required (true or false)."]
    if errors or not isinstance(url, str) or not isinstance(secret, str):
        return errors, None
    return {}, WebhookSetting(url=url, secret=secret, enabled=bool(enabled))


def webhook_body(
    secret: str, claim_id: int, timestamp: int, *, signing: Signing = Signing.GOOD
) -> bytes:
    """A webhook body as the simulator sends it (see the module's note on signing)."""
    data = {"timestamp": timestamp, "eventType": EVENT_CASE_UPDATE, "claimId": claim_id}
    data_text = json.dumps(data, separators=(",", ":"))
    body: dict[str, Any] = {"header": {"algorithm": ALGORITHM}, "data": data}
    if signing is not Signing.NONE:
        key = secret if signing is Signing.GOOD else secret + "-not-the-secret"
        body["signature"] = hashlib.md5(
            (key + data_text).encode("utf-8"), usedforsecurity=False
        ).hexdigest()
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def deliveries_for(
    setting: WebhookSetting,
    claim_id: int,
    timestamp: int,
    *,
    signing: Signing = Signing.GOOD,
    duplicate: bool = False,
    out_of_order: bool = False,
) -> list[Delivery]:
    """What to send for one change of a case: the event; with `duplicate` the same body once
    more; with `out_of_order` then an older event for the same case."""

    def one(moment: int) -> Delivery:
        body = webhook_body(setting.secret, claim_id, moment, signing=signing)
        return Delivery(setting.url, claim_id, moment, signing, body)

    sent = [one(timestamp)]
    if duplicate:
        sent.append(sent[0])
    if out_of_order:
        sent.append(one(timestamp - OUT_OF_ORDER_S))
    return sent


class WebhookSender:
    """Sends deliveries one at a time: in the background from a thread of its own (started
    on first use), or at once (`send_now`). Each result goes to `record`."""

    def __init__(self, record: Callable[[Mapping[str, Any]], None]) -> None:
        self._record = record
        self._queue: queue.Queue[Delivery] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def send_later(self, deliveries: list[Delivery]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="kravia-simulator-webhooks", daemon=True
                )
                self._thread.start()
        for delivery in deliveries:
            self._queue.put(delivery)

    def send_now(self, deliveries: list[Delivery]) -> list[dict[str, Any]]:
        """Send each (blocking) and return what came back."""
        with httpx.Client(timeout=DELIVERY_TIMEOUT_S) as client:
            return [self._send(client, delivery) for delivery in deliveries]

    def _run(self) -> None:
        with httpx.Client(timeout=DELIVERY_TIMEOUT_S) as client:
            while True:
                self._send(client, self._queue.get())

    def _send(self, client: httpx.Client, delivery: Delivery) -> dict[str, Any]:
        result: dict[str, Any] = {
            "claimId": delivery.claim_id,
            "timestamp": delivery.timestamp,
            "signing": delivery.signing.value,
            "status": None,
            "error": None,
        }
        try:
            response = client.post(
                delivery.url,
                content=delivery.body,
                headers={"Content-Type": "application/json"},
            )
            result["status"] = response.status_code
        except httpx.HTTPError as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        self._record(result)
        return result
