"""Logging with structlog: readable on a terminal, JSON otherwise, secrets redacted everywhere.

Redaction works by value, not by guessing key names: every secret the configuration holds
(`SecretStr` values) is registered with `register_secrets`, and the last processor replaces any
occurrence of one in any logged value. `SecretStr` objects render as `**********` anyway.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO, cast

import structlog
from pydantic import SecretStr

__all__ = [
    "REDACTED",
    "configure_logging",
    "get_logger",
    "log_lines_to",
    "redact",
    "register_secrets",
]

REDACTED = "**********"
_secrets: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values so that no log line or message can carry them."""
    _secrets.update(value for value in values if value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: object) -> object:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def _redaction_processor(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return {key: _redact_value(value) for key, value in event_dict.items()}


def _redact_rendered(_logger: object, _name: str, rendered: Any) -> Any:  # noqa: ANN401
    """After rendering, a last pass over the finished line (the renderer gets a str)."""
    return redact(rendered) if isinstance(rendered, str) else rendered


# Where log lines go instead of their stream while a live display is on (`log_lines_to`):
# the innermost diversion last.
_diversions: list[Callable[[str], None]] = []


@contextmanager
def log_lines_to(write_line: Callable[[str], None]) -> Iterator[None]:
    """While in force, each whole log line goes to `write_line` (without its newline) instead
    of the stream logging writes to: a live display on that stream (the progress bar) prints
    them above itself, so a line never lands in the middle of the display's own."""
    _diversions.append(write_line)
    try:
        yield
    finally:
        _diversions.remove(write_line)


class _LogStream:
    """The stream log lines are written to, or the diversion in force (`log_lines_to`)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._partial = ""  # a diverted line not yet ended

    def write(self, text: str) -> int:
        if not _diversions:
            return self._stream.write(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            _diversions[-1](line)
        return len(text)

    def flush(self) -> None:
        if not _diversions:
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def configure_logging(
    *,
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    """Log to `stream` (stderr by default): a console renderer on a TTY, JSON lines otherwise."""
    output = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and output.isatty())
    renderer: Any = (
        # Exceptions arrive as text (`format_exc_info`, before redaction): a formatter of
        # structlog's own choosing (rich's, better_exceptions') would never be used.
        structlog.dev.ConsoleRenderer(
            colors=output.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redaction_processor,
            renderer,
            _redact_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(cast("TextIO", _LogStream(output))),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:  # noqa: ANN401 - structlog's bound logger is dynamically typed
    """A logger whose lines go through kravia-sync's set-up (secrets redacted everywhere)."""
    return structlog.get_logger(name)
