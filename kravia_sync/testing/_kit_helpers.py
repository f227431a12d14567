"""The conformance kit's shared pieces: its error, what a read yielded, and the helpers the checks
use to drain a read, trace memory, capture output and look for secrets and PDF bytes."""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import re
import tracemalloc
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, SecretBytes, SecretStr

from kravia_sync.connector import Connector, PaymentRecord, RecordError, SourceRecord
from kravia_sync.documents import PDF_MAGIC
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import Invoice
from kravia_sync.payments import Payment

_SampleFactory = Callable[[Path, int], Mapping[str, Any]]
_FailingFactory = Callable[[Path], Mapping[str, Any]]
_Item = SourceRecord | PaymentRecord | RecordError

# A settings field whose name ends in one of these words holds a secret (`token`,
# `api_token`, `client_secret`), unlike `token_env`, `password_file` or `token_url`, which
# only say where one is.
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:password|passwd|passphrase|secret|token|credentials?|apikey|"
    r"(?:api|secret|private|access)_?key)$",
    re.IGNORECASE,
)


class ConformanceError(AssertionError):
    """A connector does not conform: the message says what is wrong and what to fix."""

    __module__ = "kravia_sync.testing.kit"  # the public module, which tracebacks name


def _fail(check: str, problem: str, fix: str) -> NoReturn:
    raise ConformanceError(f"{check}: {problem}\n  fix: {fix}")


@dataclass
class _Read:
    items: list[_Item]
    invoices: dict[str, Invoice] = field(default_factory=dict)  # by accountingInvoiceId

    @property
    def records(self) -> list[SourceRecord]:
        return [item for item in self.items if isinstance(item, SourceRecord)]


def _validate_item(check: str, item: object, read: _Read) -> None:
    if isinstance(item, RecordError):
        _fail(
            check,
            f"the sample yielded RecordError {item.key}: {item.field}: {item.reason}",
            "a valid sample must read cleanly; yield RecordError only for what cannot be parsed",
        )
    if isinstance(item, SourceRecord):
        if not isinstance(item.key, str) or not item.key.strip():
            _fail(check, f"a record's key is {item.key!r}", "give every record a stable key")
        try:
            invoice = Invoice.from_record(item.fields, document=item.document)
        except InvalidRecordError as exc:
            _fail(
                check,
                f"record {item.key} is not a valid invoice: {exc}",
                "map the source's values to the canonical fields (kravia_sync.RECORD_FIELDS) "
                "with Decimal amounts, dates and the required fields",
            )
        if invoice.accounting_invoice_id in read.invoices:
            _fail(
                check,
                f"two records have the accounting invoice id {invoice.accounting_invoice_id}",
                "give each invoice its own accounting_invoice_id (or invoice_number)",
            )
        read.invoices[invoice.accounting_invoice_id] = invoice
    elif isinstance(item, PaymentRecord):
        try:
            Payment.from_record(item.fields)
        except InvalidRecordError as exc:
            _fail(
                check,
                f"payment record {item.key} is not a valid payment: {exc}",
                "map the source's payments to kravia_sync.PAYMENT_FIELDS",
            )
    else:
        _fail(
            check,
            f"read() yielded a {type(item).__name__}",
            "yield only SourceRecord, PaymentRecord or RecordError",
        )


def _difference(first: Invoice, second: Invoice) -> str:
    one, two = first.model_dump(mode="json"), second.model_dump(mode="json")
    changed = sorted(key for key in one if one[key] != two.get(key))
    if first.document is None or second.document is None:
        changed += [] if (first.document is None) == (second.document is None) else ["document"]
    return "changed: " + ", ".join(changed or ["its document"])


def _item_key(item: _Item) -> str:
    return item.key


def _drain(connector: Connector) -> Iterator[_Item]:
    yield from connector.read()


def _close(iterator: object) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


@contextlib.contextmanager
def _traced() -> Iterator[Callable[[], int]]:
    """Trace allocations; the callable gives the peak since the start, above the start."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield lambda: max(0, tracemalloc.get_traced_memory()[1] - base)
    finally:
        if started:
            tracemalloc.stop()


@contextlib.contextmanager
def _captured_output() -> Iterator[io.StringIO]:
    """Everything logged (stdlib logging at every level, structlog) and printed meanwhile."""
    import structlog  # noqa: PLC0415 - only needed here

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with (
            structlog.testing.capture_logs() as events,
            contextlib.redirect_stdout(buffer),
            contextlib.redirect_stderr(buffer),
        ):
            yield buffer
        for event in events:
            buffer.write(f"{event!r}\n")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _error_text(error: BaseException) -> str:
    """The error and what it was raised from, as a traceback would show them."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current} {current.args!r}")
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return "\n".join(parts)


def _plain_secret_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Fields whose names say they hold a secret but whose type is not a secret type."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        for nested in _models_in(info.annotation):
            yield from _plain_secret_fields(nested, f"{path}.")
        if _SECRET_NAME.search(name) and not _is_secret_type(info.annotation):
            yield path, _type_name(info.annotation)


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in getattr(annotation, "__args__", ()) for model in _models_in(arg)]


def _is_secret_type(annotation: object) -> bool:
    if isinstance(annotation, type):
        return issubclass(annotation, SecretStr | SecretBytes)
    args = [arg for arg in getattr(annotation, "__args__", ()) if arg is not type(None)]
    return bool(args) and all(_is_secret_type(arg) for arg in args)


def _type_name(annotation: object) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _secret_values(value: object) -> list[str]:
    """Every secret value held in settings: SecretStr and SecretBytes, however nested."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, SecretBytes):
        return [value.get_secret_value().decode(errors="replace")]
    if isinstance(value, BaseModel):
        return [
            s for name in type(value).model_fields for s in _secret_values(getattr(value, name))
        ]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in _secret_values(item)]
    if isinstance(value, list | tuple | set | frozenset):
        return [s for item in value for s in _secret_values(item)]
    return []


def _referents(current: object) -> list[object]:
    """What `current` refers to, without a function's globals or a class's namespace."""
    if isinstance(current, str | int | float | type | types.ModuleType):
        return []
    if isinstance(current, types.FunctionType):
        return [*(current.__closure__ or ()), *(current.__defaults__ or ())]
    if isinstance(current, types.CellType):
        try:
            return [current.cell_contents]
        except ValueError:  # an empty cell
            return []
    return gc.get_referents(current)


def _holds_pdf(document: object, *, max_depth: int = 6, max_objects: int = 5000) -> bool:
    """Whether the PDF's bytes are reachable from `document` (already loaded)."""
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(document, 0)]
    while stack and len(seen) < max_objects:
        current, depth = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, bytes | bytearray):
            if bytes(current[:5]) == PDF_MAGIC:
                return True
            continue
        if isinstance(current, memoryview):
            if current.nbytes >= 5 and current.tobytes()[:5] == PDF_MAGIC:
                return True
            continue
        if depth < max_depth:
            stack.extend((referent, depth + 1) for referent in _referents(current))
    return False
