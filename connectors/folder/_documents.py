"""The invoice copies the folder source finds: a PDF embedded in an EHF file, and a PDF beside an
invoice file (`<invoice_number>.pdf`), each read only when needed, the guarded way."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeAlias

from connectors.folder._files import FileRules, RefusedError, is_directory
from kravia_sync import FileDocument, InvalidRecordError

# A directory's PDFs by file stem.
PdfIndex: TypeAlias = Mapping[str, Path]


def pdf_index(entries: Iterable[os.DirEntry[str]]) -> dict[str, Path]:
    """File stem → path of the PDFs among `entries` (`.pdf` in any case; first name wins)."""
    index: dict[str, Path] = {}
    for entry in entries:
        path = Path(entry.path)
        if path.suffix.lower() == ".pdf" and not is_directory(entry):
            index.setdefault(path.stem, path)
    return index


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
        self._rules = FileRules.of(folder, max_bytes, follow_symlinks)

    @property
    def name(self) -> str:
        return self._name

    def load(self) -> bytes:
        """The PDF's bytes; `InvalidRecordError` when the file no longer holds a usable one."""
        source = self._rules.name(self._path)
        try:
            data = self._rules.read(self._path)
        except RefusedError as exc:
            raise InvalidRecordError("document", exc.about(source)) from None
        from connectors import ubl  # noqa: PLC0415 - loaded only where there is EHF

        try:
            return ubl.embedded_pdf(data, self._index)
        except ubl.UblError as exc:
            raise InvalidRecordError("document", f"{source}: {exc.problem.reason}") from None

    def __repr__(self) -> str:
        return f"EmbeddedPdfDocument({str(self._path)!r}, {self._index})"


class FolderPdf(FileDocument):
    """A PDF copy beside an invoice file, read only when it is needed, by the folder's rules:
    its `max_file_bytes`, only a regular file, and no link out of the folder."""

    def __init__(self, path: Path, rules: FileRules) -> None:
        super().__init__(path, max_bytes=rules.max_bytes)
        self._file = path
        self._rules = rules

    def load(self) -> bytes:
        try:
            return self._rules.read(self._file)
        except RefusedError as exc:
            raise InvalidRecordError("document", exc.about(self._rules.name(self._file))) from None


class InvoiceFile:
    """One invoice file being read: its name, the PDFs beside it, the record keys given out."""

    def __init__(self, name: str, pdfs: PdfIndex, rules: FileRules) -> None:
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
        return None if path is None else FolderPdf(path, self._rules)
