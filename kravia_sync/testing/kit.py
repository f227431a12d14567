"""The connector conformance kit, and helpers for tests of kravia-sync and of connectors.

A connector author runs the kit from their own pytest suite in a few lines::

    from kravia_sync.testing import ConnectorConformance, sample_invoices

    class TestMyConnector(ConnectorConformance):
        connector = MyConnector

        def sample(self, directory, count):
            ...  # write a source holding `count` overdue invoices (see `sample_invoices`)
            return {"path": "invoices.xlsx"}  # the settings that read it

        def failing_source(self, directory):
            return {"path": "missing.xlsx"}  # settings for a source whose read fails

Every check is also a method of `ConformanceKit`, for use outside a test class. A failed check
raises `ConformanceError` (an `AssertionError`) whose message says what is wrong and what to
fix. The checks, against the author's sample source:

* the settings model is a `ConnectorSettings` with a JSON Schema; a settings error (an unknown
  key, a required key left out) is a pydantic `ValidationError` that names the key;
* every item is valid: each `SourceRecord` becomes a canonical `Invoice`, each `PaymentRecord`
  a `Payment`; a sample of `count` invoices yields `count` invoices with unique ids and no
  `RecordError`;
* ids, and what each invoice says, are stable across two reads;
* the read streams: what is held before the first record does not grow with the source;
* documents are lazy (no PDF bytes held before `load()`) and load as real PDF files;
* secrets are secret types, are all returned by `secret_values()`, and appear in no `repr`,
  error, log line or output;
* a failing source raises `ConnectorError` with a clear message, never an empty read.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import re
import tracemalloc
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Final, NoReturn
from zoneinfo import ZoneInfo

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from stdnum.no import orgnr

from kravia_sync.connector import (
    Connector,
    ConnectorError,
    ConnectorSettings,
    PaymentRecord,
    RecordError,
    RecordStamp,
    SourceRecord,
)
from kravia_sync.documents import PDF_MAGIC, Document
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import Invoice, record_accounting_id
from kravia_sync.payments import Payment

__all__ = [
    "ConformanceError",
    "ConformanceKit",
    "ConnectorConformance",
    "minimal_pdf",
    "sample_invoices",
]

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
_UNKNOWN_KEY = "no_such_setting"
# A value no ordinary setting accepts: the error must still name the key.
_WRONG_VALUE: Final = {"kravia_sync_conformance": [["not a setting"]]}
# What the read may hold before its first record, as a share of what the records themselves
# take: a page or batch of a large sample is far below it; the whole sample is at or above it.
_STREAM_SHARE = 0.5
_PDF_TRAILER = b"%%EOF"


class ConformanceError(AssertionError):
    """A connector does not conform: the message says what is wrong and what to fix."""


def _fail(check: str, problem: str, fix: str) -> NoReturn:
    raise ConformanceError(f"{check}: {problem}\n  fix: {fix}")


@dataclass
class _Read:
    items: list[_Item]
    invoices: dict[str, Invoice] = field(default_factory=dict)  # by accountingInvoiceId

    @property
    def records(self) -> list[SourceRecord]:
        return [item for item in self.items if isinstance(item, SourceRecord)]


class ConformanceKit:
    """The conformance checks for one connector class and its sample source.

    `sample(directory, count)` writes a source holding `count` overdue invoices into (or
    starts one for) `directory` and returns the settings that read it; relative paths in them
    are taken from `directory`. `failing_source(directory)` returns valid settings for a source
    whose read fails (a missing file, a refused connection, a server answering 500).
    """

    def __init__(
        self,
        connector: type[Connector],
        *,
        sample: _SampleFactory,
        failing_source: _FailingFactory,
        directory: Path,
        count: int = 5,
        stream_count: int = 300,
    ) -> None:
        if count < 2:
            raise ValueError("count must be at least 2")
        self.connector = connector
        self._sample = sample
        self._failing = failing_source
        self.directory = directory
        self.count = count
        self.stream_count = stream_count
        self._sources: dict[int, tuple[Mapping[str, Any], Path]] = {}

    # -- the whole suite -----------------------------------------------------------------

    def check_all(self) -> None:
        """Every check, in order; the first that fails raises."""
        self.check_settings_model()
        self.check_settings_errors()
        self.check_records()
        self.check_stable_ids()
        self.check_documents()
        self.check_secrets()
        self.check_source_failure()
        self.check_streams()
        self.check_stamped_read()

    # -- settings ------------------------------------------------------------------------

    def check_settings_model(self) -> None:
        """`settings_model` is a `ConnectorSettings` and has a JSON Schema."""
        check = "settings model"
        model = self.connector.settings_model
        if not (isinstance(model, type) and issubclass(model, ConnectorSettings)):
            _fail(
                check,
                f"{self.connector.__name__}.settings_model is {model!r}",
                "set settings_model to a subclass of kravia_sync.ConnectorSettings",
            )
        if model is ConnectorSettings:
            _fail(
                check,
                f"{self.connector.__name__}.settings_model is the bare ConnectorSettings",
                "declare a settings model of your own, even a small one",
            )
        try:
            json.dumps(model.model_json_schema())
        except Exception as exc:
            _fail(
                check,
                f"no JSON Schema for {model.__name__}: {exc}",
                "use field types pydantic can describe (kravia-sync connectors shows it)",
            )

    def check_settings_errors(self) -> None:
        """An unknown key, each required key left out and each key given a value of the wrong
        type fail validation with an error that names the key."""
        check = "settings errors"
        raw, base_dir = self._source(self.count)
        self._build(raw, base_dir, check)
        cases: list[tuple[str, str, dict[str, Any]]] = [
            (_UNKNOWN_KEY, "an unknown key", {**raw, _UNKNOWN_KEY: "x"})
        ]
        for name, info in self.connector.settings_model.model_fields.items():
            key = info.alias or name
            if info.is_required() and key in raw:
                left_out = {k: v for k, v in raw.items() if k != key}
                cases.append((key, f"without the required {key!r}", left_out))
        cases += [(key, f"a wrong value for {key!r}", {**raw, key: _WRONG_VALUE}) for key in raw]
        for key, what, settings in cases:
            try:
                self.connector.from_settings(settings, base_dir=base_dir)
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_input=False)
                named = {str(part) for error in errors for part in error["loc"]}
                if key not in named and not any(key in str(e["msg"]) for e in errors):
                    _fail(
                        check,
                        f"settings with {what} failed, but the error does not name {key!r}: "
                        + "; ".join(str(e["msg"]) for e in errors),
                        "let pydantic validate each key in its own field, or name the key in "
                        "the message of a model validator",
                    )
            except Exception as exc:
                _fail(
                    check,
                    f"settings with {what} raised {type(exc).__name__}: {exc}",
                    "validate settings in settings_model so that a bad one is a pydantic "
                    "ValidationError naming the key (validators raise ValueError, and do not "
                    "assume a key is there or has the right type)",
                )
            else:
                if key == _UNKNOWN_KEY:
                    _fail(
                        check,
                        f"settings with {what} were accepted",
                        "keep ConnectorSettings' model_config (extra='forbid'), so that a "
                        "misspelt key is an error rather than silently ignored",
                    )
                if what.startswith("without"):
                    _fail(check, f"settings {what} were accepted", f"check {key!r}")

    # -- records -------------------------------------------------------------------------

    def check_records(self) -> None:
        """Every item of the sample is a valid invoice or payment; the count is right; ids are
        unique."""
        read = self._read(self.count, "records")
        found = len(read.invoices)
        if found != self.count:
            _fail(
                "records",
                f"a sample of {self.count} invoices yielded {found}",
                "yield one SourceRecord per invoice of the source (and check sample())",
            )

    def check_stable_ids(self) -> None:
        """Two reads of one source yield the same ids, and each invoice says the same."""
        check = "stable ids"
        first = self._read(self.count, check)
        second = self._read(self.count, check)
        fix = (
            "derive `key` and the accounting id from the source's own identity (the invoice "
            "number, a primary key, a file name and line), never from a counter, a clock or "
            "a random value"
        )
        keys = (sorted(r.key for r in first.records), sorted(r.key for r in second.records))
        if keys[0] != keys[1]:
            changed = sorted(set(keys[0]) ^ set(keys[1]))[:3]
            _fail(check, f"record keys differ between two reads (e.g. {changed})", fix)
        if set(first.invoices) != set(second.invoices):
            changed = sorted(set(first.invoices) ^ set(second.invoices))[:3]
            _fail(check, f"accounting invoice ids differ between two reads (e.g. {changed})", fix)
        for invoice_id, invoice in first.invoices.items():
            if invoice.fingerprint() != second.invoices[invoice_id].fingerprint():
                _fail(
                    check,
                    f"invoice {invoice_id} says something else on a second read of an unchanged "
                    f"source ({_difference(invoice, second.invoices[invoice_id])})",
                    "yield only what the source holds: no read times or counters in fields",
                )
        digests = (
            {r.key: r.digest for r in first.records},
            {r.key: r.digest for r in second.records},
        )
        if digests[0] != digests[1]:
            _fail(
                check,
                "record digests differ between two reads of an unchanged source",
                "compute `digest` from the record's content only (or leave it None)",
            )

    def check_documents(self) -> int:
        """Documents hold no PDF before `load()`, and load as PDF files. Returns how many
        documents the sample has (0: nothing was checked)."""
        check = "documents"
        read = self._read(self.count, check)
        documents = [(r.key, r.document) for r in read.records if r.document is not None]
        for key, document in documents:
            if not isinstance(document, Document):
                _fail(
                    check,
                    f"record {key}: the document is a {type(document).__name__}, not a Document",
                    "give an object with `name` and `load()`, such as kravia_sync.FileDocument "
                    "or kravia_sync.CallableDocument",
                )
            if _holds_pdf(document):
                _fail(
                    check,
                    f"record {key}: the document already holds the PDF's bytes before load()",
                    "load the bytes in load() (e.g. CallableDocument(name, fetch)), so a read "
                    "does not hold every PDF in memory",
                )
            try:
                content = document.load()
            except Exception as exc:
                _fail(
                    check,
                    f"record {key}: {document.name}: load() raised {type(exc).__name__}: {exc}",
                    "a document of an unchanged sample must load",
                )
            if not isinstance(content, bytes):
                _fail(
                    check,
                    f"record {key}: load() returned {type(content).__name__}, not bytes",
                    "return the PDF file's bytes",
                )
            if not content.startswith(PDF_MAGIC) or _PDF_TRAILER not in content[-1024:]:
                _fail(
                    check,
                    f"record {key}: {document.name} is not a PDF file (it starts with "
                    f"{content[:16]!r} and is {len(content)} bytes)",
                    "return the invoice's PDF copy itself, not a web page, an error body, "
                    "base64 text or another format; yield no document when there is none",
                )
        return len(documents)

    # -- secrets -------------------------------------------------------------------------

    def check_secrets(self) -> None:
        """Secrets are secret types, all reported by `secret_values()`, and never shown."""
        check = "secrets"
        for path, annotation in _plain_secret_fields(self.connector.settings_model):
            _fail(
                check,
                f"settings field {path!r} looks like a secret but is {annotation}",
                f"declare {path!r} as pydantic.SecretStr (better: read it from an environment "
                "variable or a file named in the settings), and return its value from "
                "secret_values()",
            )
        raw, base_dir = self._source(self.count)
        with _captured_output() as output:
            connector = self._build(raw, base_dir, check)
            held = _secret_values(connector.settings)
            reported = set(connector.secret_values())
            missing = [value for value in held if value not in reported]
            if missing:
                _fail(
                    check,
                    f"the settings hold {len(missing)} secret(s) that secret_values() does "
                    "not return",
                    "override secret_values() to return every secret value, so the engine "
                    "redacts them from logs and errors",
                )
            secrets = sorted(set(held) | reported)
            shown = [
                ("repr(settings)", repr(connector.settings)),
                ("str(settings)", str(connector.settings)),
                ("the settings as JSON", connector.settings.model_dump_json()),
                ("repr(connector)", repr(connector)),
            ]
            items = list(_drain(connector))
            shown += [(f"repr of item {_item_key(item)}", repr(item)) for item in items]
            shown += [
                (f"record {item.key}'s document name", item.document.name)
                for item in items
                if isinstance(item, SourceRecord) and item.document is not None
            ]
            failure = self._failure_error(check)
            shown.append(("the error of a failing source", _error_text(failure)))
        shown.append(("log lines and output of the reads", output.getvalue()))
        for where, text in shown:
            for secret in secrets:
                if secret and secret in text:
                    _fail(
                        check,
                        f"a secret appears in {where}",
                        "hold secrets as SecretStr, keep them out of __repr__, fields, "
                        "documents, log calls and error messages (redact driver errors)",
                    )

    # -- failures ------------------------------------------------------------------------

    def check_source_failure(self) -> None:
        """A failing source raises `ConnectorError` with a clear message, never an empty or
        partial read."""
        check = "source failure"
        error = self._failure_error(check)
        message = str(error).strip()
        if len(message) < 10 or message == type(error).__name__:
            _fail(
                check,
                f"the ConnectorError's message is {message!r}",
                "say what failed and where (the file, host or database, without secrets), "
                "so an operator can act on it",
            )

    def _failure_error(self, check: str) -> ConnectorError:
        directory = self.directory / "failing"
        directory.mkdir(parents=True, exist_ok=True)
        raw = self._failing(directory)
        try:
            connector = self.connector.from_settings(raw, base_dir=directory)
            items = list(connector.read())
        except ConnectorError as exc:
            return exc
        except ValidationError as exc:
            _fail(
                check,
                f"failing_source() settings are invalid: {exc}",
                "return valid settings for a source that fails when it is read",
            )
        except Exception as exc:
            _fail(
                check,
                f"a failing source raised {type(exc).__name__}: {exc}",
                "catch the source's own exceptions (I/O, driver, HTTP) and raise "
                "kravia_sync.ConnectorError with a message saying what failed",
            )
        found = (
            "no records"
            if not items
            else f"{len(items)} items"
            if any(not isinstance(item, RecordError) for item in items)
            else f"only {len(items)} RecordError(s)"
        )
        _fail(
            check,
            f"the read of a failing source ended normally with {found}",
            "raise kravia_sync.ConnectorError when the source cannot be read completely: an "
            "empty or partial read would be taken as 'these invoices are paid'",
        )

    # -- streaming -----------------------------------------------------------------------

    def check_streams(self) -> None:
        """What the read holds before its first record does not grow with the source."""
        check = "streaming"
        small, large = self.stream_count, 3 * self.stream_count
        self._drain_count(small, check)  # warm up: imports, caches, connection pools
        first_small, all_small = self._first_item_bytes(small), self._all_items_bytes(small)
        first_large, all_large = self._first_item_bytes(large), self._all_items_bytes(large)
        records_growth = all_large - all_small
        held_growth = first_large - first_small
        if records_growth <= 0:
            _fail(
                check,
                f"the records of {large} invoices took no more memory than those of {small}",
                "make sample(directory, count) write `count` invoices",
            )
        if held_growth > _STREAM_SHARE * records_growth:
            share = held_growth / records_growth
            _fail(
                check,
                f"before its first record the read already holds {share:.0%} of what all "
                f"records take (growing from {first_small} to {first_large} bytes when the "
                f"source grows from {small} to {large} invoices)",
                "yield each record as soon as it is read: iterate over rows, pages or lines "
                "(a server-side cursor, one page at a time), never build the whole list first",
            )

    def _first_item_bytes(self, count: int) -> int:
        raw, base_dir = self._source(count)
        connector = self._build(raw, base_dir, "streaming")
        gc.collect()
        with _traced() as measure:
            iterator = connector.read()
            first = next(iter(iterator), None)
            held = measure()
        if first is None:
            _fail("streaming", f"a sample of {count} invoices yielded nothing", "check sample()")
        _close(iterator)
        return held

    def _all_items_bytes(self, count: int) -> int:
        raw, base_dir = self._source(count)
        connector = self._build(raw, base_dir, "streaming")
        gc.collect()
        with _traced() as measure:
            items = list(connector.read())
            held = measure()
        del items
        return held

    def _drain_count(self, count: int, check: str) -> None:
        raw, base_dir = self._source(count)
        for _ in _drain(self._build(raw, base_dir, check)):
            pass

    # -- helpers -------------------------------------------------------------------------

    def _source(self, count: int) -> tuple[Mapping[str, Any], Path]:
        if count not in self._sources:
            directory = self.directory / f"sample-{count}"
            directory.mkdir(parents=True, exist_ok=True)
            self._sources[count] = (self._sample(directory, count), directory)
        return self._sources[count]

    def _build(self, raw: Mapping[str, Any], base_dir: Path, check: str) -> Connector:
        try:
            return self.connector.from_settings(raw, base_dir=base_dir)
        except Exception as exc:
            _fail(
                check,
                f"the sample's settings fail: {type(exc).__name__}: {exc}",
                "make sample() return settings the connector accepts",
            )

    # -- the two-phase read -------------------------------------------------------------

    def check_stamped_read(self) -> bool:
        """Where the connector offers `stamped_read()`: its stamps are those of the plain
        read's records (keys in order, ids, digests, documents), its payments the same, and
        `records(stamps)` gives back exactly the records of those stamps. Returns whether
        there was a stamped read to check."""
        check = "stamped read"
        plain = self._read(self.count, check)
        raw, base_dir = self._source(self.count)
        try:
            stamped = self._build(raw, base_dir, check).stamped_read()
        except ConnectorError as exc:
            _fail(check, f"stamped_read() failed on the sample: {exc}", "check stamped_read()")
        if stamped is None:
            return False
        fix = "stamps must describe the records read() yields: same key, ids, digest"
        try:
            with stamped:
                items = list(stamped.stamps())
                stamps = [item for item in items if isinstance(item, RecordStamp)]
                asked = stamps[::2]
                again = list(stamped.records(asked))
        except ConnectorError as exc:
            _fail(check, f"the sample's stamped read failed: {exc}", "check stamped_read()")
        records = plain.records
        _compare_stamps(check, stamps, records, fix)
        payments = [item.key for item in items if isinstance(item, PaymentRecord)]
        if payments != [item.key for item in plain.items if isinstance(item, PaymentRecord)]:
            _fail(check, "the stamps phase yields other payments than read()", fix)
        wanted = {stamp.digest for stamp in asked}
        expected = sorted(
            (record.key, record.digest or "") for record in records if record.digest in wanted
        )
        got = sorted((record.key, record.digest or "") for record in again)
        if got != expected:
            _fail(
                check,
                f"records() of {len(asked)} stamps gave {len(got)} records, not the "
                f"{len(expected)} with their digests",
                "yield every record whose digest is one of the stamps' (and no other)",
            )
        return True

    def _read(self, count: int, check: str) -> _Read:
        raw, base_dir = self._source(count)
        connector = self._build(raw, base_dir, check)
        result = connector.read()
        if not isinstance(result, Iterator):
            _fail(
                check,
                f"read() returned a {type(result).__name__}, not an iterator",
                "write read() as a generator (`yield` each record)",
            )
        try:
            read = _Read(list(result))
        except ConnectorError as exc:
            _fail(check, f"the sample's read failed: {exc}", "check sample() and read()")
        for item in read.items:
            _validate_item(check, item, read)
        return read


def _compare_stamps(
    check: str, stamps: list[RecordStamp], records: list[SourceRecord], fix: str
) -> None:
    """Each stamp describes the plain read's record at its place."""
    if [stamp.key for stamp in stamps] != [record.key for record in records]:
        _fail(check, "the stamps' keys are not the plain read's record keys, in order", fix)
    for stamp, record in zip(stamps, records, strict=True):
        if stamp.digest != record.digest or not stamp.digest:
            _fail(
                check,
                f"record {record.key}: the stamp's digest {stamp.digest!r} is not the "
                f"record's {record.digest!r}",
                f"{fix}; a stamped read needs digests on its records",
            )
        if stamp.has_document != (record.document is not None):
            _fail(check, f"record {record.key}: has_document is {stamp.has_document}", fix)
        if record_accounting_id(stamp.fields) != record_accounting_id(record.fields):
            _fail(check, f"record {record.key}: the stamp carries other ids", fix)


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


# -- the pytest base class ---------------------------------------------------------------


class ConnectorConformance:
    """Subclass as `TestXxx(ConnectorConformance)` in a pytest suite: set `connector`, write
    `sample()` and `failing_source()`, and pytest runs every check as a test.

    Start servers a sample needs, or set the environment variables it reads, in an autouse
    fixture of the subclass.
    """

    connector: ClassVar[type[Connector]]
    count: ClassVar[int] = 5
    """How many invoices the small sample holds."""
    stream_count: ClassVar[int] = 300
    """The streaming check reads samples of this many and three times as many invoices: make it
    several times the connector's page or batch size."""

    def sample(self, directory: Path, count: int) -> Mapping[str, Any]:
        """Write a source of `count` valid overdue invoices into `directory` (some with a PDF
        copy), and return the settings that read it (relative paths are from `directory`)."""
        raise NotImplementedError(f"{type(self).__name__} must define sample(directory, count)")

    def failing_source(self, directory: Path) -> Mapping[str, Any]:
        """Valid settings for a source whose read fails (missing file, refused connection)."""
        raise NotImplementedError(f"{type(self).__name__} must define failing_source(directory)")

    def conformance_kit(self, directory: Path) -> ConformanceKit:
        return ConformanceKit(
            self.connector,
            sample=self.sample,
            failing_source=self.failing_source,
            directory=directory,
            count=self.count,
            stream_count=self.stream_count,
        )

    def test_settings_model_has_a_json_schema(self, tmp_path: Path) -> None:
        """The settings model is a ConnectorSettings with a JSON Schema."""
        self.conformance_kit(tmp_path).check_settings_model()

    def test_settings_errors_name_the_key(self, tmp_path: Path) -> None:
        """An unknown or missing settings key is an error naming the key."""
        self.conformance_kit(tmp_path).check_settings_errors()

    def test_records_are_valid_invoices(self, tmp_path: Path) -> None:
        """Every item of the sample is a valid canonical invoice or payment."""
        self.conformance_kit(tmp_path).check_records()

    def test_ids_are_stable_across_reads(self, tmp_path: Path) -> None:
        """Two reads of one source give the same ids and the same invoices."""
        self.conformance_kit(tmp_path).check_stable_ids()

    def test_documents_are_lazy_pdfs(self, tmp_path: Path) -> None:
        """Documents are loaded only by load(), and are PDF files."""
        import pytest  # noqa: PLC0415 - pytest is only there when tests run

        if self.conformance_kit(tmp_path).check_documents() == 0:
            pytest.skip("the sample has no documents")

    def test_secrets_never_leak(self, tmp_path: Path) -> None:
        """Secrets are secret types and appear in no repr, error, log line or output."""
        self.conformance_kit(tmp_path).check_secrets()

    def test_a_failing_source_raises_connector_error(self, tmp_path: Path) -> None:
        """A failing source is a ConnectorError with a clear message, never an empty read."""
        self.conformance_kit(tmp_path).check_source_failure()

    def test_the_read_streams(self, tmp_path: Path) -> None:
        """The read yields its first record before it has read the whole source."""
        self.conformance_kit(tmp_path).check_streams()

    def __init_subclass__(cls, **kwargs: object) -> None:
        """A connector that overrides `stamped_read()` gets one more test: its two-phase read
        must match its plain read."""
        super().__init_subclass__(**kwargs)
        connector = getattr(cls, "connector", None)
        if (
            isinstance(connector, type)
            and issubclass(connector, Connector)
            and connector.stamped_read is not Connector.stamped_read
        ):
            cls.test_a_stamped_read_matches_the_plain_read = _stamped_read_test  # type: ignore[attr-defined]


def _stamped_read_test(self: ConnectorConformance, tmp_path: Path) -> None:
    """The two-phase read's stamps and records are those of the plain read."""
    import pytest  # noqa: PLC0415 - pytest is only there when tests run

    if not self.conformance_kit(tmp_path).check_stamped_read():
        pytest.skip("the sample's source offers no stamped read (the connector declines it)")


# -- sample data -------------------------------------------------------------------------


def sample_invoices(
    count: int, *, start: int = 1, today: date | None = None
) -> list[dict[str, str]]:
    """`count` valid overdue invoices as flat records of text (the canonical field names):
    numbers from `start`, due 20 to 80 days ago, every third debtor a business with a valid
    organisation number. Write them into your source's format for a sample."""
    today = today or datetime.now(ZoneInfo("Europe/Oslo")).date()
    records = []
    for number in range(start, start + count):
        due = today - timedelta(days=20 + number % 61)
        record = {
            "invoice_number": str(number),
            "invoice_date": (due - timedelta(days=14)).isoformat(),
            "due_date": due.isoformat(),
            "amount": f"{100 + number % 9_900}.{number % 100:02d}",
            "currency": "NOK",
            "description": f"Invoice {number}",
            "debtor_name": f"Customer {number}",
            "debtor_number": f"C{number}",
            "debtor_email": f"customer{number}@example.com",
            "organization_number": _organization_number(number) if number % 3 == 0 else "",
            "address_line1": f"Storgata {number % 200 + 1}",
            "postal_code": f"{150 + number % 9_000:04d}",
            "city": "Oslo",
            "country": "NO",
        }
        records.append(record)
    return records


def _organization_number(seed: int) -> str:
    candidate = 910_000_000 + (seed * 37) % 80_000_000
    while not orgnr.is_valid(str(candidate)):
        candidate += 1
    return str(candidate)


def minimal_pdf(text: str = "Invoice") -> bytes:
    """A small, valid one-page PDF showing `text` (ASCII), for fixtures and sample data."""
    safe = text.encode("ascii", "replace").decode().replace("\\", "\\\\")
    safe = safe.replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 18 Tf 72 720 Td ({safe}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>"
        ),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)
