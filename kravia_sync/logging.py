"""Logging with structlog: readable on a terminal, JSON otherwise, secrets redacted everywhere.

Redaction works by value, not by guessing key names: every secret the configuration holds
(`SecretStr` values) is registered with `register_secrets`, and the last processor replaces any
occurrence of one in any logged value. `SecretStr` objects render as `**********` anyway.

A secret is also looked for as output spells it: escaped inside a JSON string (with non-ASCII
letters as `\\u` escapes or as they are), inside a Python `repr`, and quoted inside a URL. A
tiny secret (one to three characters, such as a test token `x`) is replaced only where it does
not run on into a word: replaced inside other words it would garble every line
("max_in_flight" as "ma**********_in_flight"), and the gaps would show what the secret is.
Output meant for programs (`--json`) is redacted value by value before it is encoded
(`redact_structure`), so that it stays valid JSON whatever the secret is.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO, cast
from urllib.parse import quote, quote_plus

import structlog
from pydantic import SecretStr

__all__ = [
    "REDACTED",
    "configure_logging",
    "get_logger",
    "log_lines_to",
    "redact",
    "redact_structure",
    "register_secrets",
]

REDACTED = "**********"

# A secret shorter than this is replaced only where it does not run on into a word.
TINY_SECRET = 4


def written_forms(secret: str) -> set[str]:
    """`secret` as output may spell it: as it is, escaped inside a JSON string (ASCII-only or
    not), inside a Python `repr`, and quoted inside a URL (path or query)."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
    }


def _standing_apart(form: str) -> str:
    """A pattern for `form` where it does not run on into a word: no word character just
    before it if it starts with one, none just after it if it ends with one."""
    before = r"(?<!\w)" if re.match(r"\w", form[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", form[-1]) else ""
    return before + re.escape(form) + after


# Forms replaced wherever they occur (longest first), and a pattern for the tiny ones.
_Finder = tuple[tuple[str, ...], re.Pattern[str] | None]


def _finder_of(secrets: frozenset[str]) -> _Finder:
    anywhere = {
        form for secret in secrets if len(secret) >= TINY_SECRET for form in written_forms(secret)
    }
    tiny = {
        form for secret in secrets if len(secret) < TINY_SECRET for form in written_forms(secret)
    }
    by_length = sorted(tiny - anywhere, key=len, reverse=True)
    pattern = re.compile("|".join(map(_standing_apart, by_length))) if by_length else None
    return tuple(sorted(anywhere, key=len, reverse=True)), pattern


class _Redactor:
    """The registered secrets and what finds them. Registering builds the finder anew and
    puts it in place in one assignment, so that a thread redacting meanwhile uses either the
    old one or the new one, never one half-built."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._finder: _Finder = ((), None)

    def register(self, values: Iterable[str]) -> None:
        with self._lock:
            secrets = self._secrets | {value for value in values if value}
            if secrets != self._secrets:
                self._finder = _finder_of(secrets)
                self._secrets = secrets

    def redact(self, text: str) -> str:
        anywhere, tiny = self._finder
        for form in anywhere:
            if form in text:
                text = text.replace(form, REDACTED)
        return text if tiny is None else tiny.sub(REDACTED, text)


_redactor = _Redactor()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values so that no log line or message can carry them."""
    _redactor.register(values)


def redact(text: str) -> str:
    """`text` with every registered secret replaced, in any of its written forms."""
    return _redactor.redact(text)


def redact_structure(value: object) -> object:
    """`value` (JSON-like: dicts, lists, strings, numbers) with every string in it, keys
    included, redacted: for output that is encoded afterwards, which redacting the encoded
    text could make invalid (a secret `1` would take the place of every number 1)."""
    return _redact_value(value)


def _redact_value(value: object) -> object:
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, dict):
        return {_redact_key(key): _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return redact(_as_text(value))


def _redact_key(key: object) -> object:
    return redact(key) if isinstance(key, str) else key


def _as_text(value: object) -> str:
    """A logged value as the line will show it."""
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, str):
        return value
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    # Any other object is rendered by its repr (as both renderers would), and redacted here:
    # once rendered, its repr would be escaped again inside the line.
    return repr(value)


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
