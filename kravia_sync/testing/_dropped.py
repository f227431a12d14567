"""A connection dropped half-way through an answer: the fault both bundled simulators (Kravia's
and Fiken's) inject on request, and the log filter that keeps uvicorn quiet about it."""

from __future__ import annotations

import logging

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["ConnectionDroppedError", "DroppedResponse", "is_drop", "quiet_dropped_connections"]


class ConnectionDroppedError(Exception):
    """Raised after a partial response so uvicorn closes the connection (a deliberate fault)."""


class DroppedResponse(Response):
    """Announces the full answer (status, content-length), sends half of it, then fails."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        raise ConnectionDroppedError


def is_drop(exc: BaseException | None) -> bool:
    """Whether `exc` is (or was caused by) a deliberately dropped connection."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionDroppedError):
            return True
        if isinstance(exc, BaseExceptionGroup):
            return any(is_drop(inner) for inner in exc.exceptions)
        exc = exc.__cause__ or exc.__context__
    return False


class _DropLogFilter(logging.Filter):
    """Keeps uvicorn from logging a traceback for the deliberately dropped connections."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_drop(record.exc_info[1]))


def quiet_dropped_connections() -> None:
    """Install the filter on uvicorn's error log (once)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _DropLogFilter) for existing in logger.filters):
        logger.addFilter(_DropLogFilter())
