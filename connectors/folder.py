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
import difflib
import hashlib
import io
import itertools
import json
import os
import stat
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, ClassVar, Literal, cast

from pydantic import Field, field_validator

from kravia_sync.connector import (
    Connector,
    ConnectorError,
    ConnectorSettings,
    PaymentRecord,
    RecordError,
    SourceRecord,
)
from kravia_sync.documents import FileDocument
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import RECORD_FIELDS, REQUIRED_FIELDS
from kravia_sync.payments import PAYMENT_FIELDS, REQUIRED_PAYMENT_FIELDS, is_payment_record

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from typing import TypeAlias

    from _typeshed import WriteableBuffer

    from connectors import ubl
    from kravia_sync.documents import Document

    _Item: TypeAlias = SourceRecord | PaymentRecord | RecordError
    _PdfIndex: TypeAlias = Mapping[str, Path]

__all__ = ["EmbeddedPdfDocument", "FolderConnector", "FolderSettings"]

MIB = 1024 * 1024
_CHUNK_BYTES = 64 * 1024
_FILE = "file"  # the RecordError field for a problem with a whole file
# Read-only and never blocking: opening a named pipe for reading waits for a writer otherwise.
# Binary on Windows (no newline translation).
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_READ_FLAGS = os.O_RDONLY | _NONBLOCK | getattr(os, "O_BINARY", 0)
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Opening relative to a directory descriptor lets each step refuse a link (POSIX; not Windows).
_OPENAT = os.open in os.supports_dir_fd and _NOFOLLOW != 0
_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}
_KNOWN_COLUMNS = {name.casefold(): name for name in RECORD_FIELDS}
_PAYMENT_COLUMNS = {name.casefold(): name for name in PAYMENT_FIELDS}


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
        rules = _FileRules.of(root, self.settings.max_file_bytes, self.settings.follow_symlinks)
        walk = _Walk(rules)
        yield from self._read_directory(root, walk)
        yield from walk.ehf.records()

    # -- directories ---------------------------------------------------------------------

    def _read_directory(self, directory: Path, walk: _Walk) -> Iterator[_Item]:
        entries = _list_directory(directory)
        pdfs = _pdf_index(entries)  # once per directory and read, not per record
        for entry in entries:
            path = Path(entry.path)
            if _is_directory(entry):
                if self.settings.recursive:
                    yield from self._read_directory(path, walk)
                continue
            name = walk.rules.name(path)
            if _is_directory_link(entry):
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

    def _read_linked_directory(self, path: Path, name: str, walk: _Walk) -> Iterator[_Item]:
        """A symbolic link to a directory: read only if it leads out of the folder and
        `follow_symlinks` allows it; a link within the folder is skipped, since the files it
        leads to are read where they are (following it would read them twice, under two
        names, and could loop)."""
        if walk.rules.inside(path):
            return
        if not self.settings.follow_symlinks:
            yield RecordError(name, _FILE, _link_reason(name))
            return
        target = Path(os.path.realpath(path))
        if target in walk.followed:  # a loop of links, or a second link to one directory
            return
        walk.followed.add(target)
        yield from self._read_directory(path, walk)

    # -- JSON ----------------------------------------------------------------------------

    def _read_json(
        self, path: Path, name: str, pdfs: _PdfIndex, rules: _FileRules
    ) -> Iterator[_Item]:
        text = self._json_text(path, name, rules)
        if isinstance(text, RecordError):
            yield text
            return
        document = _parse_json(text, name)
        if isinstance(document, RecordError):
            yield document
        elif isinstance(document, dict):
            yield _json_record(document, None, _InvoiceFile(name, pdfs, rules))
        elif isinstance(document, list):
            invoice_file = _InvoiceFile(name, pdfs, rules)
            for index, item in enumerate(document):
                yield _json_record(item, index, invoice_file)
        else:
            reason = (
                "a JSON invoice file holds an invoice object or a list of them, "
                f"not {_json_type(document)}"
            )
            yield RecordError(name, _FILE, reason)

    def _json_text(self, path: Path, name: str, rules: _FileRules) -> str | RecordError:
        """The whole file as text (it is at most `max_file_bytes`), or why not."""
        try:
            data = rules.read(path)
        except _RefusedError as exc:
            return RecordError(name, _FILE, exc.reason)
        try:
            return data.decode(self.settings.encoding)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            return RecordError(name, _FILE, _decode_reason(exc, line, self.settings.encoding))

    # -- EHF -----------------------------------------------------------------------------

    def _read_ehf(self, path: Path, name: str, pdfs: _PdfIndex, walk: _Walk) -> RecordError | None:
        """Parse one EHF file into `walk.ehf`; a file that cannot be used is the error returned."""
        rules = walk.rules
        try:
            data = rules.read(path)
        except _RefusedError as exc:
            return RecordError(name, _FILE, exc.reason)
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
            copy = None if beside is None else _FolderPdf(beside, rules)
        walk.ehf.invoices.append((document, copy))
        return None

    # -- CSV -----------------------------------------------------------------------------

    def _read_csv(
        self, path: Path, name: str, pdfs: _PdfIndex, rules: _FileRules
    ) -> Iterator[_Item]:
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
        except _RefusedError as exc:
            yield RecordError(name, _FILE, exc.reason)
        except UnicodeDecodeError as exc:  # only if the file changed since the check
            yield RecordError(name, _FILE, f"not {self.settings.encoding} text: {exc.reason}")

    def _undecodable(self, handle: _CappedFile, name: str) -> RecordError | None:
        """Check the whole file decodes, in chunks, so a bad file yields no rows at all."""
        encoding = self.settings.encoding
        decoder = codecs.getincrementaldecoder(encoding)()
        lines_before = 0
        try:
            while chunk := handle.read(_CHUNK_BYTES):
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    line = lines_before + chunk.count(b"\n", 0, max(exc.start - pending, 0))
                    return RecordError(name, _FILE, _decode_reason(exc, line + 1, encoding))
                lines_before += chunk.count(b"\n")
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:  # the file ends inside a multi-byte character
            return RecordError(name, _FILE, _decode_reason(exc, lines_before + 1, encoding))
        return None

    def _csv_records(
        self, lines: Iterable[str], name: str, pdfs: _PdfIndex, rules: _FileRules
    ) -> Iterator[_Item]:
        lines = iter(lines)
        header_line = next(lines, "")
        if not header_line.strip():
            yield RecordError(name, _FILE, "the file is empty: no header row")
            return
        delimiter = self.settings.csv_delimiter
        if delimiter == "auto":
            delimiter = _detect_delimiter(header_line)
        reader = csv.reader(itertools.chain([header_line], lines), delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except csv.Error as exc:
            yield RecordError(name, _FILE, f"CSV syntax error in the header: {exc}")
            return
        columns, header_error = _map_header(header, name)
        if header_error is not None:
            yield header_error
            return
        invoice_file = _InvoiceFile(name, pdfs, rules)
        layout = _CsvLayout.of(columns)
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
                yield RecordError(f"{name}:line {line}", _FILE, reason)
                return
            item = _csv_record(row, layout, line, invoice_file)
            if item is not None:
                yield item


# -- helpers -----------------------------------------------------------------------------


class _DuplicateKeyError(ValueError):
    pass


def _list_directory(directory: Path) -> list[os.DirEntry[str]]:
    """The visible entries of `directory`, sorted by name; a failure fails the whole read."""
    try:
        with os.scandir(directory) as iterator:
            entries = [entry for entry in iterator if not _is_hidden(entry.name)]
    except FileNotFoundError:
        raise ConnectorError(f"source folder {directory} does not exist") from None
    except NotADirectoryError:
        raise ConnectorError(f"source folder {directory} is not a directory") from None
    except OSError as exc:
        raise ConnectorError(f"cannot read source folder {directory}: {_os_reason(exc)}") from exc
    return sorted(entries, key=lambda entry: entry.name)


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "~$"))  # `~$` are Office lock files of open documents


def _is_directory(entry: os.DirEntry[str]) -> bool:
    """A directory itself, not a symbolic link to one."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_directory_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink() and entry.is_dir()
    except OSError:
        return False


def _pdf_index(entries: Iterable[os.DirEntry[str]]) -> dict[str, Path]:
    """File stem → path of the PDFs among `entries` (`.pdf` in any case; first name wins)."""
    index: dict[str, Path] = {}
    for entry in entries:
        path = Path(entry.path)
        if path.suffix.lower() == ".pdf" and not _is_directory(entry):
            index.setdefault(path.stem, path)
    return index


class _EhfFiles:
    """The EHF documents of one read: invoices with their copies, and credits to net."""

    def __init__(self) -> None:
        self.invoices: list[tuple[ubl.UblInvoice, Document | None]] = []
        self.credits: list[ubl.Credit] = []

    def records(self) -> Iterator[_Item]:
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


class EmbeddedPdfDocument:
    """The PDF embedded in an EHF file: the file is read and parsed again, and the attachment
    decoded, only when the copy is needed, so a read holds no attachment in memory.

    The file is read like every file of the folder: only a regular file, at most `max_bytes`,
    and, when `folder` is given, not through a symbolic link out of it unless
    `follow_symlinks`. Whatever makes it unusable raises `InvalidRecordError` (`document`).
    """

    def __init__(
        self,
        path: Path,
        index: int,
        name: str,
        *,
        max_bytes: int,
        folder: Path | None = None,
        follow_symlinks: bool = False,
    ) -> None:
        self._path = path
        self._index = index
        self._name = name
        self._rules = _FileRules.of(folder, max_bytes, follow_symlinks)

    @property
    def name(self) -> str:
        return self._name

    def load(self) -> bytes:
        """The PDF's bytes; `InvalidRecordError` when the file no longer holds a usable one."""
        source = self._rules.name(self._path)
        try:
            data = self._rules.read(self._path)
        except _RefusedError as exc:
            raise InvalidRecordError("document", exc.about(source)) from None
        from connectors import ubl  # noqa: PLC0415 - loaded only where there is EHF

        try:
            return ubl.embedded_pdf(data, self._index)
        except ubl.UblError as exc:
            raise InvalidRecordError("document", f"{source}: {exc.problem.reason}") from None

    def __repr__(self) -> str:
        return f"EmbeddedPdfDocument({str(self._path)!r}, {self._index})"


class _FolderPdf(FileDocument):
    """A PDF copy beside an invoice file, read only when it is needed, by the folder's rules:
    its `max_file_bytes`, only a regular file, and no link out of the folder."""

    def __init__(self, path: Path, rules: _FileRules) -> None:
        super().__init__(path, max_bytes=rules.max_bytes)
        self._file = path
        self._rules = rules

    def load(self) -> bytes:
        try:
            return self._rules.read(self._file)
        except _RefusedError as exc:
            raise InvalidRecordError("document", exc.about(self._rules.name(self._file))) from None


class _InvoiceFile:
    """One invoice file being read: its name, the PDFs beside it, the record keys given out."""

    def __init__(self, name: str, pdfs: _PdfIndex, rules: _FileRules) -> None:
        self.name = name
        self._pdfs = pdfs
        self._rules = rules
        self._keys: set[str] = set()

    def key(self, number: str | None, fallback: str, where: str) -> str:
        """`<file>:<invoice_number>` (`fallback` without a number), unique within the file.

        The same number again in the file gets `(<where>)` appended, so that both records
        keep their own key (the engine reports the duplicate `accounting_invoice_id`).
        """
        if number is None:
            return fallback
        key = f"{self.name}:{number}"
        if key in self._keys:
            key = f"{key} ({where})"
        self._keys.add(key)
        return key

    def document(self, number: str | None) -> FileDocument | None:
        """The PDF named `<number>.pdf` beside the file, not read yet."""
        path = None if number is None else self._pdfs.get(number)
        return None if path is None else _FolderPdf(path, self._rules)


def _invoice_number(value: object) -> str | None:
    """The invoice number as text for keys and PDF names, or None if there is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _json_record(item: object, index: int | None, invoice_file: _InvoiceFile) -> _Item:
    """The record of one JSON object: `index` is its position in a list, None if it is alone."""
    fallback = invoice_file.name if index is None else f"{invoice_file.name}#{index}"
    if not isinstance(item, dict):
        where = "the file" if index is None else f"item {index}"
        reason = f"{where} is {_json_type(item)}, not an invoice object"
        return RecordError(fallback, "record", reason)
    if is_payment_record(item):
        key = f"{fallback} (payment {item.get('payment_id')})"
        unknown = [field for field in item if field not in PAYMENT_FIELDS]
        if unknown:
            return RecordError(key, unknown[0], _unknown_reason("field", unknown, PAYMENT_FIELDS))
        return PaymentRecord(key=key, fields=dict(item))
    number = _invoice_number(item.get("invoice_number"))
    key = invoice_file.key(number, fallback, f"#{index}")
    unknown = [field for field in item if field not in RECORD_FIELDS]
    if unknown:
        return RecordError(key, unknown[0], _unknown_reason("field", unknown))
    return SourceRecord(key=key, fields=dict(item), document=invoice_file.document(number))


def _parse_json(text: str, name: str) -> object:
    """The parsed document (numbers as `Decimal` or `int`, never float), or a `RecordError`."""
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=Decimal,  # NaN and Infinity: the model refuses them as amounts
            object_pairs_hook=_object_without_duplicate_keys,
        )
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        return RecordError(name, _FILE, reason)
    except _DuplicateKeyError as exc:
        return RecordError(name, _FILE, f"invalid JSON: {exc}")
    except RecursionError:
        return RecordError(name, _FILE, "invalid JSON: nested too deeply")


def _object_without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r} in an object")
        result[key] = value
    return result


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _detect_delimiter(header_line: str) -> Literal[",", ";"]:
    """`;` if the header line has more semicolons than commas outside quotes, else `,`."""
    counts = {",": 0, ";": 0}
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    return ";" if counts[";"] > counts[","] else ","


def _map_header(header: list[str], name: str) -> tuple[list[str | None], RecordError | None]:
    """The canonical field of each column (None: a column without a name), or the header error.

    Everything wrong with the header is one error: the engine keeps one entry per record key.
    """
    columns: list[str | None] = []
    unknown: list[str] = []
    duplicates: list[str] = []
    labels = [cell.replace("\ufeff", "").strip() for cell in header]
    payments = any(label.casefold() == "payment_id" for label in labels)
    known, required, names = (
        (_PAYMENT_COLUMNS, REQUIRED_PAYMENT_FIELDS, PAYMENT_FIELDS)
        if payments
        else (_KNOWN_COLUMNS, REQUIRED_FIELDS, RECORD_FIELDS)
    )
    for label in labels:
        field = known.get(label.casefold())
        if not label:
            columns.append(None)
        elif field is None:
            unknown.append(label)
            columns.append(None)
        elif field in columns:
            duplicates.append(field)
            columns.append(None)
        else:
            columns.append(field)
    problems: list[tuple[str, str]] = []  # (field, reason)
    missing = [field for field in required if field not in columns]
    if missing:
        listed = ", ".join(repr(field) for field in missing)
        plural = "s" if len(missing) > 1 else ""
        problems.append((missing[0], f"missing required column{plural} {listed}"))
    if duplicates:
        problems.append((duplicates[0], f"duplicate column {duplicates[0]!r}"))
    if unknown:  # last: its reason ends with the long list of known columns
        problems.append((unknown[0], _unknown_reason("column", unknown, names)))
    if not problems:
        return columns, None
    return columns, RecordError(name, problems[0][0], "; ".join(reason for _, reason in problems))


def _unknown_reason(kind: str, unknown: list[str], names: tuple[str, ...] = RECORD_FIELDS) -> str:
    listed = ", ".join(repr(label) for label in unknown)
    plural = "s" if len(unknown) > 1 else ""
    hints = [
        f"{label!r} → {match[0]!r}"
        for label in unknown
        if (match := difflib.get_close_matches(label.casefold(), names, n=1))
    ]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    return f"unknown {kind}{plural} {listed}{hint}; known {kind}s: {', '.join(names)}"


@dataclass(frozen=True, slots=True)
class _CsvLayout:
    """One CSV file's columns, worked out once from its header for every row."""

    columns: list[str | None]  # the canonical field of each column (None: no header)
    unnamed: tuple[int, ...]  # the positions of the columns without a header
    payments: bool  # a file of payments (it has a payment_id column)
    stamp: bytes  # the columns as the digest of each row includes them

    @classmethod
    def of(cls, columns: list[str | None]) -> _CsvLayout:
        return cls(
            columns,
            tuple(index for index, field in enumerate(columns) if field is None),
            "payment_id" in columns,
            "\x1f".join(field or "" for field in columns).encode() + b"\x1e",
        )


def _csv_record(
    row: list[str], layout: _CsvLayout, line: int, invoice_file: _InvoiceFile
) -> _Item | None:
    """The record of the CSV row starting at `line`, or None for a row with nothing in it (a
    blank line, a `;;;;` row of a spreadsheet export). Runs for every row of every pass, so
    it is kept lean: an invoice's fields are its non-empty cells by column (kept as text,
    exactly as in the file), and its digest is a hash of the row with the file's columns, so
    the engine recognises an unchanged row without hashing its fields."""
    blanks = not row or "" in row or any(map(str.isspace, row))
    if blanks and not "".join(row).strip():
        return None
    columns = layout.columns
    if len(row) != len(columns):
        reason = f"line {line} has {len(row)} cells, the header has {len(columns)}"
        return RecordError(f"{invoice_file.name}:line {line}", "row", reason)
    for position in layout.unnamed:
        if row[position].strip():
            reason = f"line {line} has a value in column {position + 1}, which has no known header"
            return RecordError(f"{invoice_file.name}:line {line}", "row", reason)
    line_key = f"{invoice_file.name}:line {line}"
    if layout.payments:
        paid = {
            field: cell
            for field, cell in zip(columns, row, strict=True)
            if field is not None and cell and not cell.isspace()
        }
        return PaymentRecord(key=f"{line_key} (payment {paid.get('payment_id')})", fields=paid)
    fields: dict[str | None, object]
    if blanks:  # empty cells leave their field out
        fields = {
            field: cell
            for field, cell in zip(columns, row, strict=True)
            if field is not None and cell and not cell.isspace()
        }
    else:
        fields = dict(zip(columns, row, strict=True))
        fields.pop(None, None)  # (a column without a header holds nothing here: checked above)
    given = fields.get("invoice_number")
    number = given.strip() or None if isinstance(given, str) else None
    key = invoice_file.key(number, line_key, f"line {line}")
    text = "\x1f".join(row)
    if text.count("\x1f") != len(row) - 1:  # a cell holds the separator: spelled out instead
        text = json.dumps(row)
    digest = hashlib.blake2b(layout.stamp, digest_size=16)
    digest.update(text.encode())
    return SourceRecord(
        key=key,
        fields=cast("dict[str, object]", fields),  # no None key: removed just above
        document=invoice_file.document(number),
        digest=digest.hexdigest(),
    )


def _decode_reason(exc: UnicodeDecodeError, line: int, encoding: str) -> str:
    byte = exc.object[exc.start : exc.start + 1].hex()
    reason = f"not {encoding} text: byte 0x{byte} on line {line} cannot be decoded"
    if codecs.lookup(encoding).name.startswith("utf-8"):
        reason += "; if a Windows program such as Excel saved it, set encoding = 'cp1252'"
    return reason


# -- reading files safely ----------------------------------------------------------------


class _RefusedError(Exception):
    """A file that is not read (or not read further), and why."""

    def __init__(self, reason: str, *, names_the_file: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self._names_the_file = names_the_file

    def about(self, name: str) -> str:
        """The reason as a sentence that says which file it is about."""
        return self.reason if self._names_the_file else f"{name}: {self.reason}"


@dataclass(frozen=True, slots=True)
class _FileRules:
    """How the files of one folder are read: only regular files, at most `max_bytes` each,
    never through a symbolic link out of the folder unless `follow_symlinks`."""

    folder: Path | None  # as configured: names in messages are relative to it
    root: Path | None  # the folder with its own links resolved (None: no folder to stay in)
    max_bytes: int
    follow_symlinks: bool

    @classmethod
    def of(cls, folder: Path | None, max_bytes: int, follow_symlinks: bool) -> _FileRules:
        # The folder itself may be a link (the operator's choice): what counts is where it is.
        root = None if folder is None else Path(os.path.realpath(folder))
        return cls(folder, root, max_bytes, follow_symlinks)

    def name(self, path: Path) -> str:
        """`path` for messages: relative to the folder, else the file's own name (never the
        absolute path a link leads to)."""
        if self.folder is not None and path.is_relative_to(self.folder):
            return path.relative_to(self.folder).as_posix()
        return path.name

    def inside(self, path: Path) -> bool:
        """Whether `path`, every link on the way followed, is within the folder."""
        return self.root is None or Path(os.path.realpath(path)).is_relative_to(self.root)

    def read(self, path: Path) -> bytes:
        """The whole file, if the rules allow it; else `_RefusedError`."""
        with self.open(path) as handle:
            return handle.read_whole()

    def open(self, path: Path) -> _CappedFile:
        """`path` opened for reading, if the rules allow it; else `_RefusedError`."""
        descriptor = self._descriptor(path)
        try:
            return _checked(descriptor, self.max_bytes)
        except BaseException:
            os.close(descriptor)
            raise

    def _descriptor(self, path: Path) -> int:
        """A descriptor of `path` opened without blocking, or `_RefusedError`."""
        root = self.root
        real = Path(os.path.realpath(path))
        try:
            if root is not None and real.is_relative_to(root):
                return _open_below(root, real.relative_to(root))
            if root is None or self.follow_symlinks:
                return os.open(path, _READ_FLAGS)
        except OSError as exc:
            raise _RefusedError(_unopened_reason(path, exc)) from None
        name = self.name(path)
        raise _RefusedError(_link_reason(name), names_the_file=True)


@dataclass(slots=True)
class _Walk:
    """What one read carries from directory to directory."""

    rules: _FileRules
    ehf: _EhfFiles = field(default_factory=_EhfFiles)
    followed: set[Path] = field(default_factory=set)  # directories reached through a link


class _CappedFile(io.RawIOBase):
    """An open regular file that is never read past `limit` bytes: one that grows after it was
    measured costs at most `limit + 1` bytes of reading, then `_RefusedError`. A read error is
    a `_RefusedError` too, so a caller has one thing to catch."""

    def __init__(self, descriptor: int, limit: int, size: int) -> None:
        super().__init__()
        self._file = io.FileIO(descriptor, "rb")  # owns the descriptor from here on
        self._limit = limit
        self._size = size  # as measured when it was opened
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        with memoryview(buffer) as view, view.cast("B") as target:
            room = min(len(target), self._limit + 1 - self._position)
            try:
                count = self._file.readinto(target[:room]) or 0
            except OSError as exc:
                raise _RefusedError(f"cannot read the file: {_os_reason(exc)}") from None
        self._position += count
        if self._position > self._limit:
            raise _RefusedError(
                f"the file grew beyond max_file_bytes ({self._limit}) while it was read; "
                "reading stopped there"
            )
        return count

    def read_whole(self) -> bytes:
        """The whole file: one read for a file of its measured size, more if it has grown."""
        chunks: list[bytes] = []
        want = self._size + 1  # + 1: the end of the file is seen without another read
        while chunk := self.read(want):
            chunks.append(chunk)
            want = _CHUNK_BYTES
        return b"".join(chunks)

    def rewind(self) -> None:
        self._file.seek(0)
        self._position = 0

    def close(self) -> None:
        self._file.close()
        super().close()


def _checked(descriptor: int, limit: int) -> _CappedFile:
    """The opened file, if it is a regular file of at most `limit` bytes; else `_RefusedError`."""
    # What was opened, not what the path names now: it may have changed since.
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        raise _RefusedError(_not_regular_reason(info.st_mode))
    if info.st_size > limit:
        raise _RefusedError(_too_big_reason(info.st_size, limit))
    if _NONBLOCK:  # no effect on a regular file on most systems; cleared all the same
        os.set_blocking(descriptor, True)
    return _CappedFile(descriptor, limit, info.st_size)


def _open_below(root: Path, relative: PurePath) -> int:
    """Open `root / relative` one name at a time, refusing a symbolic link at every step
    (O_NOFOLLOW), so a link swapped in after the path was resolved cannot lead out."""
    if not _OPENAT or not relative.parts:
        return os.open(root / relative, _READ_FLAGS)
    directory = os.open(root, _DIRECTORY_FLAGS)
    try:
        for part in relative.parts[:-1]:
            inner = os.open(part, _DIRECTORY_FLAGS | _NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        return os.open(relative.parts[-1], _READ_FLAGS | _NOFOLLOW, dir_fd=directory)
    finally:
        os.close(directory)


def _link_reason(name: str) -> str:
    # Names the link only: neither where it leads nor anything read from there.
    return (
        f"{name} is a symbolic link to outside the source folder; "
        "set follow_symlinks = true to allow it"
    )


def _not_regular_reason(mode: int) -> str:
    kind = _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")
    return f"not a regular file ({kind}); it was not read"


def _unopened_reason(path: Path, exc: OSError) -> str:
    """Why `path` could not be opened: a socket, for one, cannot be opened at all."""
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):
        return _not_regular_reason(mode)
    return f"cannot read the file: {_os_reason(exc)}"


def _too_big_reason(size: int, limit: int) -> str:
    return f"the file has {size} bytes, more than max_file_bytes ({limit}); it was not read"


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
