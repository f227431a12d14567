# (the project has no copyright header convention; every module trips CPY001)
"""The folder connector: invoices dropped as JSON, CSV or EHF (UBL XML) files into a directory.

Files are read in name order (subdirectories too when `recursive` is set; hidden files and
directories, and Office lock files `~$…`, are skipped):

* `*.json` holds one invoice object or a list of them, with the flat canonical field names
  (`kravia_sync.model.RECORD_FIELDS`). Numbers are parsed as `Decimal`, never as float.
* `*.csv` has a header row naming canonical fields (case and surrounding spaces do not
  matter), `,` or `;` as separator, and values as text exactly as in the file (the model
  parses decimal commas and `DD.MM.YYYY` dates).
* `*.xml` is one EHF / PEPPOL BIS Billing 3.0 document (UBL 2.1 `Invoice` or `CreditNote`),
  parsed safely by `connectors.ubl`. Its embedded PDF is the invoice copy, decoded only when
  needed. Credit notes (and corrective invoices with a negative amount due) are netted against
  the EHF invoice they name, so EHF records are yielded after the directory walk, once every
  credit is known; the parsed invoices (small: fields and a reference to their file) are held
  until then.
* `<invoice_number>.pdf` beside an invoice file is that invoice's copy, loaded only when needed
  (for an EHF invoice without an embedded PDF, `<file stem>.pdf` also counts).

Everything else is ignored. A problem with one file (unreadable, too big, not valid text, not
valid JSON, a CSV header that does not fit, XML that is unsafe or not UBL) becomes a
`RecordError` for that file and the read goes on; a folder that cannot be listed raises
`ConnectorError`.

Every file is read the same guarded way, invoice files and PDF copies alike: opened without
blocking (a named pipe would otherwise wait for a writer forever), read only if the opened file
is a regular file (not a pipe, a device such as /dev/zero, a socket or a directory), streamed
and never past `max_file_bytes` (also when it grows after it was measured), and never through a
symbolic link that leads out of the folder unless `follow_symlinks` is set. A link that stays
inside the folder is followed. The refusal names the file, never what is in it.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from kravia_sync import Connector, ConnectorSettings, PaymentRecord, RecordError, SourceRecord

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from connectors import ubl
    from connectors.folder._documents import PdfIndex
    from connectors.folder._formats import Item
    from kravia_sync import Document
from connectors.folder._documents import EmbeddedPdfDocument, FolderPdf, InvoiceFile, pdf_index
from connectors.folder._files import (
    CHUNK_BYTES,
    FILE,
    MIB,
    CappedFile,
    FileRules,
    RefusedError,
    is_directory,
    is_directory_link,
    link_reason,
    list_directory,
)
from connectors.folder._formats import (
    CsvLayout,
    csv_record,
    decode_reason,
    detect_delimiter,
    json_record,
    json_type,
    map_header,
    parse_json,
)

__all__ = ["EmbeddedPdfDocument", "FolderConnector", "FolderSettings"]


class FolderSettings(ConnectorSettings):
    """Settings of the folder connector (`[sources.settings]` of a `folder` source)."""

    path: Path
    """The directory to read; a relative path is taken from the configuration file's directory."""
    recursive: bool = False
    """Also read subdirectories (not hidden ones). A symbolic link to a directory in the folder
    is not followed (its files are read where they are, not twice); one to a directory outside
    it only with `follow_symlinks`."""
    max_file_bytes: int = Field(default=20 * MIB, gt=0)
    """A file bigger than this (JSON, CSV, XML, or a PDF copy) is reported as an error and not
    read."""
    follow_symlinks: bool = False
    """Read through symbolic links that lead out of the folder. Off, such a link (to a file or a
    directory) is reported as an error and nothing behind it is read; links that stay in the
    folder are followed either way."""
    csv_delimiter: Literal["auto", ",", ";"] = "auto"
    """`auto` takes whichever of `;` and `,` occurs more often in the header line."""
    encoding: str = "utf-8-sig"
    """Text encoding of JSON and CSV files; the default reads UTF-8 with or without a BOM.
    XML files declare their own encoding."""

    @field_validator("encoding")
    @classmethod
    def _encoding_exists(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"{value!r} is not a known text encoding") from None
        return value


class FolderConnector(Connector):
    """Reads invoices from JSON, CSV and EHF files in a folder, with their PDF copies."""

    settings_model: ClassVar[type[ConnectorSettings]] = FolderSettings
    # Payment and credit-note files (and EHF credit notes) say what was paid; amounts in
    # invoice files are taken as what is owed now.
    payments_default: ClassVar[Literal["amount_drops", "records"]] = "records"
    example_config: ClassVar[str] = """\
[[sources]]
name = "invoices"                # a short, stable name; it keys the state of this source
connector = "folder"
id_prefix = ""                   # prepended to each accountingInvoiceId; give every source
                                 # its own when several sources could share invoice ids
[sources.settings]
path = "invoices"                # *.json, *.csv and EHF *.xml files; 20003.pdf is the copy of
                                 # invoice 20003 (a PDF embedded in an EHF file comes first)
# recursive = false
# max_file_bytes = 20971520     # for invoice files and PDF copies alike
# follow_symlinks = false        # true: also read through links that lead out of the folder
# csv_delimiter = "auto"         # or "," or ";"
# encoding = "utf-8-sig"         # "cp1252" for some older Excel exports
"""
    settings: FolderSettings

    def __init__(self, settings: ConnectorSettings, *, base_dir: Path) -> None:
        if not isinstance(settings, FolderSettings):
            raise TypeError(f"FolderConnector needs FolderSettings, not {type(settings).__name__}")
        super().__init__(settings, base_dir=base_dir)
        self.settings = settings

    @property
    def folder(self) -> Path:
        """The directory this connector reads (`path` resolved against `base_dir`)."""
        return self.base_dir / self.settings.path.expanduser()

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        """Yield the invoices of every JSON and CSV file, file by file in name order, then
        those of the EHF files, netted with their credit notes."""
        root = self.folder
        rules = FileRules.of(root, self.settings.max_file_bytes, self.settings.follow_symlinks)
        walk = _Walk(rules)
        yield from self._read_directory(root, walk)
        yield from walk.ehf.records()

    # -- directories ---------------------------------------------------------------------

    def _read_directory(self, directory: Path, walk: _Walk) -> Iterator[Item]:
        entries = list_directory(directory)
        pdfs = pdf_index(entries)  # once per directory and read, not per record
        for entry in entries:
            path = Path(entry.path)
            if is_directory(entry):
                if self.settings.recursive:
                    yield from self._read_directory(path, walk)
                continue
            name = walk.rules.name(path)
            if is_directory_link(entry):
                if self.settings.recursive:
                    yield from self._read_linked_directory(path, name, walk)
                continue
            suffix = path.suffix.lower()
            if suffix == ".json":
                yield from self._read_json(path, name, pdfs, walk.rules)
            elif suffix == ".csv":
                yield from self._read_csv(path, name, pdfs, walk.rules)
            elif suffix == ".xml":
                problem = self._read_ehf(path, name, pdfs, walk)
                if problem is not None:
                    yield problem
            # anything else (PDFs, notes) is not an invoice file

    def _read_linked_directory(self, path: Path, name: str, walk: _Walk) -> Iterator[Item]:
        """A symbolic link to a directory: read only if it leads out of the folder and
        `follow_symlinks` allows it; a link within the folder is skipped, since the files it
        leads to are read where they are (following it would read them twice, under two
        names, and could loop)."""
        if walk.rules.inside(path):
            return
        if not self.settings.follow_symlinks:
            yield RecordError(name, FILE, link_reason(name))
            return
        target = Path(os.path.realpath(path))
        if target in walk.followed:  # a loop of links, or a second link to one directory
            return
        walk.followed.add(target)
        yield from self._read_directory(path, walk)

    # -- JSON ----------------------------------------------------------------------------

    def _read_json(self, path: Path, name: str, pdfs: PdfIndex, rules: FileRules) -> Iterator[Item]:
        text = self._json_text(path, name, rules)
        if isinstance(text, RecordError):
            yield text
            return
        document = parse_json(text, name)
        if isinstance(document, RecordError):
            yield document
        elif isinstance(document, dict):
            yield json_record(document, None, InvoiceFile(name, pdfs, rules))
        elif isinstance(document, list):
            invoice_file = InvoiceFile(name, pdfs, rules)
            for index, item in enumerate(document):
                yield json_record(item, index, invoice_file)
        else:
            reason = (
                "a JSON invoice file holds an invoice object or a list of them, "
                f"not {json_type(document)}"
            )
            yield RecordError(name, FILE, reason)

    def _json_text(self, path: Path, name: str, rules: FileRules) -> str | RecordError:
        """The whole file as text (it is at most `max_file_bytes`), or why not."""
        try:
            data = rules.read(path)
        except RefusedError as exc:
            return RecordError(name, FILE, exc.reason)
        try:
            return data.decode(self.settings.encoding)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            return RecordError(name, FILE, decode_reason(exc, line, self.settings.encoding))

    # -- EHF -----------------------------------------------------------------------------

    def _read_ehf(self, path: Path, name: str, pdfs: PdfIndex, walk: _Walk) -> RecordError | None:
        """Parse one EHF file into `walk.ehf`; a file that cannot be used is the error returned."""
        rules = walk.rules
        try:
            data = rules.read(path)
        except RefusedError as exc:
            return RecordError(name, FILE, exc.reason)
        from connectors import ubl  # noqa: PLC0415 - loaded only where there is EHF

        try:
            document = ubl.parse(data, source=name)
        except ubl.UblError as exc:
            return RecordError(name, exc.problem.field, exc.problem.reason)
        if isinstance(document, ubl.Credit):
            walk.ehf.credits.append(document)
            return None
        copy: Document | None
        if document.pdf is not None:
            pdf_name = document.pdf.filename or f"{document.number}.pdf"
            copy = EmbeddedPdfDocument(
                path,
                document.pdf.index,
                pdf_name,
                max_bytes=rules.max_bytes,
                folder=rules.folder,
                follow_symlinks=rules.follow_symlinks,
            )
        else:
            beside = pdfs.get(document.number) or pdfs.get(path.stem)
            copy = None if beside is None else FolderPdf(beside, rules)
        walk.ehf.invoices.append((document, copy))
        return None

    # -- CSV -----------------------------------------------------------------------------

    def _read_csv(self, path: Path, name: str, pdfs: PdfIndex, rules: FileRules) -> Iterator[Item]:
        try:
            with rules.open(path) as handle:
                problem = self._undecodable(handle, name)
                if problem is not None:
                    yield problem
                    return
                handle.rewind()  # one open file for both passes: it cannot be swapped between
                encoding = self.settings.encoding
                with io.TextIOWrapper(io.BufferedReader(handle), encoding, newline="") as text:
                    yield from self._csv_records(text, name, pdfs, rules)
        except RefusedError as exc:
            yield RecordError(name, FILE, exc.reason)
        except UnicodeDecodeError as exc:  # only if the file changed since the check
            yield RecordError(name, FILE, f"not {self.settings.encoding} text: {exc.reason}")

    def _undecodable(self, handle: CappedFile, name: str) -> RecordError | None:
        """Check the whole file decodes, in chunks, so a bad file yields no rows at all."""
        encoding = self.settings.encoding
        decoder = codecs.getincrementaldecoder(encoding)()
        lines_before = 0
        try:
            while chunk := handle.read(CHUNK_BYTES):
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    line = lines_before + chunk.count(b"\n", 0, max(exc.start - pending, 0))
                    return RecordError(name, FILE, decode_reason(exc, line + 1, encoding))
                lines_before += chunk.count(b"\n")
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:  # the file ends inside a multi-byte character
            return RecordError(name, FILE, decode_reason(exc, lines_before + 1, encoding))
        return None

    def _csv_records(
        self, lines: Iterable[str], name: str, pdfs: PdfIndex, rules: FileRules
    ) -> Iterator[Item]:
        lines = iter(lines)
        header_line = next(lines, "")
        if not header_line.strip():
            yield RecordError(name, FILE, "the file is empty: no header row")
            return
        delimiter = self.settings.csv_delimiter
        if delimiter == "auto":
            delimiter = detect_delimiter(header_line)
        reader = csv.reader(itertools.chain([header_line], lines), delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except csv.Error as exc:
            yield RecordError(name, FILE, f"CSV syntax error in the header: {exc}")
            return
        columns, header_error = map_header(header, name)
        if header_error is not None:
            yield header_error
            return
        invoice_file = InvoiceFile(name, pdfs, rules)
        layout = CsvLayout.of(columns)
        while True:
            line = reader.line_num + 1  # where the next row starts
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                reason = (
                    f"CSV syntax error at line {line}: {exc}; the rest of the file was not read"
                )
                yield RecordError(f"{name}:line {line}", FILE, reason)
                return
            item = csv_record(row, layout, line, invoice_file)
            if item is not None:
                yield item


# -- helpers -----------------------------------------------------------------------------


class _EhfFiles:
    """The EHF documents of one read: invoices with their copies, and credits to net."""

    def __init__(self) -> None:
        self.invoices: list[tuple[ubl.UblInvoice, Document | None]] = []
        self.credits: list[ubl.Credit] = []

    def records(self) -> Iterator[Item]:
        """Every invoice, netted with the credits that name it; then the credits that could
        not be netted."""
        if not self.invoices and not self.credits:
            return
        from connectors import ubl  # noqa: PLC0415 - loaded only where there is EHF

        netted, credit_problems = ubl.apply_credits(
            [invoice for invoice, _ in self.invoices], self.credits
        )
        for (invoice, copy), outcome in zip(self.invoices, netted, strict=True):
            key = f"{invoice.source}:{invoice.number}"  # one document per file
            if isinstance(outcome, ubl.Problem):
                yield RecordError(key, outcome.field, outcome.reason)
            else:
                yield SourceRecord(key=key, fields=dict(outcome), document=copy)
        for credit, problem in zip(self.credits, credit_problems, strict=True):
            if problem is not None:
                yield RecordError(f"{credit.source}:{credit.number}", problem.field, problem.reason)
            elif credit.issued is not None:
                # Netted above for an invoice not yet sent; forwarded for one already in Kravia.
                yield PaymentRecord(
                    key=f"{credit.source}:{credit.number}",
                    fields={
                        "payment_id": credit.number,
                        "kind": "credit_note",
                        "date": credit.issued,
                        "amount": credit.amount,
                        "invoice_number": credit.invoices[0],
                        "description": f"{credit.kind} {credit.number}",
                    },
                )


# -- reading files safely ----------------------------------------------------------------


@dataclass(slots=True)
class _Walk:
    """What one read carries from directory to directory."""

    rules: FileRules
    ehf: _EhfFiles = field(default_factory=_EhfFiles)
    followed: set[Path] = field(default_factory=set)  # directories reached through a link
