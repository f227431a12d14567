"""Logging with structlog: readable on a terminal, JSON otherwise, secrets redacted everywhere.

Redaction works by value, not by guessing key names: every secret the configuration holds
(`SecretStr` values) is registered with `register_secrets`, and the last processor replaces any
occurrence of one in any logged value. `SecretStr` objects render as `**********` anyway.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from pydantic import SecretStr

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact", "register_secrets"]

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
        structlog.dev.ConsoleRenderer(colors=output.isatty())
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
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:  # noqa: ANN401 - structlog's bound logger is dynamically typed
    """A logger whose lines go through kravia-sync's set-up (secrets redacted everywhere)."""
    return structlog.get_logger(name)
