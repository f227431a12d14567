"""The Kravia simulator's control endpoints (`/_sim/...`, no auth) as a mixin of `Simulator`:
each answers from, or changes, what the public accessors do."""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request
from starlette.responses import Response

from kravia_sync.testing._sim_accessors import _PublicAccessors
from kravia_sync.testing._sim_constants import _JSON_TYPE
from kravia_sync.testing._sim_faults import Faults
from kravia_sync.testing._sim_http import _claim_id, _payout_request, _require_object
from kravia_sync.testing._sim_json import _dump, _loads
from kravia_sync.testing._sim_shapes import Shape, _flag


class _ControlEndpoints(_PublicAccessors):
    """The `/_sim/` endpoints tests and the demo use to look into and steer the simulator."""

    # --- control endpoints ---

    async def _control_cases(self, _request: Request) -> Response:
        return Response(_dump(self.cases()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_document(self, request: Request) -> Response:
        try:
            content = self.document_bytes(request.path_params["id"], request.path_params["n"])
        except KeyError:
            return Response(b'{"error": "no such document"}', 404, media_type=_JSON_TYPE)
        return Response(content, media_type="application/pdf")

    async def _control_calls(self, _request: Request) -> Response:
        return Response(_dump(self.calls()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_faults(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                data = json.loads(await request.body())
                self.faults = Faults.from_dict(_require_object(data, "the faults"))
            except (TypeError, ValueError) as exc:
                error = _dump({"error": str(exc)}).encode("utf-8")
                return Response(error, 400, media_type=_JSON_TYPE)
        return Response(_dump(self.faults.to_dict()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_shape(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                data = json.loads(await request.body())
                self.shape = Shape.from_dict(_require_object(data, "the shape"))
            except (TypeError, ValueError) as exc:
                error = _dump({"error": str(exc)}).encode("utf-8")
                return Response(error, 400, media_type=_JSON_TYPE)
        return Response(_dump(self.shape.to_dict()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_payments(self, _request: Request) -> Response:
        return Response(_dump(self.payments()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_settlements(self, _request: Request) -> Response:
        return Response(_dump(self.settlements()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_payout(self, request: Request) -> Response:
        """`POST /_sim/payout` {"invoiceId", "amount"} or {"invoices": [...]}, optional "date"."""
        try:
            data = _require_object(_loads(await request.body()), "the payout")
            lines, on = _payout_request(data)
            settlement = self.payout(lines, on=on)
        except (TypeError, ValueError) as exc:
            error = _dump({"error": str(exc)}).encode("utf-8")
            return Response(error, 400, media_type=_JSON_TYPE)
        return Response(_dump(settlement).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_webhook(self, request: Request) -> Response:
        """`GET /_sim/webhook`: the setting and deliveries. `POST /_sim/webhook` {"claimId",
        "signing": "good"|"bad"|"none", "duplicate", "outOfOrder"}: send one now; answers what
        came back from each delivery."""
        if request.method == "GET":
            return Response(_dump(self.webhook()).encode("utf-8"), media_type=_JSON_TYPE)
        try:
            data = _require_object(_loads(await request.body()), "the webhook to send")
            results = await asyncio.to_thread(
                self.send_webhook,
                _claim_id(data.get("claimId")),
                signing=str(data.get("signing", "good")),
                duplicate=_flag("duplicate", data.get("duplicate", False)),
                out_of_order=_flag("outOfOrder", data.get("outOfOrder", False)),
            )
        except (TypeError, ValueError) as exc:
            error = _dump({"error": str(exc)}).encode("utf-8")
            return Response(error, 400, media_type=_JSON_TYPE)
        return Response(_dump(results).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_reset(self, _request: Request) -> Response:
        self.reset()
        return Response(b'{"reset": true}', media_type=_JSON_TYPE)
