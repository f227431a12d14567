"""The conformance kit fails deliberately broken connectors, saying what to fix.

`JsonLines` is a small, correct connector (one invoice per line of a file, a PDF beside it,
a token); each broken connector below differs from it by one mistake.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr, model_validator

from kravia_sync import (
    CallableDocument,
    Connector,
    ConnectorError,
    ConnectorSettings,
    FileDocument,
    PaymentRecord,
    RecordError,
    RecordStamp,
    SourceRecord,
    StampedRead,
)
from kravia_sync.testing import ConformanceError, ConformanceKit, minimal_pdf, sample_invoices

TOKEN = "tok-Vq83hLm20xPz"


class JsonLinesSettings(ConnectorSettings):
    path: Path
    token: SecretStr


class JsonLines(Connector):
    """Correct: streams the file line by line; a missing file is a ConnectorError."""

    settings_model: ClassVar[type[ConnectorSettings]] = JsonLinesSettings
    settings: JsonLinesSettings

    def secret_values(self) -> list[str]:
        return [self.settings.token.get_secret_value()]

    @property
    def file(self) -> Path:
        return self.base_dir / self.settings.path

    def lines(self) -> Iterator[str]:
        try:
            with self.file.open(encoding="utf-8") as handle:
                yield from handle
        except OSError as exc:
            raise ConnectorError(f"cannot read {self.file}: {exc.strerror}") from None

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        for line in self.lines():
            yield self.record(json.loads(line))

    def record(self, fields: dict[str, Any]) -> SourceRecord:
        number = fields["invoice_number"]
        pdf = self.file.parent / f"{number}.pdf"
        return SourceRecord(number, fields, FileDocument(pdf) if pdf.exists() else None)


def sample(directory: Path, count: int) -> Mapping[str, Any]:
    with (directory / "invoices.jsonl").open("w", encoding="utf-8") as out:
        for record in sample_invoices(count):
            out.write(json.dumps(record) + "\n")
            if int(record["invoice_number"]) % 2:
                number = record["invoice_number"]
                (directory / f"{number}.pdf").write_bytes(minimal_pdf(number))
    return {"path": "invoices.jsonl", "token": TOKEN}


def failing_source(directory: Path) -> Mapping[str, Any]:
    return {"path": "missing.jsonl", "token": TOKEN}


def kit(connector: type[Connector], tmp_path: Path) -> ConformanceKit:
    return ConformanceKit(
        connector, sample=sample, failing_source=failing_source, directory=tmp_path
    )


def fails(check: str, connector: type[Connector], tmp_path: Path, problem: str, fix: str) -> str:
    """The kit's check fails with a message naming the problem and how to fix it."""
    with pytest.raises(ConformanceError) as failure:
        getattr(kit(connector, tmp_path), f"check_{check}")()
    message = str(failure.value)
    head, _, advice = message.partition("\n  fix: ")
    assert problem in head, message
    assert fix in advice, message
    return message


# -- the broken connectors ---------------------------------------------------------------------


class UnstableIds(JsonLines):
    """Keys and accounting ids made up per read."""

    def record(self, fields: dict[str, Any]) -> SourceRecord:
        fields = {**fields, "accounting_invoice_id": str(uuid.uuid4())}
        return SourceRecord(str(uuid.uuid4()), fields)


class ReadTimeInFields(JsonLines):
    """A field that changes on every read."""

    def record(self, fields: dict[str, Any]) -> SourceRecord:
        return SourceRecord(fields["invoice_number"], {**fields, "description": uuid.uuid4().hex})


class PlainTokenSettings(ConnectorSettings):
    path: Path
    token: str


class TokenInRepr(JsonLines):
    """The token as plain text in the settings, so in every repr of them."""

    settings_model: ClassVar[type[ConnectorSettings]] = PlainTokenSettings
    settings: PlainTokenSettings  # type: ignore[assignment]

    def secret_values(self) -> list[str]:
        return [self.settings.token]


class TokenInConnectorRepr(JsonLines):
    def __repr__(self) -> str:
        return f"TokenInConnectorRepr(token={self.settings.token.get_secret_value()})"


class TokenLogged(JsonLines):
    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        logging.getLogger("broken").debug("reading with %s", self.settings.token.get_secret_value())
        yield from super().read()


class TokenInError(JsonLines):
    def lines(self) -> Iterator[str]:
        if not self.file.exists():
            token = self.settings.token.get_secret_value()
            raise ConnectorError(f"GET https://api.example.com/invoices?token={token} failed")
        yield from super().lines()


class SecretNotReported(JsonLines):
    def secret_values(self) -> list[str]:
        return []


class SwallowedError(JsonLines):
    """A source error caught and returned as an empty read."""

    def lines(self) -> Iterator[str]:
        try:
            yield from super().lines()
        except ConnectorError:
            return


class RawOsError(JsonLines):
    """The source's own exception escapes instead of a ConnectorError."""

    def lines(self) -> Iterator[str]:
        with self.file.open(encoding="utf-8") as handle:
            yield from handle


class MutedError(JsonLines):
    def lines(self) -> Iterator[str]:
        if not self.file.exists():
            raise ConnectorError("error")
        yield from super().lines()


class WholeList(JsonLines):
    """Builds every record before yielding the first."""

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        records = [self.record(json.loads(line)) for line in self.lines()]
        yield from records


class ReturnsList(JsonLines):
    def read(self) -> list[SourceRecord | PaymentRecord | RecordError]:  # type: ignore[override]
        return [self.record(json.loads(line)) for line in self.lines()]


class NotPdf(JsonLines):
    """The 'document' is the web page that links to the PDF."""

    def record(self, fields: dict[str, Any]) -> SourceRecord:
        page = b"<!DOCTYPE html><html><body>Download your invoice</body></html>"
        return SourceRecord(
            fields["invoice_number"], fields, CallableDocument("invoice.pdf", lambda: page)
        )


class EagerDocument(JsonLines):
    """Reads every PDF during the read."""

    def record(self, fields: dict[str, Any]) -> SourceRecord:
        content = minimal_pdf(fields["invoice_number"])
        return SourceRecord(
            fields["invoice_number"], fields, CallableDocument("invoice.pdf", lambda: content)
        )


class FloatAmounts(JsonLines):
    def record(self, fields: dict[str, Any]) -> SourceRecord:
        return SourceRecord(fields["invoice_number"], {**fields, "amount": float(fields["amount"])})


class DropsOne(JsonLines):
    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        for index, item in enumerate(super().read()):
            if index:
                yield item


class AssumesKeysSettings(JsonLinesSettings):
    @model_validator(mode="before")
    @classmethod
    def _tidy(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "path": str(data["path"]).strip()}  # KeyError, TypeError: not a key


class AssumesKeys(JsonLines):
    """A settings validator that assumes `path` is there."""

    settings_model: ClassVar[type[ConnectorSettings]] = AssumesKeysSettings


class AllowsUnknownKeys(JsonLines):
    class Settings(JsonLinesSettings):
        model_config = {"extra": "ignore"}  # noqa: RUF012 - pydantic's configuration

    settings_model: ClassVar[type[ConnectorSettings]] = Settings


# -- the tests ---------------------------------------------------------------------------------


class Stamped(JsonLines):
    """Correct, with a two-phase read: a digest per line, stamps, records by digest."""

    def record(self, fields: dict[str, Any]) -> SourceRecord:
        plain = super().record(fields)
        return SourceRecord(plain.key, plain.fields, plain.document, self.digest(fields))

    @staticmethod
    def digest(fields: dict[str, Any]) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(fields, sort_keys=True)))

    def stamp(self, record: SourceRecord) -> RecordStamp:
        number = record.fields["invoice_number"]
        assert record.digest is not None
        return RecordStamp(
            record.key, {"invoice_number": number}, record.digest, record.document is not None
        )

    def stamped_read(self) -> StampedRead | None:
        connector = self

        class Read(StampedRead):
            def stamps(self) -> Iterator[RecordStamp | PaymentRecord | RecordError]:
                for record in connector.read():
                    assert isinstance(record, SourceRecord)
                    yield connector.stamp(record)

            def records(self, stamps: Sequence[RecordStamp]) -> Iterator[SourceRecord]:
                wanted = {stamp.digest for stamp in stamps}
                for record in connector.read():
                    assert isinstance(record, SourceRecord)
                    if record.digest in wanted:
                        yield record

        return Read()


class StampsWithoutDocuments(Stamped):
    def stamp(self, record: SourceRecord) -> RecordStamp:
        return super().stamp(record)._replace(has_document=False)


class RecordsForEveryStamp(Stamped):
    def stamped_read(self) -> StampedRead | None:
        read = super().stamped_read()
        assert read is not None
        read.records = lambda _stamps: (  # type: ignore[method-assign]
            record for record in self.read() if isinstance(record, SourceRecord)
        )
        return read


class TestACorrectConnector:
    def test_passes_every_check(self, tmp_path: Path) -> None:
        """The reference connector passes the whole kit."""
        kit(JsonLines, tmp_path).check_all()


class TestStableIds:
    def test_unstable_ids_fail(self, tmp_path: Path) -> None:
        """Ids made up per read fail, pointing at the source's own identity."""
        fails(
            "stable_ids", UnstableIds, tmp_path, "differ between two reads", "never from a counter"
        )

    def test_a_field_that_changes_per_read_fails(self, tmp_path: Path) -> None:
        """A field that differs on a second read of an unchanged source fails, naming it."""
        message = fails(
            "stable_ids", ReadTimeInFields, tmp_path, "says something else", "no read times"
        )
        assert "description" in message


class TestSecrets:
    def test_a_plain_text_token_fails(self, tmp_path: Path) -> None:
        """A token declared as str fails, asking for SecretStr."""
        fails(
            "secrets", TokenInRepr, tmp_path, "'token' looks like a secret but is str", "SecretStr"
        )

    def test_a_token_in_the_connectors_repr_fails(self, tmp_path: Path) -> None:
        """A SecretStr revealed by the connector's repr fails."""
        fails("secrets", TokenInConnectorRepr, tmp_path, "repr(connector)", "__repr__")

    def test_a_logged_token_fails(self, tmp_path: Path) -> None:
        """A token in a log line fails."""
        fails("secrets", TokenLogged, tmp_path, "log lines", "log calls")

    def test_a_token_in_an_error_fails(self, tmp_path: Path) -> None:
        """A token in a ConnectorError's message fails."""
        fails("secrets", TokenInError, tmp_path, "error of a failing source", "error messages")

    def test_a_secret_missing_from_secret_values_fails(self, tmp_path: Path) -> None:
        """A SecretStr the engine is not told about (so cannot redact) fails."""
        fails("secrets", SecretNotReported, tmp_path, "does not return", "secret_values()")


class TestSourceFailure:
    def test_a_swallowed_error_fails(self, tmp_path: Path) -> None:
        """A failure returned as an empty read fails: it would read as 'all paid'."""
        fails(
            "source_failure",
            SwallowedError,
            tmp_path,
            "ended normally with no records",
            "raise kravia_sync.ConnectorError",
        )

    def test_a_raw_os_error_fails(self, tmp_path: Path) -> None:
        """The source's own exception fails, asking for a ConnectorError."""
        fails(
            "source_failure",
            RawOsError,
            tmp_path,
            "raised FileNotFoundError",
            "raise kravia_sync.ConnectorError",
        )

    def test_a_message_saying_nothing_fails(self, tmp_path: Path) -> None:
        """A ConnectorError whose message says nothing useful fails."""
        fails("source_failure", MutedError, tmp_path, "message is 'error'", "say what failed")


class TestStreaming:
    def test_a_whole_list_read_fails(self, tmp_path: Path) -> None:
        """A read that builds every record before the first fails."""
        fails(
            "streams", WholeList, tmp_path, "before its first record", "never build the whole list"
        )

    def test_a_read_returning_a_list_fails(self, tmp_path: Path) -> None:
        """read() must be a generator, not return a list."""
        fails("records", ReturnsList, tmp_path, "returned a list", "generator")


class TestDocuments:
    def test_a_non_pdf_document_fails(self, tmp_path: Path) -> None:
        """A document that is not a PDF file fails, showing what it is."""
        fails(
            "documents",
            NotPdf,
            tmp_path,
            "is not a PDF file (it starts with b'<!DOCTYPE",
            "PDF copy",
        )

    def test_a_document_loaded_during_the_read_fails(self, tmp_path: Path) -> None:
        """A document holding its bytes before load() fails."""
        fails(
            "documents",
            EagerDocument,
            tmp_path,
            "already holds the PDF",
            "load the bytes in load()",
        )


class TestRecords:
    def test_an_invalid_record_fails_naming_the_field(self, tmp_path: Path) -> None:
        """A record the model refuses fails with the model's reason."""
        fails(
            "records", FloatAmounts, tmp_path, "amount: a float is not an exact amount", "Decimal"
        )

    def test_a_dropped_record_fails(self, tmp_path: Path) -> None:
        """A sample of 5 that yields 4 fails."""
        fails("records", DropsOne, tmp_path, "a sample of 5 invoices yielded 4", "one SourceRecord")


class TestSettingsErrors:
    def test_a_validator_assuming_a_key_fails(self, tmp_path: Path) -> None:
        """A settings validator that crashes on a missing key fails, asking for ValueError."""
        fails(
            "settings_errors",
            AssumesKeys,
            tmp_path,
            "without the required 'path' raised KeyError",
            "ValidationError naming the key",
        )

    def test_unknown_keys_accepted_fail(self, tmp_path: Path) -> None:
        """Settings that ignore an unknown (misspelt) key fail."""
        fails(
            "settings_errors",
            AllowsUnknownKeys,
            tmp_path,
            "an unknown key were accepted",
            "extra='forbid'",
        )


class TestStampedRead:
    def test_a_correct_stamped_read_passes(self, tmp_path: Path) -> None:
        assert kit(Stamped, tmp_path).check_stamped_read() is True
        assert kit(JsonLines, tmp_path / "plain").check_stamped_read() is False

    def test_stamps_that_lie_about_documents_fail(self, tmp_path: Path) -> None:
        fails(
            "stamped_read",
            StampsWithoutDocuments,
            tmp_path,
            "has_document is False",
            "stamps must describe the records read() yields",
        )

    def test_records_beyond_the_stamps_asked_for_fail(self, tmp_path: Path) -> None:
        fails(
            "stamped_read",
            RecordsForEveryStamp,
            tmp_path,
            "records() of 3 stamps gave 5 records",
            "no other",
        )
