"""The Kravia simulator's API call pipeline as a mixin of `Simulator`: each API call read,
rolled for faults and the rate limit, authorised, handed to its operation, counted and answered
(or its answer dropped)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from kravia_sync.testing._dropped import DroppedResponse
from kravia_sync.testing._sim_constants import MAX_BODY_BYTES, MUTATING_OPERATIONS
from kravia_sync.testing._sim_faults import _throttled
from kravia_sync.testing._sim_http import _Outcome, _problem, _server_error
from kravia_sync.testing._sim_json import _dump
from kravia_sync.testing._sim_store import _SimulatorState

_Handler = Callable[[Request, bytes], Awaitable[_Outcome]]


class _ApiPipeline(_SimulatorState):
    """The route an API call takes from its endpoint to its answer."""

    # --- internals: the API call pipeline ---

    def _endpoint(
        self, operation: str, handler: _Handler
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._api_call(request, operation, handler)

        return endpoint

    async def _api_call(self, request: Request, operation: str, handler: _Handler) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:
            self._record(operation, 0, processed=False)
            return Response(status_code=400)
        faults, roll = self._roll(operation)
        bucket_wait = self._take_token(faults)
        if operation in faults.operations and faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        throttled = _throttled(bucket_wait, roll)
        if throttled is not None:
            outcome = throttled
        elif roll.server_error:
            outcome = _server_error(roll.error_status)
        else:
            if roll.timeout:
                await asyncio.sleep(faults.timeout_delay_s)
            if request.headers.get("authorization") != self._token:
                outcome = _problem(401)
            elif len(body) > MAX_BODY_BYTES:
                outcome = _problem(413)
            else:
                outcome = await handler(request, body)
            if roll.drop and operation in MUTATING_OPERATIONS and outcome.processed:
                self._record(operation, 0, processed=True)
                return DroppedResponse(
                    content=_dump(outcome.payload).encode("utf-8"),
                    status_code=outcome.status,
                    media_type=outcome.media_type,
                )
        return self._answer(operation, outcome)

    def _answer(self, operation: str, outcome: _Outcome) -> Response:
        self._record(operation, outcome.status, processed=outcome.processed)
        content = (
            outcome.payload
            if isinstance(outcome.payload, bytes)
            else _dump(outcome.payload).encode("utf-8")
        )
        return Response(
            content=content,
            status_code=outcome.status,
            headers=outcome.headers,
            media_type=outcome.media_type,
        )
