"""The Kravia simulator itself: `Simulator`, its mixins combined, with its state set up and its
API and control routes."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from kravia_sync.testing._dropped import quiet_dropped_connections
from kravia_sync.testing._sim_cases import _CaseOperations
from kravia_sync.testing._sim_constants import (
    FIRST_CASE_ID,
    FIRST_DOCUMENT_ID,
    FIRST_PAYMENT_ID,
    FIRST_SETTLEMENT_ID,
    OPERATIONS,
)
from kravia_sync.testing._sim_control import _ControlEndpoints
from kravia_sync.testing._sim_faults import Faults
from kravia_sync.testing._sim_money import _MoneyOperations
from kravia_sync.testing._sim_pipeline import _ApiPipeline
from kravia_sync.testing._sim_shapes import (
    DetailsShape,
    RegisterShape,
    SearchShape,
    Shape,
    TimeZone,
    _DateHeader,
)
from kravia_sync.testing._sim_webhooks import WebhookSender

__all__ = ["Simulator"]


# --- the simulator ----------------------------------------------------------------------------


class Simulator(_ControlEndpoints, _ApiPipeline, _CaseOperations, _MoneyOperations):
    """The simulated Kravia API with its state, call counters and fault injection.

    Its parts are mixins: the state and its internals (`_sim_store`), the public accessors,
    the API call pipeline, the case and money operations, and the control endpoints.
    """

    def __init__(
        self,
        *,
        token: str,
        creditor_id: int | None = None,
        faults: Faults | None = None,
        data_file: Path | None = None,
        details_shape: DetailsShape | str = DetailsShape.LIST,
        search_shape: SearchShape | str = SearchShape.ITEMS,
        search_without_aid: bool = False,
        clock_offset_seconds: float = 0.0,
        register_shape: RegisterShape | str = RegisterShape.ID,
        time_zone: TimeZone | str = TimeZone.UTC,
    ) -> None:
        if not token:
            raise ValueError("the simulator needs a non-empty token")
        self._token = token
        self._creditor_id = creditor_id
        self._data_file = data_file
        self._lock = threading.Lock()
        self._faults = faults if faults is not None else Faults()
        self._bucket_faults = None  # the faults the rate-limit bucket is for
        self._bucket_tokens = 0.0
        self._bucket_at = 0.0
        self._rng = random.Random(self._faults.seed)
        self._rng_key = (id(self._faults), self._faults.seed)
        self._shape = Shape.from_dict(
            {
                "details_shape": details_shape,
                "search_shape": search_shape,
                "search_without_aid": search_without_aid,
                "clock_offset_seconds": clock_offset_seconds,
                "register_shape": register_shape,
                "time_zone": time_zone,
            }
        )
        self._cases = {}
        self._ledger = []  # every payment, credit note and payout, in order
        self._settlements = {}
        self._next_id = FIRST_CASE_ID
        self._next_document_id = FIRST_DOCUMENT_ID
        self._next_payment_id = FIRST_PAYMENT_ID
        self._next_settlement_id = FIRST_SETTLEMENT_ID
        self._last_time = datetime.fromtimestamp(0, UTC)
        self._total_calls = 0
        self._statuses = {name: {} for name in OPERATIONS}
        self._processed = dict.fromkeys(OPERATIONS, 0)
        self._webhook = None
        self._deliveries = []
        self._sender = WebhookSender(self._delivered)
        if data_file is not None:
            self._load(data_file)
        quiet_dropped_connections()
        api = "/api/v2/invoice"
        self.app = Starlette(
            routes=[
                Route(
                    f"{api}/register", self._endpoint("register", self._register), methods=["POST"]
                ),
                Route(f"{api}/search", self._endpoint("search", self._search), methods=["GET"]),
                Route(f"{api}/payment", self._endpoint("payment", self._payment), methods=["POST"]),
                Route(
                    f"{api}/creditnote",
                    self._endpoint("creditnote", self._credit_note),
                    methods=["POST"],
                ),
                Route(
                    "/api/v2/settlements",
                    self._endpoint("settlements", self._list_settlements),
                    methods=["GET"],
                ),
                Route(
                    "/api/v2/settlements/{id:int}/bookkeep",
                    self._endpoint("bookkeep", self._bookkeep),
                    methods=["PATCH"],
                ),
                Route(
                    f"{api}/{{id:int}}/document",
                    self._endpoint("document", self._document),
                    methods=["POST"],
                ),
                Route(
                    f"{api}/{{id:int}}/action",
                    self._endpoint("action", self._action),
                    methods=["POST"],
                ),
                Route(
                    f"{api}/{{id:int}}/details",
                    self._endpoint("details", self._details),
                    methods=["GET"],
                ),
                Route(
                    "/api/v2/creditor/{id:int}/webhook",
                    self._endpoint("webhook", self._configure_webhook),
                    methods=["PUT"],
                ),
                Route("/_sim/cases", self._control_cases, methods=["GET"]),
                Route(
                    "/_sim/cases/{id:int}/documents/{n:int}",
                    self._control_document,
                    methods=["GET"],
                ),
                Route("/_sim/calls", self._control_calls, methods=["GET"]),
                Route("/_sim/payments", self._control_payments, methods=["GET"]),
                Route("/_sim/payout", self._control_payout, methods=["POST"]),
                Route("/_sim/settlements", self._control_settlements, methods=["GET"]),
                Route("/_sim/faults", self._control_faults, methods=["GET", "PUT"]),
                Route("/_sim/shape", self._control_shape, methods=["GET", "PUT"]),
                Route("/_sim/reset", self._control_reset, methods=["POST"]),
                Route("/_sim/webhook", self._control_webhook, methods=["GET", "POST"]),
            ],
            middleware=[Middleware(_DateHeader, now=self._now)],
        )
