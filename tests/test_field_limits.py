# ruff: noqa: S608 - the tests build SQL from their own table names and constants only
"""Every text field has a length bound and refuses control characters (`field_limits`): in
the model, through a folder source end to end, and through the SQL source on the real
PostgreSQL and MariaDB servers. A value over its bound is quarantined naming the field, never
sent and never cut; the rest of the pass is sent."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sql_fixture import (
    BAD_INVOICE,
    COLUMNS,
    DOCUMENT_QUERY,
    QUERY,
    SENT_INVOICES,
    Backend,
)
from support import Sim, invoice_record, load, run_pass, write_config

from kravia_sync.errors import InvalidRecordError
from kravia_sync.field_limits import INVOICE_FIELD_LIMITS, PAYMENT_FIELD_LIMITS
from kravia_sync.model import Invoice
from kravia_sync.payments import Payment
from kravia_sync.state.store import StateStore

BASE: dict[str, Any] = {
    "invoice_number": "20003",
    "invoice_date": "2025-01-01",
    "due_date": "2025-02-01",
    "amount": "2250",
    "debtor_name": "John Doe",
    "address_line1": "Karl Johan Gate",
    "postal_code": "1000",
    "city": "Oslo",
}
LONG_NAME = "N" * 10_000


def record(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def refusal(**changes: Any) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        Invoice.from_record(record(**changes))
    return info.value


def email_of_length(length: int) -> str:
    domain = "@example.com"
    return "a" * (length - len(domain)) + domain


# Fields whose value at its bound is otherwise valid, and how to make one of a given length.
AT_THE_BOUND = {
    "invoice_number": lambda n: "7" * n,
    "accounting_invoice_id": lambda n: "A" * n,
    "description": lambda n: "d" * n,
    "debtor_name": lambda n: "N" * n,
    "debtor_number": lambda n: "C" * n,
    "debtor_email": email_of_length,
    "address_line1": lambda n: "S" * n,
    "address_line2": lambda n: "P" * n,
    "city": lambda n: "O" * n,
}


class TestLengthBounds:
    def test_a_10000_character_debtor_name_is_refused_naming_the_field(self) -> None:
        """The issue's case: the reason names debtor_name, its length and the bound."""
        error = refusal(debtor_name=LONG_NAME)

        assert error.field == "debtor_name"
        assert error.reason.startswith("debtor_name is 10,000 characters long; at most 200")

    def test_the_reason_never_quotes_the_value(self) -> None:
        """An absurd value is not copied into the reason (and so not into the state store)."""
        error = refusal(debtor_name=LONG_NAME)

        assert "NNNN" not in error.reason
        assert len(error.reason) < 200

    @pytest.mark.parametrize("field", sorted(INVOICE_FIELD_LIMITS))
    def test_one_character_over_the_bound_is_refused(self, field: str) -> None:
        """Every bounded field refuses a value one character over its bound, naming itself."""
        limit = INVOICE_FIELD_LIMITS[field]

        error = refusal(**{field: "x" * (limit + 1)})

        assert error.field == field
        assert f"{limit + 1:,} characters long; at most {limit:,} are accepted" in error.reason

    @pytest.mark.parametrize("field", sorted(AT_THE_BOUND))
    def test_a_value_exactly_at_the_bound_is_accepted(self, field: str) -> None:
        """A value of exactly the bound's length is valid and kept whole."""
        value = AT_THE_BOUND[field](INVOICE_FIELD_LIMITS[field])

        invoice = Invoice.from_record(record(**{field: value}))

        assert value in json.dumps(invoice.model_dump(mode="json"))

    def test_a_foreign_postal_code_at_the_bound_is_accepted(self) -> None:
        """postal_code's bound is met by a foreign code (Norwegian ones are 4 digits)."""
        code = "9" * INVOICE_FIELD_LIMITS["postal_code"]

        invoice = Invoice.from_record(record(postal_code=code, country="GB"))

        assert invoice.debtor.address.postal_code == code

    def test_the_value_is_measured_trimmed(self) -> None:
        """Spaces around a value are not sent, so they do not count."""
        invoice = Invoice.from_record(record(debtor_name=f"  {'N' * 200}  "))

        assert invoice.debtor.name == "N" * 200

    def test_characters_are_counted_not_bytes(self) -> None:
        """200 letters æøå (400 bytes in UTF-8) are 200 characters."""
        invoice = Invoice.from_record(record(debtor_name="Ø" * 200))

        assert invoice.debtor.name == "Ø" * 200

    def test_the_accounting_id_is_measured_with_the_id_prefix(self) -> None:
        """The accountingInvoiceId sent carries the source's prefix: that is what is bounded."""
        limit = INVOICE_FIELD_LIMITS["accounting_invoice_id"]
        fields = record(accounting_invoice_id="A" * (limit - 2))
        Invoice.from_record(fields, id_prefix="p-")

        with pytest.raises(InvalidRecordError) as info:
            Invoice.from_record(fields, id_prefix="erp-")

        assert info.value.field == "accounting_invoice_id"
        assert f"{limit + 2} characters long" in info.value.reason


class TestControlCharacters:
    @pytest.mark.parametrize(
        ("char", "code"),
        [
            ("\x00", "U+0000"),
            ("\x07", "U+0007"),
            ("\x1b", "U+001B"),
            ("\x7f", "U+007F"),
            ("\x85", "U+0085"),
            ("\ud800", "U+D800"),
        ],
    )
    def test_a_control_character_in_a_name_is_refused(self, char: str, code: str) -> None:
        """NUL, C0, DEL, C1 and a lone surrogate are refused, naming the field and where."""
        error = refusal(debtor_name=f"Ol{char}a")

        assert error.field == "debtor_name"
        assert f"{code}" in error.reason
        assert "at character 3" in error.reason

    @pytest.mark.parametrize("field", ["address_line1", "city", "invoice_number", "debtor_number"])
    def test_a_line_break_inside_a_one_line_field_is_refused(self, field: str) -> None:
        """A line break inside an address line (or any one-line field) is refused."""
        error = refusal(**{field: "Storgata 1\nPostboks 7"})

        assert error.field == field
        assert "U+000A" in error.reason

    def test_a_description_keeps_its_tabs_and_line_breaks(self) -> None:
        """A description may run over several lines, as invoice texts do."""
        text = "Strøm, januar\r\nNettleie:\t400,00"

        invoice = Invoice.from_record(record(description=text))

        assert invoice.description == text

    @pytest.mark.parametrize("char", ["\x00", "\x0b", "\x0c", "\x1b"])
    def test_a_description_refuses_other_control_characters(self, char: str) -> None:
        """NUL and the other control characters are refused in a description too: a NUL
        would otherwise pass into the JSON sent to Kravia."""
        error = refusal(description=f"\x00decimal0{char}")

        assert error.field == "description"


class TestPaymentRecords:
    PAYMENT: ClassVar[dict[str, Any]] = {
        "payment_id": "P-1",
        "date": "2025-03-01",
        "amount": "100.00",
        "invoice_number": "20003",
    }

    @pytest.mark.parametrize("field", sorted(PAYMENT_FIELD_LIMITS))
    def test_a_text_sent_to_kravia_over_its_bound_is_refused(self, field: str) -> None:
        """The payment's id and description, which Kravia is sent, are bounded too."""
        limit = PAYMENT_FIELD_LIMITS[field]

        with pytest.raises(InvalidRecordError) as info:
            Payment.from_record({**self.PAYMENT, field: "x" * (limit + 1)})

        assert info.value.field == field
        assert f"at most {limit:,} are accepted" in info.value.reason

    @pytest.mark.parametrize("field", sorted(PAYMENT_FIELD_LIMITS))
    def test_a_text_at_its_bound_is_accepted(self, field: str) -> None:
        """At the bound the payment is valid."""
        value = "x" * PAYMENT_FIELD_LIMITS[field]

        payment = Payment.from_record({**self.PAYMENT, field: value})

        assert getattr(payment, field) == value

    def test_the_payment_id_is_measured_with_the_id_prefix(self) -> None:
        """The AccountingPaymentId sent carries the source's prefix."""
        limit = PAYMENT_FIELD_LIMITS["payment_id"]

        with pytest.raises(InvalidRecordError) as info:
            Payment.from_record({**self.PAYMENT, "payment_id": "x" * limit}, id_prefix="erp-")

        assert info.value.field == "payment_id"

    def test_a_control_character_in_the_description_is_refused(self) -> None:
        """A NUL in a payment's description is refused like one in an invoice's."""
        with pytest.raises(InvalidRecordError) as info:
            Payment.from_record({**self.PAYMENT, "description": "Innbetaling\x00"})

        assert info.value.field == "description"
        assert "U+0000" in info.value.reason


class TestDocumented:
    @pytest.mark.parametrize("field", sorted(INVOICE_FIELD_LIMITS))
    def test_each_bound_is_in_the_documentation_as_in_the_code(self, field: str) -> None:
        """The table of bounds in the documentation names each field with the code's bound."""
        root = Path(__file__).resolve().parent.parent
        pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
        text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
        row = rf"^\|[^|\n]*`{field}`[^|\n]*\| {INVOICE_FIELD_LIMITS[field]} \|"

        assert re.search(row, text, re.MULTILINE), f"no documented bound for {field}"


# -- end to end: a folder source ------------------------------------------------------------


def quarantined(config: Path) -> dict[str, dict[str, Any]]:
    store = StateStore(load(config).state_path)
    try:
        return {entry["record_key"]: entry for entry in store.quarantined()}
    finally:
        store.close()


def register_calls(sim: Sim) -> int:
    return sum(sim.simulator.calls()["register"].values())


class TestFolderSourceEndToEnd:
    @pytest.mark.parametrize(
        ("changes", "field", "said"),
        [
            ({"debtor_name": LONG_NAME}, "debtor_name", "10,000 characters long; at most 200"),
            ({"debtor_name": "Kunde\x00 3"}, "debtor_name", "U+0000 at character 6"),
            ({"address_line1": "Gate 1\x1b[2J"}, "address_line1", "U+001B at character 7"),
            # JSON can carry half a UTF-16 pair ("\ud800"), which no UTF-8 text can hold.
            ({"city": "Os\ud800lo"}, "city", "U+D800 (half of a UTF-16 pair"),
        ],
    )
    def test_the_bad_record_is_quarantined_and_the_others_are_sent(
        self, sim: Sim, tmp_path: Path, changes: dict[str, str], field: str, said: str
    ) -> None:
        """The pass reports the record with its field, sends nothing for it, sends the rest,
        and keeps it quarantined until the source corrects it."""
        folder = tmp_path / "invoices"
        folder.mkdir()
        records = [invoice_record(n, **(changes if n == 3 else {})) for n in range(1, 6)]
        (folder / "a.json").write_text(json.dumps(records), encoding="utf-8")
        config = write_config(tmp_path, sim.base_url)

        first = run_pass(config)
        again = run_pass(config)

        assert [(p["record"], p["field"]) for p in first.problems] == [("a.json:3", field)]
        assert said in first.problems[0]["reason"]
        assert sorted(case["accountingInvoiceId"] for case in sim.cases()) == ["1", "2", "4", "5"]
        assert register_calls(sim) == 4, "nothing is sent for the refused record"
        assert quarantined(config)["a.json:3"]["field"] == field
        assert again.problems == first.problems
        assert register_calls(sim) == 4
        records[2] = invoice_record(3)
        (folder / "a.json").write_text(json.dumps(records), encoding="utf-8")

        fixed = run_pass(config)

        assert fixed.status == "done", fixed.as_dict()
        assert len(sim.cases()) == 5

    @pytest.mark.parametrize("field", ["invoice_number", "accounting_invoice_id"])
    def test_half_a_surrogate_pair_in_an_id_is_quarantined_not_a_crash(
        self, sim: Sim, tmp_path: Path, field: str
    ) -> None:
        """The id (and so the record's key) holds what UTF-8 cannot: the pass goes on, the
        record is kept in the quarantine under a key shown with U+FFFD, the rest is sent."""
        folder = tmp_path / "invoices"
        folder.mkdir()
        records = [invoice_record(n) for n in range(1, 4)]
        records[1][field] = "2\ud800x"
        (folder / "a.json").write_text(json.dumps(records), encoding="utf-8")
        config = write_config(tmp_path, sim.base_url)

        first = run_pass(config)
        again = run_pass(config)

        assert first.error is None
        assert [p["field"] for p in first.problems] == [field]
        assert "U+D800" in first.problems[0]["reason"]
        assert sorted(case["accountingInvoiceId"] for case in sim.cases()) == ["1", "3"]
        (entry,) = quarantined(config).values()
        assert "\ufffd" in entry["record_key"] or entry["record_key"] == "a.json:2"
        assert again.problems == first.problems


# -- end to end: the SQL source on the real servers ----------------------------------------


def sql_config(tmp_path: Path, sim: Sim, backend: Backend) -> Path:
    """A configuration whose one source is the fixture's query on `backend`."""
    config = write_config(tmp_path, sim.base_url)
    head = config.read_text(encoding="utf-8").split("[[sources]]")[0]
    settings = {
        "url": backend.url,
        "query": backend.sql(QUERY, extra=""),
        "document_query": backend.sql(DOCUMENT_QUERY),
    }
    lines = ["[[sources]]", 'name = "erp"', 'connector = "sql"', "[sources.settings]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    lines.append("[sources.settings.columns]")
    lines += [f"{key} = {json.dumps(value)}" for key, value in COLUMNS.items()]
    config.write_text(head + "\n".join(lines) + "\n", encoding="utf-8")
    return config


def widen_customer_names(backend: Backend) -> None:
    """The fixture's names are VARCHAR(200): room for the 10,000-character one."""
    if backend.name == "postgresql":
        statement = "ALTER TABLE {customers} ALTER COLUMN name TYPE TEXT"
    else:
        statement = "ALTER TABLE {customers} MODIFY name TEXT NOT NULL"
    backend.execute(backend.sql(statement))


# Customer 3 owes invoices 20003 and 20007 (the SQL source's record keys name them so).
CUSTOMER_3_INVOICES = {"20003", "20007"}
CUSTOMER_3_RECORDS = {f"invoice {number}" for number in CUSTOMER_3_INVOICES}


@dataclass(frozen=True)
class BadColumn:
    """A value written into customer 3's row, and what the pass must say about it."""

    column: str
    value: str
    field: str
    said: str


BAD_COLUMNS = [
    BadColumn("name", LONG_NAME, "debtor_name", "10,000 characters long; at most 200"),
    BadColumn("street", "Løkkeveien 3\x1b[2J", "address_line1", "U+001B at character 13"),
]


class TestSqlSourceEndToEnd:
    @pytest.mark.parametrize("bad", BAD_COLUMNS, ids=lambda bad: bad.field)
    def test_a_customer_row_over_a_bound_quarantines_its_invoices_only(
        self, server_db: Backend, sim: Sim, tmp_path: Path, bad: BadColumn
    ) -> None:
        """A value the database holds over a bound quarantines each invoice of that customer
        naming the field; nothing is sent for them, every other invoice is."""
        widen_customer_names(server_db)
        server_db.execute(
            server_db.sql(f"UPDATE {{customers}} SET {bad.column} = :value WHERE id = 3"),
            {"value": bad.value},
        )
        config = sql_config(tmp_path, sim, server_db)

        summary = run_pass(config)

        refused = {p["record"]: p for p in summary.problems}
        assert sorted(refused) == sorted({*CUSTOMER_3_RECORDS, f"invoice {BAD_INVOICE}"})
        del refused[f"invoice {BAD_INVOICE}"]  # the fixture's own bad row, as ever
        for problem in refused.values():
            assert problem["field"] == bad.field
            assert bad.said in problem["reason"]
        expected = sorted(set(SENT_INVOICES) - CUSTOMER_3_INVOICES)
        assert sorted(case["invoiceNo"] for case in sim.cases()) == expected
        assert register_calls(sim) == len(expected)
        stored = quarantined(config)
        assert {stored[key]["field"] for key in CUSTOMER_3_RECORDS} == {bad.field}
