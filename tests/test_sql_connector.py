# ruff: noqa: S608 - the tests build SQL from their own table names and constants only
"""The sql connector against real PostgreSQL and MariaDB servers and SQLite.

Every backend gets the same schema and rows (`sql_fixture`); the end-to-end tests run passes of
the engine into the Kravia simulator over HTTP. An unreachable server skips its tests, except
under CI (`CI=true`), where it fails them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import sys
import threading
import time
import tomllib
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import structlog
from sql_fixture import (
    BACKENDS,
    BAD_INVOICE,
    COLUMNS,
    CUSTOMERS,
    INVOICES,
    PAID_INVOICE,
    PDFS,
    QUERY,
    SENT_INVOICES,
    SERVER_BACKENDS,
    WAITING_INVOICE,
    Backend,
    connector,
    expected_cases,
    fixture_settings,
    open_backend,
    records,
    sql_config,
)
from support import Sim, cli_env, load, run_cli, run_pass

import kravia_sync.engine.reading as reading_module
from connectors.sql import EXAMPLE_SETTINGS, SqlConnector, SqlSettings, parse_money_text
from connectors.sql._postgres import PostgresStampedRead
from connectors.sql._server import driver_connect_args, statement_limit
from kravia_sync.connector import ConnectorError, RecordStamp, SourceRecord, StampedRead
from kravia_sync.engine.plan import Change, assess, source_id
from kravia_sync.engine.worklist import WorkItem, WorkList
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import Invoice, parse_date
from kravia_sync.state.store import StateStore

# A password that is easy to find in any output, with characters a URL must escape.
PASSWORD = "Hemmelig-Æ@pw/7%Zq"
PASSWORD_IN_URL = quote(PASSWORD, safe="")


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The fixture schema and rows in each backend in turn."""
    with open_backend(request.param, tmp_path) as backend:
        yield backend


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Backend]:
    with open_backend("sqlite", tmp_path) as backend:
        yield backend


# -- helpers -------------------------------------------------------------------------------


def quarantined(config: Path) -> dict[str, dict[str, Any]]:
    store = StateStore(load(config).state_path)
    try:
        return {entry["record_key"]: entry for entry in store.quarantined()}
    finally:
        store.close()


def files_text(directory: Path) -> str:
    """Everything under `directory` (the state store with its WAL), as text."""
    return "".join(
        path.read_bytes().decode("utf-8", "replace")
        for path in directory.rglob("*")
        if path.is_file()
    )


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, PASSWORD_IN_URL):
            assert secret not in text, f"the password appears in: {text[:2000]}"


# -- end to end, the same in every backend -------------------------------------------------


class TestSameCasesEverywhere:
    def test_every_backend_registers_the_same_cases_with_their_copies(
        self, db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """The fixture rows become the same Kravia cases (exact amounts, dates, æøå) in each
        database; PDFs arrive byte for byte; the bad row is quarantined naming its field."""
        config = sql_config(tmp_path, sim, fixture_settings(db))

        summary = run_pass(config)

        assert summary.sources[0].status == "ok", summary.as_dict()
        cases = sorted(sim.cases(), key=lambda case: case["invoiceNo"])
        got = [
            {
                "invoiceNo": case["body"]["invoiceNo"],
                "accountingInvoiceId": case["body"]["accountingInvoiceId"],
                "originalAmount": Decimal(str(case["body"]["originalAmount"])),
                "debtorName": case["body"]["debtorName"],
                "invoiceDate": case["body"]["invoiceDate"],
                "dueDate": case["body"]["dueDate"],
            }
            for case in cases
        ]
        assert got == expected_cases()
        assert all(case["started"] for case in cases)
        by_number = {case["invoiceNo"]: case for case in cases}
        assert by_number["20003"]["body"]["email"] is None  # NULL email passes
        assert by_number["20002"]["body"]["organizationNumber"] == "923609016"
        assert by_number["20002"]["body"]["postalAddress"]["addressAddressLine2"] == "Postboks 7"
        assert by_number["20008"]["body"]["description"] == "Øl, æbler og ål"
        for number, case in by_number.items():
            if number in PDFS:
                (document,) = case["documents"]
                assert document["sha256"] == hashlib.sha256(PDFS[number]).hexdigest()
                assert sim.simulator.document_bytes(case["id"], 0) == PDFS[number]
            else:
                assert case["documents"] == []
        problems = {problem["record"]: problem for problem in summary.problems}
        assert problems[f"invoice {BAD_INVOICE}"]["field"] == "organization_number"
        stored = quarantined(config)
        assert stored[f"invoice {BAD_INVOICE}"]["field"] == "organization_number"
        assert stored[f"invoice {WAITING_INVOICE}"]["kind"] == "waiting"
        assert f"invoice {PAID_INVOICE}" not in stored
        assert summary.counts["read"] == len(INVOICES) - 1  # the paid one is not returned

    def test_a_second_pass_is_silent_and_an_updated_amount_is_a_change(
        self, db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """Nothing changed: zero remote calls. One row's amount updated in the database: one
        `changed`, no new case, still no call."""
        config = sql_config(tmp_path, sim, fixture_settings(db))
        run_pass(config)
        before = sim.calls_total()

        second = run_pass(config)

        assert sim.calls_total() == before
        assert sum(second.remote_calls.values()) == 0
        assert second.counts["unchanged"] == len(SENT_INVOICES)

        db.set_balance("20001", Decimal("13000.00"))
        third = run_pass(config)

        assert third.counts["changed"] == 1
        assert third.counts.get("new", 0) == 0
        assert sim.calls_total() == before
        assert len(sim.cases()) == len(SENT_INVOICES)


# -- payments ------------------------------------------------------------------------------


PAYMENTS_QUERY = """
SELECT p.payment_no AS payment_id, p.kind, p.paid_on AS date, p.amount,
       i.invoice_no AS invoice_number
FROM {payments} p JOIN {invoices} i ON i.id = p.invoice_id
"""


class TestPaymentsQuery:
    def test_payments_and_credit_notes_reach_kravia_once(
        self, db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """With a payments query the source reports payments as records: one paid after the
        invoice went to Kravia is forwarded once, exact to the øre; later passes send none."""
        payments = db.tables["invoices"].replace("invoices", "payments")
        amount = "DECIMAL(12,2)" if db.name != "sqlite" else "NUMERIC"
        db.execute(
            f"CREATE TABLE {payments} (payment_no VARCHAR(20) PRIMARY KEY, invoice_id INTEGER "
            f"NOT NULL, kind VARCHAR(20) NOT NULL, paid_on DATE NOT NULL, amount {amount} NOT NULL)"
        )
        db.cleanup.append(f"DROP TABLE IF EXISTS {payments}")
        query = PAYMENTS_QUERY.format(payments=payments, invoices=db.tables["invoices"])
        config = sql_config(tmp_path, sim, fixture_settings(db, payments_query=query))
        run_pass(config)
        capital = {case["invoiceNo"]: Decimal(str(case["remainingAmount"])) for case in sim.cases()}
        db.execute(
            f"INSERT INTO {payments} VALUES ('INN-1', 1, 'payment', :d, :a)",
            {"d": date(2026, 11, 20), "a": Decimal("1000.10")},
        )
        db.execute(
            f"INSERT INTO {payments} VALUES ('KN-2', 2, 'credit_note', :d, :a)",
            {"d": date(2026, 11, 21), "a": Decimal("250.00")},
        )

        second = run_pass(config)
        third = run_pass(config)

        sent = sorted(
            (p["accountingPaymentId"], p["type"])
            for p in sim.simulator.payments()
            if p["accountingPaymentId"]
        )
        assert sent == [("INN-1", "Payment"), ("KN-2", "CreditNote")]
        after = {case["invoiceNo"]: Decimal(str(case["remainingAmount"])) for case in sim.cases()}
        assert after["20001"] == capital["20001"] - Decimal("1000.10")
        assert after["20002"] == capital["20002"] - Decimal("250.00")
        assert second.counts["payments_sent"] == 2
        assert sum(third.remote_calls.values()) == 0

    def test_a_payments_query_missing_a_column_fails_the_read(
        self, sqlite_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        query = "SELECT invoice_no AS payment_id, invoice_no AS invoice_number FROM invoices"
        config = sql_config(tmp_path, sim, fixture_settings(sqlite_db, payments_query=query))

        summary = run_pass(config)

        assert summary.status == "failed"
        error = summary.sources[0].error or ""
        assert "'date'" in error
        assert "'amount'" in error
        assert summary.counts["gone"] == 0


# -- failures of the source ----------------------------------------------------------------


class TestFailures:
    def test_a_query_missing_a_required_column_fails_before_any_row(
        self, db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        query = db.sql(QUERY, extra="").replace("c.city,", "")
        config = sql_config(tmp_path, sim, fixture_settings(db, query=query))

        summary = run_pass(config)

        assert summary.status == "failed"
        (source,) = summary.sources
        assert source.status == "failed"
        assert source.error is not None
        assert "'city'" in source.error
        assert "no row was read" in source.error
        assert summary.counts.get("read", 0) == 0
        assert sim.calls_total() == 0
        assert quarantined(config) == {}

    def test_a_mapped_column_that_is_absent_is_named(
        self, sqlite_db: Backend, tmp_path: Path
    ) -> None:
        made = connector(sqlite_db, tmp_path, columns={**COLUMNS, "amount": "beløp"})
        with pytest.raises(ConnectorError, match=r"'amount' \(column 'beløp'\)"):
            next(made.read())

    def test_a_query_failing_half_way_fails_the_source_and_nothing_is_gone(
        self, db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """The database fails after some rows were read: the source is failed, no case is
        taken as gone, and the next good read finds everything unchanged."""
        boom = {
            "postgresql": ", CASE WHEN i.id = 7 THEN 1 / (i.id - 7) ELSE 0 END AS boom",
            "mariadb": ", CASE WHEN i.id = 7 THEN (SELECT 1 UNION ALL SELECT 2) ELSE 0 END AS boom",
            "sqlite": ", CASE WHEN i.id = 7 THEN json_extract('not json', '$') ELSE 0 END AS boom",
        }[db.name]
        failing = db.sql(QUERY, extra=boom)
        if db.name == "mariadb":  # MariaDB evaluates before sorting: let rows flow first
            failing = failing.replace("JOIN", "STRAIGHT_JOIN", 1).replace("ORDER BY i.id", "")
        config = sql_config(tmp_path, sim, fixture_settings(db))
        run_pass(config)
        before = sim.calls_total()
        reading = connector(db, tmp_path, query=failing, fetch_size=2).read()
        assert next(reading) is not None  # rows come before the failure: it is half-way
        with pytest.raises(ConnectorError, match=r"the query failed after [1-9][0-9]* rows"):
            list(reading)

        failed = run_pass(sql_config(tmp_path, sim, fixture_settings(db, query=failing)))

        assert failed.status == "failed"
        assert failed.sources[0].status == "failed"
        assert failed.counts.get("gone", 0) == 0
        assert sim.calls_total() == before
        again = run_pass(sql_config(tmp_path, sim, fixture_settings(db)))
        assert again.counts["unchanged"] == len(SENT_INVOICES)
        assert again.counts.get("gone", 0) == 0
        assert sim.calls_total() == before

    def test_a_write_the_parser_cannot_see_is_refused_by_the_database(
        self, db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """The second wall: a SELECT that calls a function which writes passes the parser (it
        cannot see into the function), and the read-only session refuses the write; the
        source fails with the database's own refusal and the row is unchanged. SQLite has no
        functions written in SQL: there an UPDATE sent over the connector's own connection,
        past the parser, is refused the same way."""
        original = db.balance("20001")
        columns = (
            "invoice_no AS invoice_number, invoice_date, due_date, balance AS amount, "
            "'Kunde' AS debtor_name, "
            "'Gate 1' AS address_line1, '0150' AS postal_code, 'Oslo' AS city"
        )
        bump = db.sql("ks_bump_{invoices}")
        if db.name == "sqlite":
            made = connector(db, tmp_path, document_query=None)
            connection = made._database.connect()
            try:
                with pytest.raises(sa.exc.OperationalError, match="readonly database"):
                    connection.execute(
                        sa.text(db.sql("UPDATE {invoices} SET balance = 1 WHERE id = 1"))
                    )
            finally:
                made.close_connection(connection)
            assert db.balance("20001") == original
            return
        if db.name == "postgresql":
            db.execute(
                db.sql(
                    f"CREATE FUNCTION {bump}(n VARCHAR) RETURNS INTEGER LANGUAGE sql AS $$ "
                    "UPDATE {invoices} SET balance = 1 WHERE invoice_no = n; SELECT 1 $$"
                )
            )
            db.cleanup.append(f"DROP FUNCTION IF EXISTS {bump}(VARCHAR)")
            refusal = "read-only transaction"
        else:
            db.execute(
                db.sql(
                    f"CREATE FUNCTION {bump}(n VARCHAR(20)) RETURNS INTEGER MODIFIES SQL DATA "
                    "BEGIN UPDATE {invoices} SET balance = 1 WHERE invoice_no = n; RETURN 1; END"
                )
            )
            db.cleanup.append(f"DROP FUNCTION IF EXISTS {bump}")
            refusal = "READ ONLY transaction"
        query = db.sql(f"SELECT {columns}, {bump}(invoice_no) AS bumped FROM {{invoices}}")
        settings = fixture_settings(db, query=query, document_query=None, columns=None)
        summary = run_pass(sql_config(tmp_path, sim, settings))

        assert summary.status == "failed", query
        error = summary.sources[0].error
        assert error is not None
        assert refusal in error, error
        assert db.balance("20001") == original
        assert sim.calls_total() == 0


# -- streaming -----------------------------------------------------------------------------


class TestStreaming:
    def test_rows_are_streamed_through_a_server_side_cursor(
        self, db: Backend, tmp_path: Path
    ) -> None:
        """read() is a generator; the query runs with stream_results (PostgreSQL: a named
        cursor, MariaDB: an unbuffered one) and a small fetch_size still reads every row."""
        executed: list[tuple[str, object, Any]] = []

        def spy(*args: Any) -> None:
            _conn, cursor, statement, _params, context, _many = args
            options = context.execution_options if context is not None else {}
            executed.append((statement, options.get("stream_results"), cursor))

        sa.event.listen(sa.engine.Engine, "before_cursor_execute", spy)
        try:
            made = connector(db, tmp_path, fetch_size=2)
            reading = made.read()
            assert isinstance(reading, Iterator)
            assert executed == []  # nothing runs before the first record is asked for
            count = sum(1 for _ in reading)
        finally:
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", spy)

        assert count == len(INVOICES) - 1
        runs = [item for item in executed if "has_document" in item[0]]
        (query,) = [item for item in runs if item[1] is True]
        # Besides, PostgreSQL's columns are looked at first without running the query.
        assert all(item[0].endswith("LIMIT 0") for item in runs if item is not query)
        assert len(runs) == (2 if db.name == "postgresql" else 1)
        cursor = query[2]
        if db.name == "postgresql":
            assert getattr(cursor, "name", None), "not a server-side (named) cursor"
        elif db.name == "mariadb":
            assert type(cursor).__name__ == "SSCursor"

    def test_memory_does_not_grow_with_the_rows(self, db: Backend, tmp_path: Path) -> None:
        """30 000 generated rows are read with a small, bounded amount of Python memory."""
        digits = " UNION ALL ".join(f"SELECT {n} AS n" for n in range(10))
        query = f"""
            WITH d AS ({digits})
            SELECT a.n + 10 * b.n + 100 * c.n + 1000 * e.n + 10000 * f.n + 1 AS invoice_number,
                   '2025-01-01' AS invoice_date, '2025-01-15' AS due_date,
                   CAST('1234.50' AS DECIMAL(12, 2)) AS amount,
                   'Kunde Ødegård med et langt navn for å bruke litt minne' AS debtor_name,
                   'Storgata 1' AS address_line1, '0150' AS postal_code, 'Oslo' AS city
            FROM d a CROSS JOIN d b CROSS JOIN d c CROSS JOIN d e
            CROSS JOIN (SELECT n FROM d WHERE n < 3) f
        """
        made = connector(
            db, tmp_path, query=query, columns=None, document_query=None, fetch_size=500
        )
        tracemalloc.start()
        try:
            count = 0
            for item in made.read():
                count += 1
                del item
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert count == 30_000
        assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while reading {count} rows"


# -- digests -------------------------------------------------------------------------------


def digests(made: SqlConnector) -> dict[str, str | None]:
    return {record.key: record.digest for record in records(made)}


class TestDigest:
    """Each record carries a digest of its whole row: the engine skips revalidating a record
    whose digest it has stored, so it must change with any column and stay put otherwise."""

    def test_stable_across_reads_and_connectors(self, db: Backend, tmp_path: Path) -> None:
        first = digests(connector(db, tmp_path))

        assert digests(connector(db, tmp_path)) == first
        assert None not in first.values()
        assert len(set(first.values())) == len(first)

    def test_any_column_changes_it_even_one_not_mapped(self, db: Backend, tmp_path: Path) -> None:
        """`due_text` is returned but feeds no field; a NULL that becomes the text 'None'
        is a change too."""
        query = db.sql(QUERY, extra=", i.due_text")
        before = digests(connector(db, tmp_path, query=query))

        db.execute(
            db.sql("UPDATE {invoices} SET due_text = '1999-01-01' WHERE invoice_no = '20001'")
        )
        db.execute(db.sql("UPDATE {customers} SET email = 'None' WHERE id = 3"))
        after = digests(connector(db, tmp_path, query=query))

        changed = sorted(key for key in before if before[key] != after[key])
        # Customer 3 has two invoices.
        assert changed == ["invoice 20001", "invoice 20003", "invoice 20007"]

    def test_the_mapping_is_part_of_it(self, db: Backend, tmp_path: Path) -> None:
        """The same rows read without a document query (so without documents) or with
        another column mapping digest differently."""
        plain = digests(connector(db, tmp_path))
        without_documents = digests(connector(db, tmp_path, document_query=None))
        remapped = digests(connector(db, tmp_path, columns={**COLUMNS, "description": "currency"}))

        assert set(plain.values()).isdisjoint(without_documents.values())
        assert set(plain.values()).isdisjoint(remapped.values())


# -- the two-phase read on PostgreSQL ------------------------------------------------------


def stamps_of(read: StampedRead) -> list[RecordStamp]:
    stamps = []
    for item in read.stamps():
        assert isinstance(item, RecordStamp), item
        stamps.append(item)
    return stamps


def phase_two_statements(executed: list[str]) -> list[str]:
    return [statement for statement in executed if "= ANY(" in statement]


@pytest.fixture
def executed() -> Iterator[list[str]]:
    """The statements SQLAlchemy sends (the stamps of phase one go to the driver directly)."""
    seen: list[str] = []

    def spy(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", spy)
    yield seen
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", spy)


class TestStampedRead:
    """On PostgreSQL the engine first reads a stamp per row (ids, server-side row hash) and
    builds full records only for the rows that need a look, all in one snapshot."""

    def test_only_postgresql_offers_it_and_stamps_match_the_records(
        self, db: Backend, tmp_path: Path
    ) -> None:
        stamped = connector(db, tmp_path).stamped_read()
        if db.name != "postgresql":
            assert stamped is None
            return
        assert stamped is not None
        plain = records(connector(db, tmp_path))
        with stamped:
            stamps = stamps_of(stamped)
            again = list(stamped.records([stamps[1], stamps[3]]))

        assert [stamp.key for stamp in stamps] == [record.key for record in plain]
        for stamp, record in zip(stamps, plain, strict=True):
            assert stamp.digest == record.digest
            assert stamp.has_document == (record.document is not None)
            assert source_id(stamp.fields, "x-") == source_id(record.fields, "x-")
        assert sorted((r.key, r.digest, dict(r.fields)) for r in again) == sorted(
            (r.key, r.digest, dict(r.fields)) for r in (plain[1], plain[3])
        )

    def test_both_phases_see_one_snapshot(self, pg_db: Backend, tmp_path: Path) -> None:
        """A balance committed by someone else between the phases is not seen by the second:
        the record matches its stamp."""
        stamped = connector(pg_db, tmp_path).stamped_read()
        assert stamped is not None
        with stamped:
            stamps = {stamp.key: stamp for stamp in stamps_of(stamped)}
            before = pg_db.balance("20001")
            pg_db.set_balance("20001", Decimal("1.00"))
            (record,) = stamped.records([stamps["invoice 20001"]])

        assert record.fields["amount"] == before
        assert record.digest == stamps["invoice 20001"].digest
        changed = digests(connector(pg_db, tmp_path))["invoice 20001"]
        assert changed != record.digest

    def test_a_pass_builds_only_the_records_that_changed(
        self,
        pg_db: Backend,
        sim: Sim,
        tmp_path: Path,
        executed: list[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        built: list[str] = []
        build = SqlConnector.record

        def counting(self: SqlConnector, *args: Any) -> SourceRecord:
            record = build(self, *args)
            built.append(record.key)
            return record

        monkeypatch.setattr(SqlConnector, "record", counting)
        config = sql_config(tmp_path, sim, fixture_settings(pg_db))
        first = run_pass(config)
        assert first.counts["new"] == len(SENT_INVOICES)
        assert len(phase_two_statements(executed)) == 1
        calls = sim.calls_total()
        built.clear()
        executed.clear()

        second = run_pass(config)

        # Only the rows without a case are built again (a quarantined and a waiting one:
        # they are judged afresh on every pass), in one statement.
        not_sent = [f"invoice {BAD_INVOICE}", f"invoice {WAITING_INVOICE}"]
        assert sorted(built) == sorted(not_sent)
        assert len(phase_two_statements(executed)) == 1
        assert second.counts["unchanged"] == len(SENT_INVOICES)
        assert sim.calls_total() == calls

        built.clear()
        pg_db.set_balance("20001", Decimal("13000.00"))
        third = run_pass(config)

        assert sorted(built) == sorted([*not_sent, "invoice 20001"])
        assert third.counts["changed"] == 1
        assert sim.calls_total() == calls

    def test_batches_of_full_rows_are_fetched_while_the_stamps_stream(
        self, pg_db: Backend, sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Tiny chunks and batches: the second phase runs again and again while the first
        phase's server-side cursor is still open, in the same transaction; the cases are those
        of a plain read."""
        monkeypatch.setattr(reading_module, "READ_CHUNK", 2)
        monkeypatch.setattr(reading_module, "STAMPED_BATCH", 2)
        monkeypatch.setattr(reading_module, "STAMPED_MAX_BATCHES", 100)
        config = sql_config(tmp_path, sim, fixture_settings(pg_db, fetch_size=1))

        summary = run_pass(config)

        assert summary.sources[0].status == "ok", summary.sources[0].error
        assert summary.counts["new"] == len(SENT_INVOICES)
        assert len(sim.cases()) == len(SENT_INVOICES)
        stored = quarantined(config)
        assert stored[f"invoice {BAD_INVOICE}"]["field"] == "organization_number"
        assert stored[f"invoice {WAITING_INVOICE}"]["kind"] == "waiting"

    def test_a_column_the_server_cannot_hash_is_read_whole(
        self, pg_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """A json column has no hash in PostgreSQL: no stamped read, rows digested here."""
        query = pg_db.sql(QUERY, extra=", CAST('{\"a\": 1}' AS json) AS extra")
        settings = fixture_settings(pg_db, query=query)
        assert connector(pg_db, tmp_path, query=query).stamped_read() is None
        config = sql_config(tmp_path, sim, settings)
        run_pass(config)
        calls = sim.calls_total()

        again = run_pass(config)

        assert again.counts["unchanged"] == len(SENT_INVOICES)
        assert sim.calls_total() == calls

    def test_a_query_that_cannot_be_a_subquery_runs_as_written(
        self, pg_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """A semicolon and then a comment end the query: it cannot be wrapped, so it runs as
        written (one phase, digested here), with the same cases."""
        query = pg_db.sql(QUERY, extra="") + ";  -- the end"
        assert connector(pg_db, tmp_path, query=query).stamped_read() is None
        config = sql_config(tmp_path, sim, fixture_settings(pg_db, query=query))

        first = run_pass(config)
        calls = sim.calls_total()
        second = run_pass(config)

        assert first.sources[0].status == "ok", first.sources[0].error
        assert first.counts["new"] == len(SENT_INVOICES)
        assert second.counts["unchanged"] == len(SENT_INVOICES)
        assert sim.calls_total() == calls

    def test_the_session_time_zone_is_part_of_the_digest(
        self, pg_db: Backend, tmp_path: Path
    ) -> None:
        """A timestamptz hashes as an instant but reaches the record in the session's zone:
        another zone must digest differently."""
        query = pg_db.sql(QUERY, extra=", CAST('2026-01-01 23:30:00+00' AS timestamptz) AS at")
        oslo = digests(connector(pg_db, tmp_path, query=query))
        tokyo_url = f"{pg_db.url}?options=-c%20TimeZone%3DAsia/Tokyo"
        tokyo = digests(connector(pg_db, tmp_path, query=query, url=tokyo_url))

        assert oslo.keys() == tokyo.keys()
        assert set(oslo.values()).isdisjoint(tokyo.values())

    def test_a_case_insensitive_collation_turns_the_server_hash_off(
        self, pg_db: Backend, tmp_path: Path
    ) -> None:
        """Under a nondeterministic collation text hashes ignoring case: with one in the
        database, rows are digested here (where a change of case is seen)."""
        collation = pg_db.sql("ks_ci_{invoices}")
        pg_db.execute(
            f"CREATE COLLATION {collation} "
            "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
        )
        try:
            assert connector(pg_db, tmp_path).stamped_read() is None
            digested = digests(connector(pg_db, tmp_path))
            assert all(len(digest or "") == 32 for digest in digested.values())  # blake2b here
        finally:
            pg_db.execute(f"DROP COLLATION IF EXISTS {collation}")
        stamped = connector(pg_db, tmp_path).stamped_read()
        assert stamped is not None
        stamped.close()

    def test_a_volatile_query_falls_back_to_a_whole_read(
        self, pg_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """clock_timestamp() differs between the phases: the pass reads the source whole and
        registers each invoice once; the next pass sends nothing."""
        query = pg_db.sql(QUERY, extra=", clock_timestamp() AS read_at")
        config = sql_config(tmp_path, sim, fixture_settings(pg_db, query=query))

        with structlog.testing.capture_logs() as logs:
            first = run_pass(config)
        calls = sim.calls_total()
        second = run_pass(config)

        assert any("reading the source whole" in line["event"] for line in logs), logs
        assert first.sources[0].status == second.sources[0].status == "ok"
        assert first.counts["new"] == len(SENT_INVOICES)
        assert len(sim.cases()) == len(SENT_INVOICES)
        assert second.counts.get("new", 0) == 0
        assert sim.calls_total() == calls


# -- types ---------------------------------------------------------------------------------


class TestTypes:
    def test_values_arrive_exactly(self, db: Backend, tmp_path: Path) -> None:
        """NUMERIC → exact Decimal; DATE, DATETIME and ISO text → the same dates; æøå intact;
        NULL leaves the field out; :today is bound (the future invoice is filtered out)."""
        query = db.sql(QUERY, extra=", i.due_text").replace(
            "WHERE i.balance > 0", "WHERE i.balance > 0 AND i.due_date < :today"
        )
        made = connector(db, tmp_path, query=query, columns={**COLUMNS, "due_date": "due_text"})

        got = {str(record.fields["invoice_number"]): record for record in records(made)}

        assert WAITING_INVOICE not in got
        assert PAID_INVOICE not in got
        customers = {row[0]: row for row in CUSTOMERS}
        for fixture in INVOICES:
            if fixture.invoice_no in {WAITING_INVOICE, PAID_INVOICE}:
                continue
            fields = got[fixture.invoice_no].fields
            amount = fields["amount"]
            assert isinstance(amount, Decimal | int), type(amount)
            assert Decimal(amount) == fixture.balance
            assert isinstance(fields["due_date"], str)  # the ISO text column
            assert parse_date(fields["due_date"]) == fixture.due_date
            assert parse_date(fields["invoice_date"]) == fixture.invoice_date.date()
            assert fields["debtor_name"] == customers[fixture.customer_id][2]
            assert fields.get("debtor_email") == customers[fixture.customer_id][3]
            if fixture.invoice_no != BAD_INVOICE:
                invoice = Invoice.from_record(fields)
                assert invoice.amount == fixture.balance
                assert str(invoice.amount) == str(fixture.balance)
        assert got["20003"].fields.get("debtor_email") is None  # NULL: not given
        if db.name != "sqlite":
            assert isinstance(got["20001"].fields["amount"], Decimal)
            assert type(got["20001"].fields["invoice_date"]).__name__ == "datetime"

    @pytest.mark.parametrize("backend", SERVER_BACKENDS)
    def test_a_float_column_quarantines_the_row(
        self, backend: str, sim: Sim, tmp_path: Path
    ) -> None:
        """FLOAT/DOUBLE is never money: the row is quarantined with a reason about floats."""
        cast = {"postgresql": "DOUBLE PRECISION", "mariadb": "DOUBLE"}[backend]
        with open_backend(backend, tmp_path) as db:
            query = db.sql(QUERY, extra=f", CAST(i.balance AS {cast}) AS float_amount")
            query = query.replace("WHERE i.balance > 0", "WHERE i.invoice_no = '20001'")
            settings = fixture_settings(
                db, query=query, columns={**COLUMNS, "amount": "float_amount"}
            )
            config = sql_config(tmp_path, sim, settings)

            summary = run_pass(config)

        (problem,) = summary.problems
        assert problem["record"] == "invoice 20001"
        assert problem["field"] == "amount"
        assert "float" in problem["reason"]
        assert quarantined(config)["invoice 20001"]["field"] == "amount"
        assert sim.calls_total() == 0

    def test_sqlite_real_becomes_the_exact_decimal(self, tmp_path: Path) -> None:
        """SQLite stores NUMERIC(12,2) 87.05 as a REAL: it comes back as Decimal('87.05')."""
        path = tmp_path / "real.sqlite"
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (amount REAL, price NUMERIC(12,2))"))
            connection.execute(sa.text("INSERT INTO t VALUES (87.05, '12480.50')"))
        engine.dispose()
        query = (
            "SELECT 1 AS invoice_number, '2025-01-01' AS invoice_date, '2025-01-15' AS due_date,"
            " amount, price, 'Åse' AS debtor_name, 'Gate 1' AS address_line1,"
            " '0150' AS postal_code, 'Oslo' AS city FROM t"
        )
        made = SqlConnector.from_settings(
            {"url": f"sqlite:///{path}", "query": query}, base_dir=tmp_path
        )
        (record,) = made.read()
        assert isinstance(record, SourceRecord)
        assert record.fields["amount"] == Decimal("87.05")
        assert str(record.fields["amount"]) == "87.05"

    def test_postgresql_money_becomes_a_decimal(self, tmp_path: Path) -> None:
        with open_backend("postgresql", tmp_path) as db:
            query = (
                "SELECT '1' AS invoice_number, DATE '2025-01-01' AS invoice_date,"
                " DATE '2025-01-15' AS due_date, CAST('12480.50' AS MONEY) AS amount,"
                " 'Åse' AS debtor_name, 'Gate 1' AS address_line1, '0150' AS postal_code,"
                " 'Oslo' AS city"
            )
            made = connector(db, tmp_path, query=query, columns=None, document_query=None)
            (record,) = records(made)
        assert record.fields["amount"] == Decimal("12480.50")
        assert isinstance(record.fields["amount"], Decimal)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("$12,480.50", Decimal("12480.50")),
            ("kr 12 480,50", Decimal("12480.50")),
            ("12.480,50 €", Decimal("12480.50")),
            ("-$3.10", Decimal("-3.10")),
            ("($3.10)", Decimal("-3.10")),
            ("¥12,480", Decimal(12480)),
            ("$0.05", Decimal("0.05")),
        ],
    )
    def test_money_text_in_any_locale(self, text: str, expected: Decimal) -> None:
        assert parse_money_text(text) == expected

    def test_ambiguous_money_text_is_left_for_the_model(self) -> None:
        assert parse_money_text("12.480,500") == "12.480,500"
        assert parse_money_text("abc") == "abc"


# -- documents -----------------------------------------------------------------------------


class TestDocuments:
    def test_a_copys_loader_is_written_out_with_its_invoice(
        self, sqlite_db: Backend, tmp_path: Path
    ) -> None:
        """A first sync writes new invoices out to the work list's file: each copy's loader
        goes with its invoice (the connector kept once, by reference), so no loader per
        invoice stays in memory, and each loads its own PDF when read back."""
        made = connector(sqlite_db, tmp_path)
        with WorkList() as work:
            work.IN_MEMORY = 0  # type: ignore[misc]
            for record in records(made):
                if record.document is None:
                    continue
                try:
                    invoice = Invoice.from_record(
                        record.fields, id_prefix="", document=record.document
                    )
                except InvalidRecordError:
                    continue  # the fixture's bad rows
                case = assess(
                    invoice,
                    source="erp",
                    record_key=record.key,
                    hashed="h",
                    existing=None,
                    now=datetime.now(UTC),
                ).case
                assert work.add_new("erp", WorkItem(case, invoice, Change.NEW)) is None
            back = {
                item.case.invoice_number: item.invoice.document.load()
                for item in work
                if item.invoice is not None and item.invoice.document is not None
            }
            assert work._documents == {}
            assert list(work._connectors.values()) == [made]
        assert back == {number: PDFS[number] for number in back}
        assert len(back) >= 3

    def test_without_a_has_document_column_a_missing_pdf_is_named(
        self, sqlite_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        query = sqlite_db.sql(QUERY, extra="").replace(
            "EXISTS (SELECT 1 FROM invoice_pdfs p WHERE p.invoice_id = i.id) AS has_document",
            "1 AS helper",
        )
        config = sql_config(tmp_path, sim, fixture_settings(sqlite_db, query=query))

        summary = run_pass(config)

        problems = {problem["record"]: problem for problem in summary.problems}
        assert problems["invoice 20003"]["field"] == "document"
        assert "no document for invoice 20003" in problems["invoice 20003"]["reason"]
        registered = {case["invoiceNo"] for case in sim.cases()}
        assert registered == {number for number in SENT_INVOICES if number in PDFS}

    def test_a_document_query_must_not_return_several_columns(
        self, sqlite_db: Backend, tmp_path: Path
    ) -> None:
        made = connector(
            sqlite_db,
            tmp_path,
            document_query="SELECT pdf, invoice_id FROM invoice_pdfs p "
            "JOIN invoices i ON i.id = p.invoice_id WHERE i.invoice_no = :invoice_number",
        )
        first = records(made)[0]
        assert first.document is not None
        with pytest.raises(ValueError, match="returns 2 columns"):
            first.document.load()

    def test_a_database_failure_while_loading_a_copy_is_an_os_error(
        self, sqlite_db: Backend, tmp_path: Path
    ) -> None:
        made = connector(sqlite_db, tmp_path)
        first = records(made)[0]
        assert first.document is not None
        sqlite_db.execute("DROP TABLE invoice_pdfs")
        with pytest.raises(OSError, match="the document query for invoice 20001 failed on"):
            first.document.load()

    def test_the_default_limit_is_20_mib(self, tmp_path: Path) -> None:
        """`max_document_bytes` defaults to 20 MiB."""
        settings = SqlSettings(url=f"sqlite:///{tmp_path / 'x.sqlite'}", query="SELECT 1")
        assert settings.max_document_bytes == 20 * 1024 * 1024

    def test_a_copy_over_max_document_bytes_is_refused(
        self, sqlite_db: Backend, tmp_path: Path
    ) -> None:
        """A PDF one byte over the limit is an invalid document naming its size and the limit;
        one at the limit loads."""
        size = len(PDFS["20001"])
        over = records(connector(sqlite_db, tmp_path, max_document_bytes=size - 1))[0]
        assert over.document is not None
        with pytest.raises(InvalidRecordError) as caught:
            over.document.load()
        assert caught.value.field == "document"
        assert caught.value.reason == (
            f"document_query returned {size} bytes for invoice 20001, more than "
            f"max_document_bytes ({size - 1}); it is not uploaded"
        )

        at = records(connector(sqlite_db, tmp_path, max_document_bytes=size))[0]
        assert at.document is not None
        assert at.document.load() == PDFS["20001"]

    def test_an_invoice_whose_copy_is_too_big_waits_quarantined(
        self, sqlite_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """End to end: with a limit below every copy, no invoice with a copy is sent; each is
        quarantined (field `document`) with the reason."""
        config = sql_config(tmp_path, sim, fixture_settings(sqlite_db, max_document_bytes=100))

        summary = run_pass(config)

        problems = {problem["record"]: problem for problem in summary.problems}
        with_copies = [number for number in SENT_INVOICES if number in PDFS]
        assert with_copies
        for number in with_copies:
            problem = problems[f"invoice {number}"]
            assert problem["field"] == "document"
            assert "more than max_document_bytes (100)" in problem["reason"]
        registered = {case["invoiceNo"] for case in sim.cases()}
        assert registered == {number for number in SENT_INVOICES if number not in PDFS}


# -- time limits ---------------------------------------------------------------------------

# A SQLite query that runs for minutes: a recursive CTE counting to 10^9.
COUNT_TO_A_BILLION = (
    "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
    "SELECT count(*) FROM n)"
)


@contextmanager
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts every connection and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        listener.close()


def failure_within(seconds: float, action: Callable[[], object]) -> tuple[str, float]:
    """The message of the ConnectorError `action` raises and how long it took. `action` runs
    in a daemon thread, so a limit that no longer holds fails the test instead of hanging
    the suite."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: the time limit did not hold")
    (raised,) = outcome
    assert isinstance(raised, ConnectorError), f"expected a ConnectorError, got {raised!r}"
    return str(raised), elapsed


def stamps_then_records(stamped: StampedRead, slow_from_now: Callable[[], None]) -> None:
    """Both phases of a stamped read, with `slow_from_now` called between them."""
    with stamped:
        stamps = stamps_of(stamped)
        slow_from_now()
        list(stamped.records(stamps))


class TestTimeLimits:
    """A silent database or an endless query fails the read in time, naming the setting."""

    def test_postgresql_stops_a_slow_query(self, pg_db: Backend, tmp_path: Path) -> None:
        """pg_sleep(5) per row under a 1 s limit fails the read in about a second."""
        query = pg_db.sql(QUERY, extra=", pg_sleep(5) IS NOT NULL AS slept")
        made = connector(pg_db, tmp_path, query=query, statement_timeout_seconds=1)

        message, elapsed = failure_within(15, lambda: records(made))

        assert elapsed < 4
        assert "canceling statement due to statement timeout" in message
        assert "statement_timeout_seconds = 1" in message

    def test_postgresql_stops_the_stamps_of_a_two_phase_read(
        self, pg_db: Backend, tmp_path: Path
    ) -> None:
        """The stamps' own psycopg server-side cursor is stopped by the session's limit."""
        query = pg_db.sql(QUERY, extra=", pg_sleep(5) IS NOT NULL AS slept")
        stamped = connector(
            pg_db, tmp_path, query=query, statement_timeout_seconds=1
        ).stamped_read()
        assert stamped is not None

        message, elapsed = failure_within(15, lambda: stamps_then_records(stamped, lambda: None))

        assert elapsed < 4
        assert "the query failed after 0 rows" in message
        assert "canceling statement due to statement timeout" in message
        assert "statement_timeout_seconds = 1" in message

    def test_postgresql_stops_the_full_rows_of_a_two_phase_read(
        self, pg_db: Backend, tmp_path: Path
    ) -> None:
        """Rows that turn slow between the phases stop the second phase in time."""
        # The switch is a setting of the read's own session: its snapshot does not hide it.
        slow = "pg_sleep(CASE WHEN current_setting('ks_test.slow', true) = 'on' THEN 5 ELSE 0 END)"
        query = pg_db.sql(QUERY, extra=f", {slow} IS NOT NULL AS slept")
        stamped = connector(
            pg_db, tmp_path, query=query, statement_timeout_seconds=1
        ).stamped_read()
        assert stamped is not None
        assert isinstance(stamped, PostgresStampedRead)

        def slow_from_now() -> None:
            stamped._connection.execute(sa.text("SET ks_test.slow = 'on'"))

        message, elapsed = failure_within(15, lambda: stamps_then_records(stamped, slow_from_now))

        assert elapsed < 4
        assert "canceling statement due to statement timeout" in message
        assert "statement_timeout_seconds = 1" in message

    def test_mariadb_stops_a_slow_query(self, tmp_path: Path) -> None:
        """SLEEP(5) per row under a 1 s limit is stopped by max_statement_time."""
        with open_backend("mariadb", tmp_path) as db:
            query = db.sql(QUERY, extra=", SLEEP(5) AS slept")
            made = connector(db, tmp_path, query=query, statement_timeout_seconds=1)

            message, elapsed = failure_within(15, lambda: records(made))

        assert elapsed < 4
        assert "max_statement_time exceeded" in message
        assert "statement_timeout_seconds = 1" in message

    def test_mariadb_waits_for_a_statement_longer_than_the_connect_limit(
        self, tmp_path: Path
    ) -> None:
        """Once connected, a statement may run past the connect limit, up to its own."""
        # PyMySQL reads the server's greeting with its read timeout: that starts at the
        # connect limit and must be widened after the login.
        with open_backend("mariadb", tmp_path) as db:
            query = db.sql(QUERY, extra="").replace(
                "FROM {invoices} i".format(**db.tables),
                "FROM (SELECT SLEEP(1.5) AS slept) AS z, {invoices} i".format(**db.tables),
            )
            made = connector(
                db, tmp_path, query=query, connect_timeout_seconds=1, statement_timeout_seconds=5
            )
            started = time.monotonic()

            assert len(records(made)) == len(INVOICES) - 1
            assert time.monotonic() - started >= 1.5

    def test_sqlite_interrupts_a_long_query(self, sqlite_db: Backend, tmp_path: Path) -> None:
        """A query counting to 10^9 under a 1 s limit is interrupted."""
        query = sqlite_db.sql(QUERY, extra=f", {COUNT_TO_A_BILLION} AS counted")
        made = connector(sqlite_db, tmp_path, query=query, statement_timeout_seconds=1)

        message, elapsed = failure_within(15, lambda: records(made))

        assert elapsed < 4
        assert "interrupted" in message
        assert "statement_timeout_seconds = 1" in message

    def test_sqlite_times_each_statement_on_its_own(
        self, sqlite_db: Backend, tmp_path: Path
    ) -> None:
        """A statement's clock starts when it is sent, not when the connection opened."""
        # A pause longer than the limit after the invoices; then the payments query scans
        # 200,000 numbers (enough to consult the clock) and must still run.
        payments = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) "
            "SELECT i AS payment_id, '2026-01-01' AS date, 1 AS amount, i AS invoice_number "
            "FROM n WHERE i < 0"
        )
        made = connector(sqlite_db, tmp_path, payments_query=payments, statement_timeout_seconds=1)
        reading = made.read()
        invoices = [next(reading) for _ in range(len(INVOICES) - 1)]
        time.sleep(1.2)

        assert list(reading) == []
        assert all(isinstance(invoice, SourceRecord) for invoice in invoices)

    @pytest.mark.parametrize(
        "url",
        [
            # libpq waits at least 2 s, whatever connect_timeout says
            pytest.param(
                f"postgresql://kravia:{PASSWORD_IN_URL}@127.0.0.1:{{port}}/test",
                marks=pytest.mark.slow,
                id="postgresql",
            ),
            pytest.param(
                f"mariadb://kravia:{PASSWORD_IN_URL}@127.0.0.1:{{port}}/test", id="mariadb"
            ),
        ],
    )
    def test_a_server_that_never_answers_fails_the_connection(
        self, url: str, tmp_path: Path
    ) -> None:
        """A silent server fails the read within seconds, naming the setting, not the password."""
        with silent_server() as port:
            made = SqlConnector.from_settings(
                {"url": url.format(port=port), "query": "SELECT 1", "connect_timeout_seconds": 1},
                base_dir=tmp_path,
            )

            message, elapsed = failure_within(15, lambda: list(made.read()))

        assert elapsed < 5
        assert "cannot connect to" in message
        assert f"127.0.0.1:{port}" in message
        assert "connect_timeout_seconds = 1" in message
        assert "***" in message
        assert_no_password(message)

    @pytest.mark.slow
    def test_an_ms_sql_server_that_never_answers_fails_the_connection(self, tmp_path: Path) -> None:
        """pymssql's login_timeout bounds the wait for a silent SQL Server."""
        # FreeTDS tries twice (negotiating the protocol version) with a pause: about 7 s.
        pytest.importorskip("pymssql", reason="pymssql (the mssql extra) is not installed")
        with silent_server() as port:
            url = f"mssql://sa:{PASSWORD_IN_URL}@127.0.0.1:{port}/erp"
            made = SqlConnector.from_settings(
                {"url": url, "query": "SELECT 1", "connect_timeout_seconds": 1},
                base_dir=tmp_path,
            )

            message, elapsed = failure_within(30, lambda: list(made.read()))

        assert elapsed < 15
        assert "connect_timeout_seconds = 1" in message
        assert_no_password(message)

    def test_a_pass_over_a_silent_database_fails_the_source_in_time(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The pass ends with the source failed, the advice given and nothing gone."""
        with silent_server() as port:
            settings = {
                "url": f"mariadb://kravia@127.0.0.1:{port}/erp",
                "query": "SELECT 1 AS x",
                "connect_timeout_seconds": 1,
            }
            config = sql_config(tmp_path, sim, settings)

            started = time.monotonic()
            summary = run_pass(config)

        assert time.monotonic() - started < 10
        assert summary.status == "failed"
        assert "raise connect_timeout_seconds" in (summary.sources[0].error or "")
        assert summary.counts.get("gone", 0) == 0
        assert sim.calls_total() == 0

    def test_every_connection_is_read_only_and_limited(
        self, server_db: Backend, tmp_path: Path
    ) -> None:
        """The query's and a document's connections are both limited and read-only."""
        settings = {
            "postgresql": (
                "current_setting('statement_timeout') || ' ' || "
                "current_setting('transaction_read_only')"
            ),
            "mariadb": "CONCAT(@@max_statement_time, ' ', @@tx_read_only)",
        }[server_db.name]
        as_bytes = {
            "postgresql": f"convert_to({settings}, 'UTF8')",
            "mariadb": f"CAST({settings} AS BINARY)",
        }[server_db.name]
        bound = {
            "postgresql": "CAST(:invoice_number AS TEXT) <> ''",
            "mariadb": ":invoice_number <> ''",
        }[server_db.name]
        made = connector(
            server_db,
            tmp_path,
            query=server_db.sql(QUERY, extra=f", {settings} AS session"),
            columns={**COLUMNS, "description": "session"},
            document_query=f"SELECT {as_bytes} WHERE {bound}",
            statement_timeout_seconds=7,
        )

        first = records(made)[0]
        assert first.document is not None
        in_document = first.document.load().decode()

        expected = {"postgresql": "7s on", "mariadb": "7.000000 ON"}[server_db.name]
        assert first.fields["description"] == expected
        assert in_document == expected


class TestDriverLimits:
    """Each driver gets the limits as it takes them (checked as data: no SQL Server here)."""

    def test_connect_arguments_per_driver(self) -> None:
        """psycopg, PyMySQL and pymssql each get the limits under their own names."""
        settings = SqlSettings.model_validate(
            {
                "url": "sqlite://",
                "query": "SELECT 1",
                "connect_timeout_seconds": 4,
                "statement_timeout_seconds": 60,
            }
        )

        assert driver_connect_args("psycopg", settings) == {"connect_timeout": 4}
        assert driver_connect_args("pymysql", settings) == {
            "connect_timeout": 4,
            "read_timeout": 4,
            "write_timeout": 4,
        }
        assert driver_connect_args("pymssql", settings) == {"login_timeout": 4, "timeout": 60}
        assert driver_connect_args("pysqlite", settings) == {}

    def test_session_statement_limits_per_server(self) -> None:
        """PostgreSQL and MySQL count milliseconds, MariaDB seconds; others set none."""
        assert statement_limit("postgresql", 2) == "SET statement_timeout = 2000"
        assert statement_limit("mariadb", 2) == "SET SESSION max_statement_time = 2"
        assert statement_limit("mysql", 2) == "SET SESSION max_execution_time = 2000"
        assert statement_limit("sqlite", 2) is None
        assert statement_limit("mssql", 2) is None

    @pytest.mark.parametrize(
        ("backend", "error", "advice"),
        [
            (
                "mysql",
                Exception(3024, "maximum statement execution time exceeded"),
                "ran longer than statement_timeout_seconds = 60",
            ),
            (
                "mssql",
                Exception(
                    20003, "DB-Lib error message 20003: Adaptive Server connection timed out"
                ),
                "ran longer than statement_timeout_seconds = 60",
            ),
            (
                "mariadb",
                Exception(2013, "Lost connection to MySQL server during query (timed out)"),
                "sent nothing for 64 s",
            ),
            ("postgresql", Exception("syntax error at or near"), None),
        ],
    )
    def test_the_advice_names_the_setting(
        self, backend: str, error: Exception, advice: str | None, tmp_path: Path
    ) -> None:
        """Each kind of timeout gets its advice; an unrelated error gets none."""
        made = SqlConnector.from_settings(
            {
                "url": f"{backend}://kravia@db/erp",
                "query": "SELECT 1",
                "connect_timeout_seconds": 4,
                "statement_timeout_seconds": 60,
            },
            base_dir=tmp_path,
        )
        assert isinstance(made, SqlConnector)

        given = made._database._limit_advice(error, connecting=False)

        if advice is None:
            assert given == ""
        else:
            assert advice in given
            assert "statement_timeout_seconds in the source's settings" in given


# -- secrets -------------------------------------------------------------------------------


class TestSecrets:
    @pytest.mark.parametrize(
        "url",
        [
            f"postgresql://kravia:{PASSWORD_IN_URL}@127.0.0.1:1/test",
            f"mariadb://kravia:{PASSWORD_IN_URL}@127.0.0.1:1/test",
        ],
    )
    def test_a_password_in_the_url_is_never_printed_when_the_connection_fails(
        self, url: str, sim: Sim, tmp_path: Path
    ) -> None:
        """Nothing listens on port 1: the source fails, and neither stdout, stderr nor the
        state store holds the password (raw or URL-encoded)."""
        config = sql_config(tmp_path, sim, {"url": url, "query": "SELECT 1 AS x"})

        result = run_cli("reconcile", "--json", "--config", str(config), cwd=tmp_path)

        assert result.returncode == 1, result.stdout + result.stderr
        summary = json.loads(result.stdout)
        error = summary["sources"][0]["error"]
        assert summary["sources"][0]["status"] == "failed"
        assert "cannot connect to" in error
        assert "127.0.0.1:1" in error
        assert "***" in error
        assert_no_password(result.stdout, result.stderr, files_text(tmp_path / "state"))

    def test_a_refused_password_from_the_environment_is_never_printed(
        self, sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """MariaDB refuses root with a wrong password: the source fails, the password appears
        in no log line, summary or state."""
        with open_backend("mariadb", tmp_path):  # skips (or fails under CI) when unreachable
            pass
        monkeypatch.setenv("KS_TEST_DB_PASSWORD", PASSWORD)
        settings = {
            "url": "mariadb://root@127.0.0.1:3306/test",
            "password_env": "KS_TEST_DB_PASSWORD",
            "query": "SELECT 1 AS x",
        }
        config = sql_config(tmp_path, sim, settings)

        with structlog.testing.capture_logs() as logs:
            summary = run_pass(config)

        error = summary.sources[0].error
        assert summary.status == "failed"
        assert error is not None
        assert "Access denied" in error
        assert logs, "the failure was not logged"
        assert_no_password(
            json.dumps(summary.as_dict()),
            json.dumps(logs, default=str),
            files_text(tmp_path / "state"),
        )
        result = run_cli(
            "reconcile",
            "--config",
            str(config),
            cwd=tmp_path,
            env=cli_env(KS_TEST_DB_PASSWORD=PASSWORD),
        )
        assert result.returncode == 1
        assert "Access denied" in result.stdout + result.stderr
        assert_no_password(result.stdout, result.stderr)

    def test_repr_never_shows_the_password(self, tmp_path: Path) -> None:
        settings = SqlSettings.model_validate(
            {"url": f"postgresql://kravia:{PASSWORD_IN_URL}@db/erp", "query": "SELECT 1"}
        )
        made = SqlConnector(settings, base_dir=tmp_path)
        assert_no_password(repr(settings), str(settings), repr(made.settings), made.display_url)
        assert "postgresql://kravia:***@db/erp" in repr(settings)
        assert PASSWORD in made.secret_values()
        assert PASSWORD_IN_URL in made.secret_values()

    def test_a_password_file_is_read_and_kept_secret(self, tmp_path: Path) -> None:
        (tmp_path / "db_password").write_text(PASSWORD + "\n", encoding="utf-8")
        made = SqlConnector.from_settings(
            {
                "url": "postgresql://kravia@db/erp",
                "password_file": "db_password",
                "query": "SELECT 1",
            },
            base_dir=tmp_path,
        )
        assert isinstance(made, SqlConnector)
        assert made.url.password == PASSWORD
        assert PASSWORD in made.secret_values()
        assert_no_password(made.display_url, repr(made.settings))

    def test_a_password_from_a_file_reaches_the_server(self, tmp_path: Path) -> None:
        """PostgreSQL here trusts local connections, so any password gets in: the read works
        through the injected URL."""
        with open_backend("postgresql", tmp_path / "pg") as db:
            (tmp_path / "pw").write_text("anything\n", encoding="utf-8")
            made = connector(db, tmp_path, password_file="pw")  # noqa: S106 - a file name
            assert len(records(made)) == len(INVOICES) - 1

    def test_an_unset_password_variable_fails_the_source_naming_it(
        self, sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("KS_TEST_UNSET", raising=False)
        settings = {
            "url": "postgresql://kravia@127.0.0.1:1/test",
            "password_env": "KS_TEST_UNSET",
            "query": "SELECT 1",
        }
        summary = run_pass(sql_config(tmp_path, sim, settings))
        assert summary.status == "failed"
        assert "KS_TEST_UNSET" in (summary.sources[0].error or "")


# -- drivers -------------------------------------------------------------------------------


class TestDrivers:
    def test_a_missing_driver_names_the_extra(
        self, sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "pyodbc", None)  # absent, whatever is installed
        url = f"mssql+pyodbc://sa:{PASSWORD_IN_URL}@127.0.0.1:1433/erp"
        summary = run_pass(sql_config(tmp_path, sim, {"url": url, "query": "SELECT 1"}))

        error = summary.sources[0].error or ""
        assert summary.status == "failed"
        assert "pip install 'kravia-sync[mssql]'" in error
        assert "mssql+pymssql://" in error
        assert_no_password(error)

    def test_a_missing_postgresql_driver_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails
        made = SqlConnector.from_settings(
            {"url": "postgresql://kravia@127.0.0.1:1/test", "query": "SELECT 1"},
            base_dir=tmp_path,
        )
        with pytest.raises(ConnectorError) as raised:
            next(made.read())
        assert str(raised.value) == (
            "the PostgreSQL driver is not installed: pip install 'kravia-sync[postgres]'"
        )

    def test_a_missing_sqlite_file_is_not_created(self, sim: Sim, tmp_path: Path) -> None:
        settings = {"url": "sqlite:///nowhere.sqlite", "query": "SELECT 1"}
        summary = run_pass(sql_config(tmp_path, sim, settings))
        assert summary.status == "failed"
        assert "does not exist" in (summary.sources[0].error or "")
        assert not (tmp_path / "nowhere.sqlite").exists()

    def test_urls_without_a_driver_get_the_extras_driver(self, tmp_path: Path) -> None:
        def url_of(url: str) -> sa.URL:
            made = SqlConnector.from_settings({"url": url, "query": "SELECT 1"}, base_dir=tmp_path)
            assert isinstance(made, SqlConnector)
            return made.url

        assert url_of("postgresql://h/db").drivername == "postgresql+psycopg"
        assert url_of("mariadb://h/db").drivername == "mariadb+pymysql"
        assert url_of("mysql://h/db").query["charset"] == "utf8mb4"
        assert url_of("mysql://h/db?charset=latin1").query["charset"] == "latin1"
        assert url_of("mssql://h/db").drivername == "mssql+pymssql"
        assert url_of("sqlite:///erp.sqlite").database == str(tmp_path / "erp.sqlite")


# -- settings ------------------------------------------------------------------------------


class TestSettings:
    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"columns": {"belop": "amount"}}, "'belop' is not a record field"),
            ({"query": "SELECT * FROM t WHERE d < :todya"}, "unknown bound parameter :todya"),
            ({"document_query": "SELECT pdf FROM p"}, "must bind :accounting_invoice_id"),
            (
                {"document_query": "SELECT pdf FROM p WHERE id = :id"},
                "unknown bound parameter :id",
            ),
            ({"password_env": "A", "password_file": "b"}, "not both"),
            ({"url": "postgresql://u:pw@h/db", "password_env": "A"}, "already holds a password"),
            ({"url": "foo://u@h/db"}, "SQLAlchemy knows no database 'foo'"),
            ({"fetch_size": 0}, "greater than 0"),
            ({"connect_timeout_seconds": 0}, "there is no 'no limit'"),
            ({"statement_timeout_seconds": None}, "there is no 'no limit'"),
            ({"statement_timeout_seconds": -1}, "there is no 'no limit'"),
            ({"statement_timeout_seconds": 86_401}, "less than or equal to 86400"),
            ({"statement_timeout_seconds": 1.5}, "valid integer"),
            (
                {"url": "postgresql://u@h/db?connect_timeout=3"},
                "the url sets connect_timeout: remove it and use connect_timeout_seconds",
            ),
            (
                {"url": "mariadb://u@h/db?read_timeout=9&write_timeout=9"},
                "read_timeout, write_timeout",
            ),
            ({"url": "mssql://u@h/db?timeout=9"}, "the url sets timeout"),
            (
                {"url": "postgresql://u@h/db?options=-c%20statement_timeout%3D0"},
                "the url sets options=-c statement_timeout",
            ),
        ],
    )
    def test_bad_settings_are_named(self, changes: dict[str, object], message: str) -> None:
        raw: dict[str, object] = {"url": "sqlite:///x.sqlite", "query": "SELECT 1"} | changes
        with pytest.raises(ValueError, match=message):
            SqlSettings.model_validate(raw)

    def test_an_invalid_url_is_not_echoed(self) -> None:
        from pydantic import ValidationError  # noqa: PLC0415

        url = f"postgresql://u:{PASSWORD_IN_URL}@h:notaport/db"
        with pytest.raises(ValidationError) as raised:
            SqlSettings.model_validate({"url": url, "query": "SELECT 1"})
        details = raised.value.errors(include_input=False, include_url=False)
        assert_no_password(json.dumps(details, default=str))

    def test_the_time_limits_default_to_ten_seconds_and_five_minutes(self) -> None:
        """Without the settings a connection has 10 s to be ready, a statement 300 s."""
        settings = SqlSettings.model_validate({"url": "sqlite://", "query": "SELECT 1"})
        assert settings.connect_timeout_seconds == 10
        assert settings.statement_timeout_seconds == 300

    def test_an_unknown_setting_is_refused(self) -> None:
        with pytest.raises(ValueError, match="extra"):
            SqlSettings.model_validate({"url": "sqlite://", "query": "SELECT 1", "table": "x"})


# -- the example ---------------------------------------------------------------------------


class TestExample:
    def test_the_example_settings_read_the_fixture_schema(
        self, sqlite_db: Backend, tmp_path: Path
    ) -> None:
        """`kravia-sync init --source sql` writes EXAMPLE_SETTINGS: its query runs unchanged on
        the fixture schema (SQLite, the example's table names)."""
        (source,) = tomllib.loads(EXAMPLE_SETTINGS)["sources"]
        assert source["connector"] == "sql"
        raw = dict(source["settings"])
        SqlSettings.model_validate(raw)  # valid as written
        raw["url"] = sqlite_db.url
        del raw["password_env"]

        made = SqlConnector.from_settings(raw, base_dir=tmp_path)
        assert isinstance(made, SqlConnector)
        got = {record.fields["invoice_number"]: record for record in records(made)}

        assert WAITING_INVOICE not in got  # due_date < :today
        assert PAID_INVOICE not in got
        assert got["20001"].key == "invoice 20001 (id 1)"
        assert got["20001"].fields["accounting_invoice_id"] == 1
        assert got["20003"].document is None
        document = got["20001"].document
        assert document is not None
        assert document.name == "20001.pdf"
        assert document.load() == PDFS["20001"]

    def test_init_writes_the_sql_example(self, tmp_path: Path) -> None:
        """`kravia-sync init --source sql` writes a configuration that loads, with the sql
        source's settings valid as written."""
        config = tmp_path / "kravia-sync.toml"

        result = run_cli("init", "--source", "sql", "--config", str(config), cwd=tmp_path)

        assert result.returncode == 0, result.stdout + result.stderr
        settings = load(config)
        (source,) = [source for source in settings.sources if source.connector == "sql"]
        assert SqlSettings.model_validate(source.settings).password_env == "KRAVIA_DB_PASSWORD"


def test_today_is_bound_on_the_creditors_calendar(tmp_path: Path) -> None:
    """`:today` is today's date in the connector's time zone (the engine gives it
    `policy.timezone`): two zones 25 hours apart never bind the same day."""
    database = tmp_path / "dates.db"
    sqlite3.connect(database).close()
    made = SqlConnector.from_settings(
        {
            "url": f"sqlite:///{database}",
            "query": "SELECT 'A1' AS invoice_number, :today AS invoice_date, "
            "'2025-01-01' AS due_date, '10.00' AS amount, 'D' AS debtor_name, "
            "'Gate 1' AS address_line1, '0150' AS postal_code, 'Oslo' AS city",
        },
        base_dir=tmp_path,
    )
    bound = {}
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        made.timezone = ZoneInfo(zone)
        before = datetime.now(made.timezone).date()
        (record,) = [item for item in made.read() if isinstance(item, SourceRecord)]
        bound[zone] = date.fromisoformat(str(record.fields["invoice_date"]))
        assert before <= bound[zone] <= datetime.now(made.timezone).date()
    assert bound["Pacific/Kiritimati"] != bound["Pacific/Pago_Pago"]


def test_the_engine_gives_each_connector_the_policy_time_zone(tmp_path: Path) -> None:
    from kravia_sync.engine.reconcile import build_connector  # noqa: PLC0415
    from kravia_sync.settings import SourceConfig, load_settings  # noqa: PLC0415

    config = tmp_path / "kravia-sync.toml"
    config.write_text(
        '[kravia]\ncreditor_id = 1\n[policy]\ntimezone = "Pacific/Kiritimati"\n'
        '[[sources]]\nname = "db"\nconnector = "sql"\n'
        '[sources.settings]\nurl = "sqlite:///x.db"\nquery = "SELECT 1"\n',
        encoding="utf-8",
    )
    settings = load_settings(config, overrides={"kravia_token": "t"})
    source: SourceConfig = settings.sources[0]
    assert build_connector(settings, source).timezone == ZoneInfo("Pacific/Kiritimati")
