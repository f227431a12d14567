"""The conformance kit's checks of documents, secrets, a failing source and streaming."""

from __future__ import annotations

import gc

from pydantic import ValidationError

from kravia_sync.connector import ConnectorError, RecordError, SourceRecord
from kravia_sync.documents import PDF_MAGIC, Document
from kravia_sync.testing._kit_base import KitBase
from kravia_sync.testing._kit_helpers import (
    _captured_output,
    _close,
    _drain,
    _error_text,
    _fail,
    _holds_pdf,
    _item_key,
    _plain_secret_fields,
    _secret_values,
    _traced,
)

__all__ = ["SafetyChecks"]

# What the read may hold before its first record, as a share of what the records themselves
# take: a page or batch of a large sample is far below it; the whole sample is at or above it.
_STREAM_SHARE = 0.5
_PDF_TRAILER = b"%%EOF"


class SafetyChecks(KitBase):
    """Documents, secrets, failures and streaming."""

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

    def _failure_error(self, check: str) -> ConnectorError:  # noqa: RET503 - _fail() raises
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
