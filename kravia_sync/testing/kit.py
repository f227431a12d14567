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

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from stdnum.no import orgnr

from kravia_sync.connector import Connector
from kravia_sync.testing._kit_checks_records import RecordChecks
from kravia_sync.testing._kit_checks_safety import SafetyChecks
from kravia_sync.testing._kit_helpers import ConformanceError, _FailingFactory, _SampleFactory
from kravia_sync.testing._kit_stamped import StampedReadCheck

__all__ = [
    "ConformanceError",
    "ConformanceKit",
    "ConnectorConformance",
    "minimal_pdf",
    "sample_invoices",
]


class ConformanceKit(RecordChecks, SafetyChecks, StampedReadCheck):
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
