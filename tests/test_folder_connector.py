"""Tests of the folder connector (`connectors.folder`): JSON and CSV files, PDFs, errors."""

from __future__ import annotations

import inspect
import json
import os
import socket
import tracemalloc
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from file_support import MIB, sparse_file, within
from pydantic import ValidationError
from support import invoice_record, run_cli, run_pass, write_config

from connectors.folder import EmbeddedPdfDocument, FolderConnector, FolderSettings
from connectors.folder import _connector as folder_module
from connectors.folder._files import FileRules, RefusedError
from connectors.folder._formats import detect_delimiter
from kravia_sync.connector import (
    ConnectorError,
    ConnectorSettings,
    RecordError,
    SourceRecord,
    available_connectors,
    load_connector,
)
from kravia_sync.documents import FileDocument, check_pdf
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import REQUIRED_FIELDS, Invoice
from kravia_sync.testing import minimal_pdf

DATA = Path(__file__).parent / "data"
EXPORT = DATA / "folder" / "export"
SECRET = "TOP-SECRET-PASSWORD"  # what a file outside the folder holds: must never be shown

COLUMNS = [
    "invoice_number",
    "invoice_date",
    "due_date",
    "amount",
    "debtor_name",
    "address_line1",
    "postal_code",
    "city",
]
ROW_20003 = [
    "20003",
    "01.01.2025",
    "31.01.2025",
    "1 234,50",
    "Blåbær AS",
    "Storgata 1",
    "0150",
    "Oslo",
]
ROW_20004 = [
    "20004",
    "2025-01-15",
    "2025-02-14",
    "990",
    "Ærlig Åse",
    "Øvre gate 2",
    "9008",
    "Tromsø",
]


def invoice(number: str = "20003", **fields: Any) -> dict[str, Any]:
    """A valid flat invoice record as a JSON-ready dict."""
    record: dict[str, Any] = {
        "invoice_number": number,
        "invoice_date": "2025-01-01",
        "due_date": "2025-01-31",
        "amount": "1234.50",
        "debtor_name": "Blåbær AS",
        "address_line1": "Storgata 1",
        "postal_code": "0150",
        "city": "Oslo",
    }
    record.update(fields)
    return record


def csv_text(rows: list[list[str]], delimiter: str = ",", header: list[str] | None = None) -> str:
    lines = [delimiter.join(header or COLUMNS)] + [delimiter.join(row) for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, text: str, *, bom: bool = False, encoding: str = "utf-8") -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return path


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def connector(folder: Path, **settings: Any) -> FolderConnector:
    made = FolderConnector.from_settings({"path": str(folder), **settings}, base_dir=folder.parent)
    assert isinstance(made, FolderConnector)
    return made


def read_all(folder: Path, **settings: Any) -> list[SourceRecord | RecordError]:
    return list(connector(folder, **settings).read())


def records(items: list[SourceRecord | RecordError]) -> list[SourceRecord]:
    return [item for item in items if isinstance(item, SourceRecord)]


def errors(items: list[SourceRecord | RecordError]) -> list[RecordError]:
    return [item for item in items if isinstance(item, RecordError)]


def rules(folder: Path, *, max_bytes: int = 20 * MIB, follow: bool = False) -> FileRules:
    return FileRules.of(folder, max_bytes, follow)


def load_refused(document: object) -> InvalidRecordError:
    """The `InvalidRecordError` that loading `document` raises (within two seconds)."""
    assert isinstance(document, FileDocument | EmbeddedPdfDocument)
    with pytest.raises(InvalidRecordError) as caught:
        within(2, document.load)
    assert caught.value.field == "document"
    return caught.value


def link_out(name: str) -> str:
    """The reason given for `name`, a symbolic link out of the folder."""
    return (
        f"{name} is a symbolic link to outside the source folder; "
        "set follow_symlinks = true to allow it"
    )


def outside_folder(tmp_path: Path) -> tuple[Path, Path]:
    """An invoice folder and, beside it, a directory whose files the folder must not expose."""
    folder = tmp_path / "invoices"
    outside = tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    return folder, outside


def only_record(items: list[SourceRecord | RecordError]) -> SourceRecord:
    (item,) = items
    assert isinstance(item, SourceRecord), item
    return item


class TestSettings:
    def test_defaults(self) -> None:
        """Only `path` is required; the rest has the documented defaults."""
        settings = FolderSettings(path=Path("inbox"))
        assert settings.recursive is False
        assert settings.max_file_bytes == 20 * 1024 * 1024
        assert settings.follow_symlinks is False
        assert settings.csv_delimiter == "auto"
        assert settings.encoding == "utf-8-sig"

    def test_relative_path_resolves_against_base_dir(self, tmp_path: Path) -> None:
        """A relative `path` is taken from the configuration file's directory."""
        made = FolderConnector.from_settings({"path": "inbox"}, base_dir=tmp_path)
        assert isinstance(made, FolderConnector)
        assert made.folder == tmp_path / "inbox"

    def test_absolute_path_is_kept(self, tmp_path: Path) -> None:
        """An absolute `path` ignores `base_dir`."""
        made = FolderConnector.from_settings({"path": str(tmp_path)}, base_dir=Path("/elsewhere"))
        assert isinstance(made, FolderConnector)
        assert made.folder == tmp_path

    @pytest.mark.parametrize(
        "raw",
        [
            {"path": "x", "recursiv": True},
            {"path": "x", "csv_delimiter": "\t"},
            {"path": "x", "max_file_bytes": 0},
            {"path": "x", "encoding": "no-such-codec"},
            {},
        ],
    )
    def test_bad_settings_fail(self, raw: dict[str, Any], tmp_path: Path) -> None:
        """Unknown keys, unsupported delimiters, a non-positive size and unknown encodings fail."""
        with pytest.raises(ValidationError):
            FolderConnector.from_settings(raw, base_dir=tmp_path)

    def test_other_settings_class_is_refused(self, tmp_path: Path) -> None:
        """The connector refuses settings that are not `FolderSettings`."""
        with pytest.raises(TypeError, match="FolderSettings"):
            FolderConnector(ConnectorSettings(), base_dir=tmp_path)


class TestEntryPoint:
    def test_found_through_entry_point(self) -> None:
        """`load_connector("folder")` returns this connector class."""
        assert load_connector("folder") is FolderConnector
        assert available_connectors()["folder"] == "connectors.folder:FolderConnector"
        assert FolderConnector.settings_model is FolderSettings

    def test_the_built_in_connectors_are_the_packages_entry_points(self) -> None:
        """The built-in names load without reading package metadata; they are exactly what
        kravia-sync registers as entry points, and an unknown name is refused naming them."""
        from importlib.metadata import entry_points  # noqa: PLC0415

        from kravia_sync.connector import BUILT_IN_CONNECTORS, ENTRY_POINT_GROUP  # noqa: PLC0415

        registered = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
        assert {name: registered[name] for name in BUILT_IN_CONNECTORS} == BUILT_IN_CONNECTORS
        with pytest.raises(LookupError, match=r"'nosuch'.*folder, rest, sql"):
            load_connector("nosuch")


class TestJson:
    def test_single_object(self, tmp_path: Path) -> None:
        """A file with one object yields one record keyed `<file>:<invoice_number>`."""
        write_json(tmp_path / "one.json", invoice("20003"))
        (item,) = read_all(tmp_path)
        assert isinstance(item, SourceRecord)
        assert item.key == "one.json:20003"
        assert item.fields == invoice("20003")
        assert item.document is None

    def test_list_of_objects(self, tmp_path: Path) -> None:
        """A list yields one record per item, in file order."""
        write_json(tmp_path / "many.json", [invoice("1"), invoice("2"), invoice("3")])
        items = read_all(tmp_path)
        assert [item.key for item in items] == ["many.json:1", "many.json:2", "many.json:3"]

    def test_keys_without_invoice_number(self, tmp_path: Path) -> None:
        """Without an invoice number the key falls back to the file name or `<file>#<index>`."""
        no_number = invoice()
        del no_number["invoice_number"]
        write_json(tmp_path / "a.json", no_number)
        write_json(tmp_path / "b.json", [invoice("7"), {**no_number, "invoice_number": "  "}])
        assert [item.key for item in read_all(tmp_path)] == ["a.json", "b.json:7", "b.json#1"]

    def test_integer_invoice_number_names_the_key(self, tmp_path: Path) -> None:
        """A numeric invoice number still makes the key (the value itself is passed unchanged)."""
        write_json(tmp_path / "n.json", invoice(20003))  # type: ignore[arg-type]
        (item,) = records(read_all(tmp_path))
        assert item.key == "n.json:20003"
        assert item.fields["invoice_number"] == 20003

    def test_numbers_arrive_as_decimal(self, tmp_path: Path) -> None:
        """JSON numbers with a fraction arrive as exact `Decimal`, never float."""
        (tmp_path / "d.json").write_text(
            '{"invoice_number": "1", "amount": 1234.10, "postal_code": 150}', encoding="utf-8"
        )
        (item,) = records(read_all(tmp_path))
        assert item.fields["amount"] == Decimal("1234.10")
        assert type(item.fields["amount"]) is Decimal
        assert str(item.fields["amount"]) == "1234.10"
        assert item.fields["postal_code"] == 150

    def test_nan_is_not_a_float(self, tmp_path: Path) -> None:
        """`NaN` in a JSON file arrives as a `Decimal` the model refuses, not as a float."""
        (tmp_path / "nan.json").write_text(
            json.dumps(invoice()).replace('"1234.50"', "NaN"), encoding="utf-8"
        )
        (item,) = records(read_all(tmp_path))
        assert isinstance(item.fields["amount"], Decimal)
        with pytest.raises(ValueError, match="amount"):
            Invoice.from_record(item.fields)

    def test_record_validates_into_invoice(self, tmp_path: Path) -> None:
        """A JSON record with a number amount validates through `Invoice.from_record` exactly."""
        text = json.dumps(invoice()).replace('"1234.50"', "1234.50")
        (tmp_path / "one.json").write_text(text, encoding="utf-8")
        (item,) = records(read_all(tmp_path))
        assert Invoice.from_record(item.fields).amount == Decimal("1234.50")

    def test_repeated_invoice_number_keeps_keys_distinct(self, tmp_path: Path) -> None:
        """The same invoice number twice in a list still gives each item its own key."""
        write_json(tmp_path / "d.json", [invoice("1"), invoice("1")])
        assert [item.key for item in read_all(tmp_path)] == ["d.json:1", "d.json:1 (#1)"]

    def test_non_object_item_is_an_error_for_that_item(self, tmp_path: Path) -> None:
        """A list item that is not an object is a `RecordError`; the other items still arrive."""
        write_json(tmp_path / "mixed.json", [invoice("1"), "oops", 42, invoice("2")])
        items = read_all(tmp_path)
        assert [item.key for item in items] == [
            "mixed.json:1",
            "mixed.json#1",
            "mixed.json#2",
            "mixed.json:2",
        ]
        assert isinstance(items[1], RecordError)
        assert items[1].reason == "item 1 is a string, not an invoice object"
        assert isinstance(items[2], RecordError)
        assert "a number" in items[2].reason

    def test_top_level_scalar_is_a_file_error(self, tmp_path: Path) -> None:
        """A JSON file holding neither an object nor a list is one error for the file."""
        (tmp_path / "s.json").write_text('"hello"', encoding="utf-8")
        (error,) = errors(read_all(tmp_path))
        assert (error.key, error.field) == ("s.json", "file")
        assert "not a string" in error.reason

    def test_invalid_json_names_line_and_column(self, tmp_path: Path) -> None:
        """Invalid JSON is one `RecordError` for the file with the parser's line and column."""
        (tmp_path / "bad.json").write_text('[\n  {"invoice_number": "1",}\n]\n', encoding="utf-8")
        write_json(tmp_path / "good.json", invoice("2"))
        items = read_all(tmp_path)
        assert items[0] == RecordError(
            key="bad.json",
            field="file",
            reason="invalid JSON: Expecting property name enclosed in double quotes (line 2 column 26)",
        )
        assert isinstance(items[1], SourceRecord)

    def test_empty_json_file(self, tmp_path: Path) -> None:
        """An empty JSON file is invalid JSON at line 1 column 1."""
        (tmp_path / "empty.json").write_text("", encoding="utf-8")
        (error,) = read_all(tmp_path)
        assert isinstance(error, RecordError)
        assert error.reason == "invalid JSON: Expecting value (line 1 column 1)"

    def test_duplicate_key_is_invalid(self, tmp_path: Path) -> None:
        """An object with the same key twice is refused instead of keeping the last value."""
        (tmp_path / "dup.json").write_text('{"amount": "1", "amount": "2"}', encoding="utf-8")
        (error,) = read_all(tmp_path)
        assert isinstance(error, RecordError)
        assert error.reason == "invalid JSON: duplicate key 'amount' in an object"

    def test_unknown_field_is_an_error(self, tmp_path: Path) -> None:
        """A key that is not a canonical field is a `RecordError` naming it, with a suggestion."""
        write_json(tmp_path / "u.json", invoice("5", due_dat="2025-01-31"))
        (error,) = read_all(tmp_path)
        assert isinstance(error, RecordError)
        assert (error.key, error.field) == ("u.json:5", "due_dat")
        assert "unknown field 'due_dat'" in error.reason
        assert "did you mean 'due_dat' → 'due_date'" in error.reason

    def test_norwegian_letters_survive(self, tmp_path: Path) -> None:
        """æøå in a JSON file arrive intact."""
        write_json(tmp_path / "n.json", invoice(debtor_name="Ærøy Økonomi & Åsgård"))
        (item,) = records(read_all(tmp_path))
        assert item.fields["debtor_name"] == "Ærøy Økonomi & Åsgård"

    def test_json_with_bom(self, tmp_path: Path) -> None:
        """A JSON file saved with a UTF-8 BOM is read."""
        (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(invoice()).encode())
        assert [item.key for item in read_all(tmp_path)] == ["bom.json:20003"]


class TestCsvDigest:
    """A CSV invoice carries a digest of its row and the file's columns: the engine skips
    revalidating a finished case whose digest is the one stored, so every change to what
    the record carries must change it."""

    def digests(
        self, folder: Path, rows: list[list[str]], header: list[str] | None = None
    ) -> list[str]:
        write_csv(folder / "x.csv", csv_text(rows, ";", header))
        found = records(read_all(folder))
        assert all(record.digest for record in found)
        return [str(record.digest) for record in found]

    def test_the_same_row_keeps_its_digest_and_any_change_makes_a_new_one(
        self, tmp_path: Path
    ) -> None:
        first = self.digests(tmp_path, [ROW_20003, ROW_20004])
        assert first == self.digests(tmp_path, [ROW_20003, ROW_20004])
        assert len(set(first)) == 2
        for position in range(len(ROW_20003)):
            changed = list(ROW_20003)
            changed[position] += "9"
            assert self.digests(tmp_path, [changed, ROW_20004])[0] != first[0], COLUMNS[position]
        # A cell emptied or given spaces is a change too (the field is then not given).
        emptied = [*ROW_20003[:-1], ""]
        spaced = [*ROW_20003[:-1], "  "]
        assert (
            len({first[0], *self.digests(tmp_path, [emptied]), *self.digests(tmp_path, [spaced])})
            == 3
        )

    def test_columns_in_another_order_give_another_digest(self, tmp_path: Path) -> None:
        """The same cells under other headers are another record."""
        first = self.digests(tmp_path, [ROW_20003])
        swapped_header = [COLUMNS[1], COLUMNS[0], *COLUMNS[2:]]
        swapped_row = [ROW_20003[1], ROW_20003[0], *ROW_20003[2:]]
        assert self.digests(tmp_path, [swapped_row], swapped_header) != first

    def test_a_cell_holding_the_separator_cannot_pass_for_another_row(self, tmp_path: Path) -> None:
        """Moving a unit separator (U+001F) from one cell into the next changes the digest:
        rows are not told apart by their cells joined with it alone."""
        one = [*ROW_20003[:-2], "a\x1fb", "c"]
        other = [*ROW_20003[:-2], "a", "b\x1fc"]
        assert self.digests(tmp_path, [one]) != self.digests(tmp_path, [other])


class TestCsv:
    @pytest.mark.parametrize("delimiter", [",", ";"])
    @pytest.mark.parametrize("bom", [False, True])
    def test_separators_and_bom(self, tmp_path: Path, delimiter: str, bom: bool) -> None:
        """Both separators are detected, with and without a BOM; values arrive as text."""
        rows = [ROW_20003, ROW_20004]
        if delimiter == ",":
            rows = [[f'"{cell}"' if "," in cell else cell for cell in row] for row in rows]
        write_csv(tmp_path / "x.csv", csv_text(rows, delimiter), bom=bom)
        items = read_all(tmp_path)
        assert [item.key for item in items] == ["x.csv:20003", "x.csv:20004"]
        first = records(items)[0]
        assert first.fields == dict(zip(COLUMNS, ROW_20003, strict=True))

    @pytest.mark.parametrize("bom", [False, True])
    def test_plain_utf8_encoding_strips_bom_from_header(self, tmp_path: Path, bom: bool) -> None:
        """With `encoding = "utf-8"` a BOM does not spoil the first column name."""
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003], ";"), bom=bom)
        (item,) = read_all(tmp_path, encoding="utf-8")
        assert isinstance(item, SourceRecord)
        assert item.fields["invoice_number"] == "20003"

    def test_decimal_comma_and_dotted_dates_validate(self, tmp_path: Path) -> None:
        """`1 234,50` and `31.01.2025` arrive as text and validate into Decimal and date."""
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003], ";"))
        (item,) = records(read_all(tmp_path))
        assert item.fields["amount"] == "1 234,50"
        validated = Invoice.from_record(item.fields)
        assert validated.amount == Decimal("1234.50")
        assert validated.due_date == date(2025, 1, 31)

    def test_norwegian_letters_survive(self, tmp_path: Path) -> None:
        """æøå (and ÆØÅ) in a CSV file arrive intact."""
        write_csv(tmp_path / "x.csv", csv_text([ROW_20004], ";"), bom=True)
        (item,) = records(read_all(tmp_path))
        assert item.fields["debtor_name"] == "Ærlig Åse"
        assert item.fields["address_line1"] == "Øvre gate 2"
        assert item.fields["city"] == "Tromsø"

    def test_values_are_exactly_as_in_the_file(self, tmp_path: Path) -> None:
        """Cells are not trimmed or converted: spaces and leading zeros stay."""
        row = ["007", "01.01.2025", "31.01.2025", " 1 234,50 ", "A", "B", "0150", "Oslo"]
        write_csv(tmp_path / "x.csv", csv_text([row], ";"))
        (item,) = records(read_all(tmp_path))
        assert item.fields["amount"] == " 1 234,50 "
        assert item.fields["invoice_number"] == "007"
        assert item.fields["postal_code"] == "0150"

    def test_header_is_case_and_space_insensitive(self, tmp_path: Path) -> None:
        """Header names match canonical fields ignoring case and surrounding whitespace."""
        header = [f"  {name.upper()} " for name in COLUMNS]
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003], ";", header=header))
        (item,) = records(read_all(tmp_path))
        assert set(item.fields) == set(COLUMNS)

    def test_empty_cells_are_omitted(self, tmp_path: Path) -> None:
        """An empty or blank cell leaves the field out of the record."""
        header = [*COLUMNS, "description", "currency"]
        write_csv(tmp_path / "x.csv", csv_text([[*ROW_20003, "", "  "]], ";", header=header))
        (item,) = records(read_all(tmp_path))
        assert "description" not in item.fields
        assert "currency" not in item.fields

    def test_key_falls_back_to_line(self, tmp_path: Path) -> None:
        """A row without an invoice number is keyed `<file>:line <n>`."""
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003, ["", *ROW_20003[1:]]], ";"))
        assert [item.key for item in read_all(tmp_path)] == ["x.csv:20003", "x.csv:line 3"]

    def test_missing_required_column(self, tmp_path: Path) -> None:
        """A header without a required column is one `RecordError` naming it; no rows arrive."""
        header = [name for name in COLUMNS if name != "due_date"]
        rows = [[cell for name, cell in zip(COLUMNS, ROW_20003, strict=True) if name != "due_date"]]
        write_csv(tmp_path / "x.csv", csv_text(rows, ";", header=header))
        assert read_all(tmp_path) == [
            RecordError(key="x.csv", field="due_date", reason="missing required column 'due_date'")
        ]

    def test_several_missing_required_columns(self, tmp_path: Path) -> None:
        """Several missing columns are still one error, naming the first and listing all."""
        write_csv(tmp_path / "x.csv", "invoice_number;amount\n1;2\n")
        (error,) = read_all(tmp_path)
        assert isinstance(error, RecordError)
        assert error.field == REQUIRED_FIELDS[1]
        assert error.reason.startswith("missing required columns 'invoice_date', 'due_date'")

    def test_unknown_column(self, tmp_path: Path) -> None:
        """An unknown column is a `RecordError` for the file naming it and the known columns."""
        header = [*COLUMNS, "Beløp inkl. mva"]
        write_csv(tmp_path / "x.csv", csv_text([[*ROW_20003, "1"]], ";", header=header))
        (error,) = read_all(tmp_path)
        assert isinstance(error, RecordError)
        assert (error.key, error.field) == ("x.csv", "Beløp inkl. mva")
        assert "unknown column 'Beløp inkl. mva'" in error.reason
        assert "known columns: invoice_number, accounting_invoice_id" in error.reason

    def test_misspelt_required_column(self, tmp_path: Path) -> None:
        """A typo in a required column is one error naming the missing and the unknown column."""
        header = ["due_dat" if name == "due_date" else name for name in COLUMNS]
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003], ";", header=header))
        (error,) = read_all(tmp_path)
        assert isinstance(error, RecordError)
        assert (error.key, error.field) == ("x.csv", "due_date")
        assert error.reason.startswith(
            "missing required column 'due_date'; unknown column 'due_dat'"
        )
        assert "did you mean 'due_dat' → 'due_date'" in error.reason

    def test_repeated_invoice_number_keeps_keys_distinct(self, tmp_path: Path) -> None:
        """The same invoice number twice in a file still gives each row its own key."""
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003, ROW_20004, ROW_20003], ";"))
        keys = [item.key for item in read_all(tmp_path)]
        assert keys == ["x.csv:20003", "x.csv:20004", "x.csv:20003 (line 4)"]

    def test_duplicate_column(self, tmp_path: Path) -> None:
        """The same column twice is an error for the file."""
        header = [*COLUMNS, "Amount"]
        write_csv(tmp_path / "x.csv", csv_text([[*ROW_20003, "1"]], ";", header=header))
        assert read_all(tmp_path) == [
            RecordError(key="x.csv", field="amount", reason="duplicate column 'amount'")
        ]

    def test_ragged_row(self, tmp_path: Path) -> None:
        """A row with the wrong number of cells is an error for that row; others still arrive."""
        rows = [ROW_20003, ROW_20003[:-1], [*ROW_20004, "extra"], ROW_20004]
        write_csv(tmp_path / "x.csv", csv_text(rows, ";"))
        items = read_all(tmp_path)
        assert [item.key for item in items] == [
            "x.csv:20003",
            "x.csv:line 3",
            "x.csv:line 4",
            "x.csv:20004",
        ]
        assert items[1] == RecordError(
            key="x.csv:line 3", field="row", reason="line 3 has 7 cells, the header has 8"
        )

    def test_blank_rows_are_skipped(self, tmp_path: Path) -> None:
        """Blank lines and rows of empty cells (spreadsheet leftovers) are skipped silently."""
        text = csv_text([ROW_20003], ";") + "\n;;;;;;;;\n;;\n" + ";".join(ROW_20004) + "\n"
        write_csv(tmp_path / "x.csv", text)
        items = read_all(tmp_path)
        assert [item.key for item in items] == ["x.csv:20003", "x.csv:20004"]

    def test_quoted_cells_with_separator_and_newline(self, tmp_path: Path) -> None:
        """Quoted cells may hold the separator and line breaks; line numbers count physical lines."""
        header = [*COLUMNS, "description"]
        text = csv_text([[*ROW_20003, '"Linje 1;\nlinje 2"']], ";", header=header)
        text += ";".join(ROW_20003[:-1]) + "\n"
        write_csv(tmp_path / "x.csv", text)
        first, second = read_all(tmp_path)
        assert isinstance(first, SourceRecord)
        assert first.fields["description"] == "Linje 1;\nlinje 2"
        assert second.key == "x.csv:line 4"

    def test_unterminated_quote(self, tmp_path: Path) -> None:
        """A quote that never closes is a syntax error naming the line where the row starts."""
        text = csv_text([ROW_20003], ";") + '20004;"open\n'
        write_csv(tmp_path / "x.csv", text)
        first, error = read_all(tmp_path)
        assert isinstance(first, SourceRecord)
        assert isinstance(error, RecordError)
        assert error.key == "x.csv:line 3"
        assert "CSV syntax error at line 3" in error.reason

    def test_blank_header_column_is_ignored_unless_filled(self, tmp_path: Path) -> None:
        """A column without a header is ignored, but a value in it is an error for that row."""
        write_csv(
            tmp_path / "x.csv",
            csv_text([[*ROW_20003, ""], [*ROW_20004, "x"]], ";", header=[*COLUMNS, ""]),
        )
        first, error = read_all(tmp_path)
        assert isinstance(first, SourceRecord)
        assert error == RecordError(
            key="x.csv:line 3",
            field="row",
            reason="line 3 has a value in column 9, which has no known header",
        )

    def test_explicit_delimiter(self, tmp_path: Path) -> None:
        """`csv_delimiter` overrides detection (a comma in a `;` file then is no separator)."""
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003], ";"))
        assert records(read_all(tmp_path, csv_delimiter=";"))
        items = read_all(tmp_path, csv_delimiter=",")
        assert items
        assert all(isinstance(item, RecordError) for item in items)

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("a,b,c\n", ","),
            ("a;b;c\r\n", ";"),
            ("a;b,c;d\n", ";"),
            ('"a;b;c",d,e\n', ","),
            ('"x,y,z";b;c\n', ";"),
            ("single\n", ","),
        ],
    )
    def test_delimiter_detection(self, line: str, expected: str) -> None:
        """Detection counts `;` and `,` outside quotes in the header line."""
        assert detect_delimiter(line) == expected

    def test_empty_file(self, tmp_path: Path) -> None:
        """A CSV file without a header row is an error, not an empty source."""
        write_csv(tmp_path / "x.csv", "", bom=True)
        assert read_all(tmp_path) == [
            RecordError(key="x.csv", field="file", reason="the file is empty: no header row")
        ]

    def test_header_only(self, tmp_path: Path) -> None:
        """A CSV file with only a header holds no invoices and no errors."""
        write_csv(tmp_path / "x.csv", csv_text([], ";"))
        assert read_all(tmp_path) == []

    def test_not_utf8_is_an_error_for_the_file(self, tmp_path: Path) -> None:
        """A Windows-1252 file is one `RecordError` naming the byte and line; no rows arrive."""
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003, ROW_20004], ";"), encoding="cp1252")
        write_csv(tmp_path / "y.csv", csv_text([ROW_20003], ";"))
        items = read_all(tmp_path)
        assert isinstance(items[0], RecordError)
        assert (items[0].key, items[0].field) == ("x.csv", "file")
        assert items[0].reason.startswith(
            "not utf-8-sig text: byte 0xe5 on line 2 cannot be decoded"
        )
        assert "cp1252" in items[0].reason
        assert [item.key for item in items[1:]] == ["y.csv:20003"]

    def test_decoding_error_far_into_the_file(self, tmp_path: Path) -> None:
        """The line of a bad byte is right even past the first read chunk."""
        filler = [[str(n), *ROW_20003[1:4], "Ola", "Vei 1", "0150", "Oslo"] for n in range(5000)]
        text = csv_text(filler, ";").encode() + "1;2;3;4;Blåbær;6;7;8\n".encode("cp1252")
        (tmp_path / "x.csv").write_bytes(text)
        (error,) = read_all(tmp_path)
        assert isinstance(error, RecordError)
        assert "on line 5002" in error.reason

    def test_configured_encoding(self, tmp_path: Path) -> None:
        """`encoding = "cp1252"` reads an Excel export from Windows with æøå intact."""
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003, ROW_20004], ";"), encoding="cp1252")
        items = records(read_all(tmp_path, encoding="cp1252"))
        assert [item.fields["debtor_name"] for item in items] == ["Blåbær AS", "Ærlig Åse"]

    def test_committed_norwegian_export(self) -> None:
        """The committed Excel-style export (BOM, `;`, CRLF, decimal comma) validates fully."""
        made = FolderConnector.from_settings({"path": "folder/export"}, base_dir=DATA)
        items = list(made.read())
        assert [item.key for item in items] == [
            "purringer.json:30001",
            "utestaende.csv:20003",
            "utestaende.csv:20004",
        ]
        invoices = [
            Invoice.from_record(item.fields, document=item.document) for item in records(items)
        ]
        assert [inv.amount for inv in invoices] == [
            Decimal("499.90"),
            Decimal("1234.50"),
            Decimal("12500.00"),
        ]
        assert invoices[2].description == "Vedlikehold; årlig avtale"
        assert invoices[2].debtor.name == "Bjørn Ærlig Åsheim"
        assert invoices[2].debtor.address.city == "Tromsø"
        assert invoices[1].debtor.organization_number == "923609016"
        assert invoices[0].document is None
        assert invoices[1].document is not None
        check_pdf(invoices[1].document.load(), invoices[1].document.name)


class TestPdfPairing:
    def test_pdf_beside_invoice_is_paired(self, tmp_path: Path) -> None:
        """`<invoice_number>.pdf` in the same directory becomes the record's `FileDocument`."""
        (tmp_path / "20003.pdf").write_bytes(b"%PDF-1.7 copy")
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003, ROW_20004], ";"))
        write_json(tmp_path / "y.json", invoice("20003"))
        items = records(read_all(tmp_path))
        for item in (items[0], items[2]):
            assert isinstance(item.document, FileDocument)
            assert item.document.name == "20003.pdf"
            assert item.document.load() == b"%PDF-1.7 copy"
        assert items[1].document is None

    def test_extension_case_does_not_matter(self, tmp_path: Path) -> None:
        """`20003.PDF` pairs like `20003.pdf`."""
        (tmp_path / "20003.PDF").write_bytes(b"%PDF-1.7")
        write_json(tmp_path / "y.json", invoice("20003"))
        (item,) = records(read_all(tmp_path))
        assert item.document is not None
        assert item.document.name == "20003.PDF"

    @pytest.mark.parametrize(
        "pdf_name", ["20003-kopi.pdf", "faktura 20003.pdf", "2000.pdf", "20003.pdf.txt"]
    )
    def test_no_pairing_when_name_differs(self, tmp_path: Path, pdf_name: str) -> None:
        """A PDF whose name is not exactly the invoice number is not paired."""
        (tmp_path / pdf_name).write_bytes(b"%PDF-1.7")
        write_json(tmp_path / "y.json", invoice("20003"))
        (item,) = records(read_all(tmp_path))
        assert item.document is None

    def test_pdf_in_another_directory_is_not_paired(self, tmp_path: Path) -> None:
        """Only a PDF in the invoice file's own directory pairs."""
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "20003.pdf").write_bytes(b"%PDF-1.7")
        write_json(tmp_path / "y.json", invoice("20003"))
        write_json(tmp_path / "sub" / "z.json", invoice("20003"))
        items = records(read_all(tmp_path, recursive=True))
        assert [(item.key, item.document is not None) for item in items] == [
            ("sub/z.json:20003", True),
            ("y.json:20003", False),
        ]

    def test_pdf_is_not_read_or_checked_at_read_time(self, tmp_path: Path) -> None:
        """The document is lazy: a non-PDF is not rejected while reading, and load() reads later."""
        pdf = tmp_path / "20003.pdf"
        pdf.write_bytes(b"not a pdf at all")
        write_json(tmp_path / "y.json", invoice("20003"))
        (item,) = read_all(tmp_path)
        assert isinstance(item, SourceRecord)
        assert item.document is not None
        pdf.write_bytes(b"%PDF-1.7 written after the read")
        assert item.document.load() == b"%PDF-1.7 written after the read"

    def test_index_is_built_once_per_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The PDF index is built once per directory and read, not once per record."""
        calls: list[int] = []
        original = folder_module.pdf_index

        def counting(entries: Any) -> dict[str, Path]:
            calls.append(1)
            return original(entries)

        monkeypatch.setattr(folder_module, "pdf_index", counting)
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003, ROW_20004] * 5, ";"))
        write_json(tmp_path / "y.json", [invoice(str(n)) for n in range(10)])
        assert len(read_all(tmp_path)) == 20
        assert len(calls) == 1


class TestFolder:
    def test_missing_folder_raises(self, tmp_path: Path) -> None:
        """A folder that does not exist raises `ConnectorError` naming it, not an empty read."""
        missing = tmp_path / "nowhere"
        with pytest.raises(ConnectorError, match=f"source folder {missing} does not exist"):
            read_all(missing)

    def test_file_instead_of_folder_raises(self, tmp_path: Path) -> None:
        """A path that is a file raises `ConnectorError`."""
        (tmp_path / "file.csv").write_text("x", encoding="utf-8")
        with pytest.raises(ConnectorError, match="is not a directory"):
            read_all(tmp_path / "file.csv")

    def test_unreadable_folder_raises(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A folder that cannot be listed raises `ConnectorError` naming the path and the cause."""

        def denied(path: Any) -> Any:
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr("connectors.folder._files.os.scandir", denied)
        with pytest.raises(
            ConnectorError, match=f"cannot read source folder {tmp_path}: Permission denied"
        ):
            read_all(tmp_path)

    def test_empty_folder_yields_nothing(self, tmp_path: Path) -> None:
        """An existing empty folder is a successful read without invoices."""
        assert read_all(tmp_path) == []

    def test_other_files_are_ignored(self, tmp_path: Path) -> None:
        """PDFs, text, hidden files, Office lock files and (non-recursive) subdirs are ignored."""
        (tmp_path / "notes.txt").write_text("hei", encoding="utf-8")
        (tmp_path / ".hidden.xml").write_text("<Invoice/>", encoding="utf-8")
        (tmp_path / "1.pdf").write_bytes(b"%PDF-1.7")
        (tmp_path / ".hidden.json").write_text("{broken", encoding="utf-8")
        (tmp_path / "~$x.csv").write_bytes(b"\x00\xff lock")
        (tmp_path / "sub").mkdir()
        write_json(tmp_path / "sub" / "y.json", invoice("2"))
        write_json(tmp_path / "x.json", invoice("1"))
        assert [item.key for item in read_all(tmp_path)] == ["x.json:1"]

    def test_files_in_name_order(self, tmp_path: Path) -> None:
        """Files are read in name order whatever order they were written in."""
        for name in ["c.json", "a.csv", "b.JSON", "B.csv"]:
            if name.lower().endswith(".csv"):
                write_csv(tmp_path / name, csv_text([ROW_20003], ";"))
            else:
                write_json(tmp_path / name, invoice("20003"))
        keys = [item.key for item in read_all(tmp_path)]
        assert keys == ["B.csv:20003", "a.csv:20003", "b.JSON:20003", "c.json:20003"]

    def test_recursive(self, tmp_path: Path) -> None:
        """`recursive` reads subdirectories in name order, keyed by relative path; hidden dirs not."""
        (tmp_path / "2025" / "jan").mkdir(parents=True)
        (tmp_path / ".trash").mkdir()
        write_json(tmp_path / "2025" / "jan" / "a.json", invoice("3"))
        write_json(tmp_path / "2025" / "b.json", invoice("2"))
        write_json(tmp_path / "a.json", invoice("1"))
        write_json(tmp_path / ".trash" / "old.json", invoice("9"))
        keys = [item.key for item in read_all(tmp_path, recursive=True)]
        assert keys == ["2025/b.json:2", "2025/jan/a.json:3", "a.json:1"]

    def test_unreadable_file_is_an_error_and_the_rest_goes_on(self, tmp_path: Path) -> None:
        """A file that cannot be opened is a `RecordError` naming the cause; other files still arrive."""
        (tmp_path / "a.json").symlink_to(tmp_path / "removed.json")  # a link to nothing
        (tmp_path / "b.csv").symlink_to(tmp_path / "removed.csv")
        write_json(tmp_path / "c.json", invoice("3"))
        gone = "cannot read the file: No such file or directory"
        assert read_all(tmp_path) == [
            RecordError(key="a.json", field="file", reason=gone),
            RecordError(key="b.csv", field="file", reason=gone),
            SourceRecord(key="c.json:3", fields=invoice("3")),
        ]

    @pytest.mark.parametrize("name", ["big.json", "big.csv"])
    def test_max_file_bytes(self, tmp_path: Path, name: str) -> None:
        """A file bigger than `max_file_bytes` is a `RecordError` naming its size and the limit."""
        (tmp_path / name).write_text("x" * 1001, encoding="utf-8")
        write_json(tmp_path / "small.json", invoice("1"))
        items = read_all(tmp_path, max_file_bytes=1000)
        assert items[0] == RecordError(
            key=name,
            field="file",
            reason="the file has 1001 bytes, more than max_file_bytes (1000); it was not read",
        )
        assert isinstance(items[1], SourceRecord)

    def test_file_at_the_limit_is_read(self, tmp_path: Path) -> None:
        """A file of exactly `max_file_bytes` is read."""
        path = write_json(tmp_path / "x.json", invoice("1"))
        assert records(read_all(tmp_path, max_file_bytes=path.stat().st_size))


class TestLaziness:
    def test_read_is_a_generator(self, tmp_path: Path) -> None:
        """`read()` returns a generator and touches nothing until iterated."""
        made = connector(tmp_path / "does-not-exist-yet")
        assert inspect.isgeneratorfunction(FolderConnector.read)
        assert inspect.isgenerator(made.read())
        reader = made.read()
        (tmp_path / "does-not-exist-yet").mkdir()
        write_json(tmp_path / "does-not-exist-yet" / "x.json", invoice("1"))
        assert [item.key for item in reader] == ["x.json:1"]

    def test_files_are_read_as_iteration_reaches_them(self, tmp_path: Path) -> None:
        """A later file is only read when iteration gets to it, not up front."""
        write_json(tmp_path / "a.json", invoice("1"))
        write_json(tmp_path / "b.json", invoice("2"))
        reader = connector(tmp_path).read()
        assert next(reader).key == "a.json:1"
        write_json(tmp_path / "b.json", invoice("changed"))
        assert [item.key for item in reader] == ["b.json:changed"]

    def test_csv_rows_are_streamed(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The first CSV row arrives before the rest of the file has been parsed."""
        write_csv(tmp_path / "x.csv", csv_text([ROW_20003] * 1000, ";"))
        parsed: list[int] = []
        original = folder_module.csv_record

        def counting(*args: Any, **kwargs: Any) -> Any:
            parsed.append(1)
            return original(*args, **kwargs)

        monkeypatch.setattr(folder_module, "csv_record", counting)
        reader = connector(tmp_path).read()
        next(reader)
        assert len(parsed) == 1
        assert sum(1 for _ in reader) == 999


class TestCappedReads:
    def test_a_small_file_is_read_whole(self, tmp_path: Path) -> None:
        """A file within the limit comes back whole, also when exactly at the limit."""
        small = tmp_path / "small.json"
        small.write_bytes(b"[1, 2]")
        assert rules(tmp_path, max_bytes=10).read(small) == b"[1, 2]"
        assert rules(tmp_path, max_bytes=6).read(small) == b"[1, 2]"

    def test_a_file_that_grows_after_it_was_measured_is_not_read_past_the_limit(
        self, tmp_path: Path
    ) -> None:
        """Opened at 90 bytes, then grown to 100 MiB: at most limit + 1 bytes are read before
        the read stops with a reason."""
        path = tmp_path / "growing.json"
        path.write_bytes(b"x" * 90)
        with rules(tmp_path, max_bytes=100).open(path) as handle:
            with path.open("ab") as more:
                more.truncate(100 * MIB)  # the file grows while it is open
            with pytest.raises(RefusedError, match="grew beyond max_file_bytes"):
                handle.read_whole()
            assert handle._position == 101

    def test_a_csv_that_grows_while_its_rows_are_read_stops_with_an_error(
        self, tmp_path: Path
    ) -> None:
        """Rows read before the file grew past the limit stay; then one error names the file."""
        path = write_csv(tmp_path / "x.csv", csv_text([ROW_20003] * 3, ";"))
        reader = connector(tmp_path, max_file_bytes=path.stat().st_size + 10).read()
        first = next(reader)
        assert isinstance(first, SourceRecord)
        with path.open("a", encoding="utf-8") as more:
            more.write(";".join(ROW_20004) + "\n" * 200)
        rest = list(reader)
        assert rest[-1].key == "x.csv"
        assert isinstance(rest[-1], RecordError)
        assert "grew beyond max_file_bytes" in rest[-1].reason


class TestSizeLimit:
    def test_a_huge_pdf_copy_is_refused_from_its_size_and_not_read(self, tmp_path: Path) -> None:
        """A 100 MiB file named like a copy: `load()` names its size and the limit, and reads
        nothing (memory stays far below the file's size)."""
        write_json(tmp_path / "y.json", invoice("7"))
        sparse_file(tmp_path / "7.pdf", 100 * MIB)
        document = only_record(read_all(tmp_path)).document

        tracemalloc.start()
        try:
            refused = load_refused(document)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert refused.reason == (
            "7.pdf: the file has 104857600 bytes, more than max_file_bytes (20971520); "
            "it was not read"
        )
        assert peak < MIB

    @pytest.mark.parametrize("name", ["huge.json", "huge.csv", "huge.xml"])
    def test_a_huge_invoice_file_is_refused_and_not_read(self, tmp_path: Path, name: str) -> None:
        """The same for invoice files of each kind: one error naming the size, little memory."""
        sparse_file(tmp_path / name, 100 * MIB)

        tracemalloc.start()
        try:
            items = within(5, lambda: read_all(tmp_path))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert items == [
            RecordError(
                name,
                "file",
                "the file has 104857600 bytes, more than max_file_bytes (20971520); "
                "it was not read",
            )
        ]
        assert peak < MIB

    def test_the_copy_honours_the_folders_own_limit(self, tmp_path: Path) -> None:
        """`max_file_bytes` applies to copies too: a copy just over it is refused, one at it loads."""
        pdf = minimal_pdf("seven")
        (tmp_path / "7.pdf").write_bytes(pdf)
        write_json(tmp_path / "y.json", invoice("7"))
        document = only_record(read_all(tmp_path, max_file_bytes=len(pdf) - 1)).document
        assert "more than max_file_bytes" in load_refused(document).reason

        document = only_record(read_all(tmp_path, max_file_bytes=len(pdf))).document
        assert document is not None
        assert isinstance(document, FileDocument)
        assert document.max_bytes == len(pdf)
        assert document.load() == pdf


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
class TestOnlyRegularFiles:
    @pytest.mark.parametrize("name", ["pipe.json", "pipe.csv", "pipe.xml"])
    def test_a_named_pipe_named_like_an_invoice_file_is_refused_without_blocking(
        self, tmp_path: Path, name: str
    ) -> None:
        """A FIFO `*.json`, `*.csv` or `*.xml` is an error naming what it is, at once."""
        os.mkfifo(tmp_path / name)
        write_json(tmp_path / "z.json", invoice("1"))
        items = within(2, lambda: read_all(tmp_path))
        assert items[0] == RecordError(
            name, "file", "not a regular file (a named pipe); it was not read"
        )
        assert isinstance(items[1], SourceRecord)

    def test_a_named_pipe_named_like_a_pdf_copy_is_refused_without_blocking(
        self, tmp_path: Path
    ) -> None:
        """A FIFO `7.pdf` pairs with invoice 7, and `load()` refuses it at once."""
        os.mkfifo(tmp_path / "7.pdf")
        write_json(tmp_path / "y.json", invoice("7"))
        document = only_record(read_all(tmp_path)).document
        refused = load_refused(document)
        assert refused.reason == "7.pdf: not a regular file (a named pipe); it was not read"

    def test_a_link_to_dev_zero_named_like_a_pdf_is_refused(self, tmp_path: Path) -> None:
        """`7.pdf` → /dev/zero: refused as a link out of the folder, and, with links out
        allowed, as a device; never read (it would never end)."""
        (tmp_path / "7.pdf").symlink_to("/dev/zero")
        write_json(tmp_path / "y.json", invoice("7"))

        document = only_record(read_all(tmp_path)).document
        assert load_refused(document).reason == link_out("7.pdf")

        document = only_record(read_all(tmp_path, follow_symlinks=True)).document
        refused = load_refused(document)
        assert refused.reason == "7.pdf: not a regular file (a device); it was not read"

    def test_a_socket_named_like_a_pdf_is_refused(self, tmp_path: Path) -> None:
        """A socket cannot even be opened; the reason says what it is."""
        write_json(tmp_path / "y.json", invoice("7"))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
            listening.bind(str(tmp_path / "7.pdf"))
            document = only_record(read_all(tmp_path)).document
            refused = load_refused(document)
        assert refused.reason == "7.pdf: not a regular file (a socket); it was not read"

    def test_a_directory_named_like_a_pdf_is_no_copy(self, tmp_path: Path) -> None:
        """A directory `7.pdf` is not paired at all."""
        (tmp_path / "7.pdf").mkdir()
        write_json(tmp_path / "y.json", invoice("7"))
        assert only_record(read_all(tmp_path)).document is None

    def test_a_copy_replaced_by_a_pipe_after_the_read_is_refused(self, tmp_path: Path) -> None:
        """The check is made when the copy is loaded, on what is opened then."""
        (tmp_path / "7.pdf").write_bytes(minimal_pdf())
        write_json(tmp_path / "y.json", invoice("7"))
        document = only_record(read_all(tmp_path)).document
        (tmp_path / "7.pdf").unlink()
        os.mkfifo(tmp_path / "7.pdf")
        assert "a named pipe" in load_refused(document).reason


class TestSymbolicLinks:
    def test_a_pdf_linked_from_outside_is_refused_without_showing_it(self, tmp_path: Path) -> None:
        """`7.pdf` → a file outside: refused, naming the link only (not its target, not what
        the target holds), and saying how to allow it."""
        folder, outside = outside_folder(tmp_path)
        (outside / "secret.pdf").write_text(SECRET, encoding="utf-8")
        (folder / "7.pdf").symlink_to(outside / "secret.pdf")
        write_json(folder / "y.json", invoice("7"))

        items = read_all(folder)
        refused = load_refused(only_record(items).document)

        assert refused.reason == link_out("7.pdf")
        assert SECRET not in repr(items)
        assert str(outside) not in refused.reason

    @pytest.mark.parametrize("name", ["x.json", "x.csv", "x.xml"])
    def test_an_invoice_file_linked_from_outside_is_refused_without_showing_it(
        self, tmp_path: Path, name: str
    ) -> None:
        """An invoice file that is a link to outside is an error for that file; nothing of the
        target reaches the reason (a CSV's header would otherwise be listed as unknown
        columns)."""
        folder, outside = outside_folder(tmp_path)
        (outside / "passwd").write_text(f"{SECRET};root:x:0:0\n{SECRET};1\n", encoding="utf-8")
        (folder / name).symlink_to(outside / "passwd")

        items = read_all(folder)

        assert items == [RecordError(name, "file", link_out(name))]
        assert SECRET not in repr(items)

    def test_follow_symlinks_reads_what_links_lead_to(self, tmp_path: Path) -> None:
        """With `follow_symlinks = true`, an invoice file and a copy linked from outside are read."""
        folder, outside = outside_folder(tmp_path)
        pdf = minimal_pdf("outside")
        (outside / "copy.pdf").write_bytes(pdf)
        write_json(outside / "invoice.json", invoice("7"))
        (folder / "7.pdf").symlink_to(outside / "copy.pdf")
        (folder / "y.json").symlink_to(outside / "invoice.json")

        record = only_record(read_all(folder, follow_symlinks=True))

        assert record.key == "y.json:7"
        assert record.document is not None
        assert record.document.load() == pdf

    def test_links_within_the_folder_are_followed(self, tmp_path: Path) -> None:
        """A link whose target stays in the folder is read like the file itself."""
        pdf = minimal_pdf("inside")
        (tmp_path / "archive").mkdir()
        (tmp_path / "archive" / "copy.pdf").write_bytes(pdf)
        write_json(tmp_path / "archive" / "invoice.json", invoice("7"))
        (tmp_path / "7.pdf").symlink_to(Path("archive") / "copy.pdf")
        (tmp_path / "y.json").symlink_to(tmp_path / "archive" / "invoice.json")

        record = only_record(read_all(tmp_path))

        assert record.key == "y.json:7"
        assert record.document is not None
        assert record.document.load() == pdf

    def test_the_folder_itself_may_be_a_link(self, tmp_path: Path) -> None:
        """`path` naming a link to the real folder: its files are inside it, not outside."""
        real = tmp_path / "real"
        real.mkdir()
        (real / "7.pdf").write_bytes(minimal_pdf())
        write_json(real / "y.json", invoice("7"))
        (tmp_path / "invoices").symlink_to(real)

        record = only_record(read_all(tmp_path / "invoices"))

        assert record.document is not None
        assert record.document.load().startswith(b"%PDF-")

    def test_a_directory_link_out_of_the_folder_is_not_recursed_into(self, tmp_path: Path) -> None:
        """`recursive`: a link to a directory outside is an error naming the link, and none of
        its files is read; with `follow_symlinks` they are."""
        folder, outside = outside_folder(tmp_path)
        write_json(outside / "a.json", invoice("9"))
        (outside / "9.pdf").write_text(SECRET, encoding="utf-8")
        (folder / "linked").symlink_to(outside, target_is_directory=True)
        write_json(folder / "b.json", invoice("1"))

        items = read_all(folder, recursive=True)

        assert [item.key for item in items] == ["b.json:1", "linked"]
        assert items[1] == RecordError("linked", "file", link_out("linked"))
        followed = read_all(folder, recursive=True, follow_symlinks=True)
        assert [item.key for item in followed] == ["b.json:1", "linked/a.json:9"]

    def test_a_directory_link_is_ignored_when_not_recursive(self, tmp_path: Path) -> None:
        """Without `recursive`, a link to a directory is skipped like any subdirectory."""
        folder, outside = outside_folder(tmp_path)
        write_json(outside / "a.json", invoice("9"))
        (folder / "linked").symlink_to(outside, target_is_directory=True)
        assert read_all(folder) == []

    def test_a_directory_link_within_the_folder_is_read_once(self, tmp_path: Path) -> None:
        """`current` → `2025`: the invoices are read where they are, not a second time (and a
        link to the folder itself does not loop)."""
        (tmp_path / "2025").mkdir()
        write_json(tmp_path / "2025" / "a.json", invoice("1"))
        (tmp_path / "current").symlink_to("2025", target_is_directory=True)
        (tmp_path / "2025" / "all").symlink_to(tmp_path, target_is_directory=True)

        items = read_all(tmp_path, recursive=True)

        assert [item.key for item in items] == ["2025/a.json:1"]

    def test_followed_directory_links_do_not_loop(self, tmp_path: Path) -> None:
        """With `follow_symlinks`, a directory outside that links to itself is read once."""
        folder, outside = outside_folder(tmp_path)
        write_json(outside / "a.json", invoice("9"))
        (outside / "again").symlink_to(outside, target_is_directory=True)
        (folder / "linked").symlink_to(outside, target_is_directory=True)

        items = within(5, lambda: read_all(folder, recursive=True, follow_symlinks=True))

        assert [item.key for item in items] == ["linked/a.json:9"]

    def test_a_copy_replaced_by_a_link_out_after_the_read_is_refused(self, tmp_path: Path) -> None:
        """The link rule is applied when the copy is loaded, not only when the folder is read."""
        folder, outside = outside_folder(tmp_path)
        (outside / "secret.pdf").write_text(SECRET, encoding="utf-8")
        (folder / "7.pdf").write_bytes(minimal_pdf())
        write_json(folder / "y.json", invoice("7"))
        document = only_record(read_all(folder)).document
        (folder / "7.pdf").unlink()
        (folder / "7.pdf").symlink_to(outside / "secret.pdf")

        refused = load_refused(document)

        assert refused.reason == link_out("7.pdf")

    def test_a_directory_swapped_for_a_link_out_after_the_read_is_refused(
        self, tmp_path: Path
    ) -> None:
        """A link anywhere on the copy's path counts: `sub/` replaced by a link to outside."""
        folder, outside = outside_folder(tmp_path)
        (folder / "sub").mkdir()
        (folder / "sub" / "7.pdf").write_bytes(minimal_pdf())
        write_json(folder / "sub" / "y.json", invoice("7"))
        (outside / "7.pdf").write_text(SECRET, encoding="utf-8")
        document = only_record(read_all(folder, recursive=True)).document
        (folder / "sub").rename(tmp_path / "moved")
        (folder / "sub").symlink_to(outside, target_is_directory=True)

        refused = load_refused(document)

        assert refused.reason == link_out("sub/7.pdf")

    def test_an_ehf_file_linked_after_the_read_gives_no_embedded_copy(self, tmp_path: Path) -> None:
        """The embedded PDF is read again from its EHF file by the same rules."""
        from ehf_support import ehf_invoice  # noqa: PLC0415 - EHF helpers, only needed here

        folder, outside = outside_folder(tmp_path)
        (folder / "1.xml").write_bytes(ehf_invoice("1", pdf=minimal_pdf()))
        document = only_record(read_all(folder)).document
        assert isinstance(document, EmbeddedPdfDocument)
        (outside / "1.xml").write_bytes(ehf_invoice("1", pdf=minimal_pdf()))
        (folder / "1.xml").unlink()
        (folder / "1.xml").symlink_to(outside / "1.xml")

        refused = load_refused(document)

        assert refused.reason == link_out("1.xml")


class TestLinksEndToEnd:
    def test_nothing_behind_a_link_out_reaches_kravia_the_state_or_the_output(
        self, sim: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A pass over a folder with a linked copy and a linked CSV: both quarantined with the
        link named, the outside file's content in no reason, log line or command output."""
        folder, outside = outside_folder(tmp_path)
        (outside / "shadow").write_text(f"{SECRET}\n", encoding="utf-8")
        write_json(folder / "a.json", [invoice_record(1), invoice_record(2)])
        (folder / "1.pdf").write_bytes(minimal_pdf("one"))
        (folder / "2.pdf").symlink_to(outside / "shadow")
        (folder / "b.csv").symlink_to(outside / "shadow")
        config = write_config(tmp_path, sim.base_url)

        summary = run_pass(config)
        status = run_cli("status", cwd=tmp_path)

        assert [case["accountingInvoiceId"] for case in sim.cases()] == ["1"]
        reasons = {p["record"]: (p["field"], p["reason"]) for p in summary.problems}
        assert reasons["b.csv"] == ("file", link_out("b.csv"))
        assert reasons["a.json:2"] == ("document", link_out("2.pdf"))
        captured = capsys.readouterr()
        for text in (json.dumps(summary.as_dict()), captured.out, captured.err, status.stdout):
            assert SECRET not in text
            assert "TOP-SECR" not in text
