# ruff: noqa: S608 - the tests build SQL from their own table names and constants only
"""The SQL source's first read-only wall: every configured query is read by an SQL parser in its
server's dialect and refused, with the reason, unless it is one SELECT that writes nothing the
parser can see. The refusals that matter are tried against the real servers: the write or the
file must not happen."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sql_fixture import (
    DOCUMENT_QUERY,
    QUERY,
    Backend,
    connector,
    fixture_settings,
    open_backend,
    records,
    sql_config,
)
from support import Sim, run_cli, run_pass

from connectors.sql import EXAMPLE_SETTINGS, SqlConnector
from connectors.sql._readonly import WRITING_FUNCTIONS, refusal

# The columns a row needs to be an invoice (the read fails without them).
COLUMNS = (
    "invoice_no AS invoice_number, invoice_date, due_date, balance AS amount, "
    "'Kunde' AS debtor_name, 'Gate 1' AS address_line1, '0150' AS postal_code, 'Oslo' AS city"
)

URLS = {
    "postgresql": "postgresql://kravia@db/erp",
    "mariadb": "mariadb://kravia@db/erp",
    "mysql": "mysql://kravia@db/erp",
    "mssql": "mssql://kravia@db/erp",
    "sqlite": "sqlite:///erp.sqlite",
}


@pytest.fixture
def maria_db(tmp_path: Path) -> Iterator[Backend]:
    with open_backend("mariadb", tmp_path) as backend:
        yield backend


def pass_over(backend: Backend, sim: Sim, tmp_path: Path, query: str) -> str | None:
    """A pass over `query` (the test looks at what it did first): why the source failed, or
    None when it did not."""
    settings = fixture_settings(backend, query=query, document_query=None, columns=None)
    summary = run_pass(sql_config(tmp_path, sim, settings))
    return summary.sources[0].error if summary.status == "failed" else None


class TestRefused:
    @pytest.mark.parametrize(
        ("backend", "query", "reason"),
        [
            ("postgresql", "SELECT 1 AS a; SELECT 2 AS b", "holds 2 statements"),
            ("sqlite", "SELECT 1; DELETE FROM t; SELECT 3", "holds 3 statements"),
            ("mariadb", "UPDATE t SET v = 1", "is an UPDATE statement, not a SELECT"),
            ("sqlite", "UPDATE t SET v = 1 RETURNING v", "is an UPDATE statement, not a SELECT"),
            ("postgresql", "DELETE FROM t RETURNING *", "is a DELETE statement"),
            ("postgresql", "WITH a AS (SELECT 1) DELETE FROM t", "is a DELETE statement"),
            ("mariadb", "CALL p()", "is a CALL statement, not a SELECT"),
            ("mariadb", "BEGIN NOT ATOMIC SELECT 1; END", "is a BEGIN statement"),
            ("postgresql", "DO $$ BEGIN NULL; END $$", "is a DO statement"),
            ("mssql", "EXEC sp_who", "is an EXEC statement"),
            ("postgresql", "VALUES (1)", "is a VALUES statement"),
            (
                "postgresql",
                "WITH u AS (UPDATE t SET v = 1 RETURNING *) SELECT * FROM u",
                "holds an UPDATE inside its SELECT, which writes",
            ),
            ("postgresql", "SELECT * INTO copy FROM t", "SELECT … INTO, which writes"),
            ("mariadb", "SELECT v INTO @x FROM t", "SELECT … INTO, which writes"),
            ("mariadb", "SELECT v FROM t INTO OUTFILE '/tmp/x'", "INTO OUTFILE, which writes a"),
            ("mariadb", "SELECT v INTO DUMPFILE '/tmp/x' FROM t", "INTO DUMPFILE, which writes"),
            ("postgresql", "SELECT * FROM t FOR UPDATE", "locking read (FOR UPDATE)"),
            ("postgresql", "SELECT * FROM t FOR NO KEY UPDATE NOWAIT", "locking read"),
            ("mariadb", "SELECT * FROM t LOCK IN SHARE MODE", "locking read"),
            ("mariadb", "SELECT * FROM a UNION SELECT * FROM b FOR UPDATE", "locking read"),
            ("mssql", "SELECT * FROM t WITH (UPDLOCK)", "table hint UPDLOCK"),
            ("mssql", "SELECT * FROM t WITH (NOLOCK, XLOCK)", "table hint XLOCK"),
            ("mssql", "SELECT NEXT VALUE FOR s", "holds a NEXT VALUE FOR"),
            ("mariadb", "SELECT 1 AS a /*!, (SELECT 2) */", "executable comment"),
            ("mariadb", "SELECT 1 AS a /*M!100000 , 2 */", "executable comment"),
            ("postgresql", "SELECT 'unterminated", "cannot be read as SQL"),
            ("mariadb", "SELECT (1 AS a", "cannot be read as SQL"),
            ("postgresql", "-- nothing but a comment", "is empty"),
        ],
    )
    def test_what_is_not_one_select_is_refused_with_its_reason(
        self, backend: str, query: str, reason: str
    ) -> None:
        """Each query is refused, and the reason says why."""
        found = refusal(query, backend)
        assert found is not None, query
        assert reason in found, found
        assert found.startswith("the query ")

    @pytest.mark.parametrize(
        ("backend", "name"),
        sorted((backend, name) for backend, names in WRITING_FUNCTIONS.items() for name in names),
    )
    def test_every_known_writing_function_is_refused(self, backend: str, name: str) -> None:
        """Called in a SELECT, in any case and with a schema, each function of the list is
        refused, naming it."""
        for call in (f"{name}(1, 'x')", f"s.{name.upper()} (1)"):
            found = refusal(f"SELECT {call} AS a FROM t", backend)
            assert found is not None, call
            assert "calls" in found
            assert name in found.casefold()

    @pytest.mark.parametrize(
        "call",
        [
            "dblink_exec('dbname=erp', 'UPDATE t SET v = 1')",
            "* FROM dblink('dbname=erp', 'DELETE FROM t RETURNING 1') AS d(n int)",
            "dblink_send_query('c', 'UPDATE t SET v = 1')",
            "\"dblink_exec\"('dbname=erp', 'UPDATE t SET v = 1')",
            "lo_export(1, '/tmp/x')",
            "set_config('default_transaction_read_only', 'off', false)",
            "query_to_xml('UPDATE t SET v = 1', true, false, '')",
        ],
    )
    def test_postgresql_functions_that_write_elsewhere_are_refused(self, call: str) -> None:
        found = refusal(f"SELECT {call}", "postgresql")
        assert found is not None
        assert "calls" in found

    def test_each_configured_query_is_read_and_named(self, tmp_path: Path) -> None:
        """The main, payments and document queries are all read; the error names the key."""
        good = "SELECT invoice_no FROM invoices WHERE invoice_no = :invoice_number"
        for key, query, name in (
            ("query", "CALL p()", "the query"),
            ("payments_query", "DELETE FROM payments", "the payments query"),
            ("document_query", f"{good}; DELETE FROM t", "the document query"),
        ):
            settings = {"url": URLS["mariadb"], "query": "SELECT 1 AS a", key: query}
            with pytest.raises(ValidationError) as caught:
                SqlConnector.from_settings(settings, base_dir=tmp_path)
            errors = caught.value.errors()
            assert [error["loc"] for error in errors] == [(key,)]
            assert name in errors[0]["msg"], errors[0]["msg"]

    def test_the_query_is_read_in_the_dialect_of_its_database(self) -> None:
        """`x::numeric` is a cast in PostgreSQL; MariaDB's backticks quote names: each reads
        in its own dialect, and a T-SQL `TOP` is no SELECT … INTO anywhere."""
        assert refusal("SELECT `a b` FROM `t`", "mariadb") is None
        assert refusal("SELECT [a b] FROM [t] WITH (NOLOCK)", "mssql") is None
        assert refusal("SELECT x::numeric FROM t", "postgresql") is None


class TestAccepted:
    @pytest.mark.parametrize(
        ("backend", "query"),
        [
            (
                "postgresql",
                """
                WITH RECURSIVE open_items AS MATERIALIZED (
                  SELECT DISTINCT ON (i.id) i.id, i.balance::numeric(12,2) AS balance
                  FROM invoices i ORDER BY i.id, i.updated_at DESC
                )
                SELECT i.id AS accounting_invoice_id,
                       COALESCE(c.name, c.company, '') AS debtor_name,
                       o.balance AS amount, i.fee::money AS fee,
                       to_char(i.invoice_date, 'YYYY-MM-DD') AS invoice_date,
                       i.due_date, i.due_date <= :today - 14 AS old,
                       i.due_date < CAST(:today AS date) - interval '14 days' AS older,
                       string_agg(l.text, '; ' ORDER BY l.no) AS description,
                       row_number() OVER (PARTITION BY c.id ORDER BY i.due_date DESC) AS rn,
                       count(*) FILTER (WHERE l.amount > 0) AS lines,
                       CASE WHEN c.kind IS DISTINCT FROM 'b' THEN 'private' ELSE 'business'
                       END AS debtor_type,
                       c.meta ->> 'org' AS organization_number,
                       EXTRACT(YEAR FROM i.due_date) AS y, date_trunc('month', i.due_date),
                       upper(trim(c.city)) AS city, c.name ILIKE '%as' AS is_as,
                       EXISTS (SELECT 1 FROM pdfs p WHERE p.id = i.id) AS has_document
                FROM invoices i
                JOIN open_items o USING (id)
                JOIN LATERAL (SELECT * FROM lines l WHERE l.invoice_id = i.id) l ON true
                LEFT JOIN customers c ON c.id = i.customer_id
                WHERE o.balance > 0 AND c.note NOT LIKE 'a\\:b'
                GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
                ORDER BY i.id;
                """,
            ),
            (
                "mariadb",
                """
                SELECT `i`.`id` AS accounting_invoice_id,
                       IFNULL(c.email, '') AS debtor_email,
                       CAST(i.balance AS DECIMAL(12,2)) AS amount,
                       i.due_date <= :today - INTERVAL 14 DAY AS old,
                       DATE_SUB(:today, INTERVAL 14 DAY) AS cut,
                       CONCAT_WS(' ', c.first_name, c.last_name) AS debtor_name,
                       GROUP_CONCAT(l.text ORDER BY l.no SEPARATOR '; ') AS description,
                       DATE_FORMAT(i.invoice_date, '%Y-%m-%d') AS invoice_date,
                       CONVERT(c.name USING utf8mb4) COLLATE utf8mb4_bin AS sort_name,
                       IF(p.id IS NULL, 0, 1) AS has_document,
                       ROW_NUMBER() OVER (PARTITION BY c.id ORDER BY i.due_date) AS rn,
                       `order`.`no` # the order
                FROM invoices i FORCE INDEX (PRIMARY)
                STRAIGHT_JOIN customers c ON c.id = i.customer_id
                LEFT JOIN pdfs p ON p.invoice_id = i.id
                LEFT JOIN `order` ON `order`.id = i.order_id
                WHERE i.balance > 0 AND c.name REGEXP '^[A-Å]' /*+ no hint */
                GROUP BY i.id
                """,
            ),
            (
                "mssql",
                """
                SELECT [i].[id] AS accounting_invoice_id, ISNULL(c.email, '') AS debtor_email,
                       CONVERT(varchar(10), i.invoice_date, 120) AS invoice_date,
                       CAST(i.balance AS money) AS amount, FORMAT(i.balance, 'N2') AS shown
                FROM dbo.invoices i WITH (NOLOCK)
                JOIN dbo.customers c WITH (READPAST) ON c.id = i.customer_id
                WHERE i.due_date <= DATEADD(day, -14, :today)
                ORDER BY i.id OFFSET 0 ROWS FETCH NEXT 100 ROWS ONLY
                """,
            ),
            (
                "sqlite",
                """
                SELECT i.id AS accounting_invoice_id, c.first || ' ' || c.last AS debtor_name,
                       strftime('%Y-%m-%d', i.invoice_date) AS invoice_date,
                       CAST(i.balance AS TEXT) AS amount, IFNULL(c.email, '') AS debtor_email
                FROM invoices i JOIN customers c ON c.id = i.customer_id
                WHERE i.due_date <= date(:today, '-14 days')
                UNION ALL SELECT 1, 'x', NULL, '0', NULL
                """,
            ),
            ("postgresql", "(SELECT 1 AS a) UNION (SELECT 2) -- a comment; DELETE"),
            ("postgresql", "SELECT E'it\\'s; DELETE FROM t' AS a, $$x; DELETE$$ AS b"),
        ],
    )
    def test_ordinary_erp_queries_pass(self, backend: str, query: str) -> None:
        """CTEs, window functions, CASE, COALESCE, string and date functions, casts, MONEY,
        backticks and brackets, `:today`, comments and a final semicolon are all reads."""
        assert refusal(query, backend) is None

    @pytest.mark.parametrize("backend", ["postgresql", "mariadb", "sqlite"])
    def test_the_test_fixture_and_the_example_pass(self, backend: str) -> None:
        tables = {"invoices": "i1", "customers": "c1", "invoice_pdfs": "p1"}
        assert refusal(QUERY.format(**tables, extra=""), backend) is None
        assert refusal(DOCUMENT_QUERY.format(**tables), backend, "the document query") is None
        example = EXAMPLE_SETTINGS.split('query = """')[1].split('"""')[0]
        assert refusal(example, backend) is None


class TestOnTheServers:
    """What the issue found, tried again: each must be refused before anything runs."""

    def test_a_mariadb_begin_not_atomic_block_does_not_commit_its_write(
        self, maria_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        original = maria_db.balance("20001")
        query = maria_db.sql(
            "BEGIN NOT ATOMIC COMMIT; START TRANSACTION READ WRITE; "
            "UPDATE {invoices} SET balance = 1 WHERE invoice_no = '20001'; COMMIT; "
            f"SELECT {COLUMNS} FROM {{invoices}}; END"
        )

        error = pass_over(maria_db, sim, tmp_path, query)

        assert maria_db.balance("20001") == original
        assert error is not None
        assert "the query is a BEGIN statement, not a SELECT" in error
        assert sim.calls_total() == 0

    def test_a_mariadb_procedure_that_commits_a_write_is_not_called(
        self, maria_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        original = maria_db.balance("20001")
        procedure = maria_db.sql("ks_write_{invoices}")
        maria_db.execute(
            maria_db.sql(
                f"CREATE PROCEDURE {procedure}() BEGIN COMMIT; START TRANSACTION READ WRITE; "
                "UPDATE {invoices} SET balance = 1 WHERE invoice_no = '20001'; COMMIT; "
                f"SELECT {COLUMNS} FROM {{invoices}}; END"
            )
        )
        maria_db.cleanup.append(f"DROP PROCEDURE IF EXISTS {procedure}")

        error = pass_over(maria_db, sim, tmp_path, f"CALL {procedure}()")

        assert maria_db.balance("20001") == original
        assert error is not None
        assert "the query is a CALL statement, not a SELECT" in error

    def test_mariadb_select_into_outfile_writes_no_file(
        self, maria_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """As root (FILE privilege), the server would write the file: it is never asked."""
        folder = Path(tempfile.mkdtemp(prefix="ks-outfile-"))
        try:
            folder.chmod(0o777)  # the server's own user writes there
            target = folder / "invoices.txt"
            query = maria_db.sql(f"SELECT {COLUMNS} FROM {{invoices}} INTO OUTFILE '{target}'")

            error = pass_over(maria_db, sim, tmp_path, query)

            assert not target.exists()
            assert error is not None
            assert "INTO OUTFILE, which writes a file on the database server" in error
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def test_postgresql_dblink_exec_does_not_write_through_its_own_connection(
        self, pg_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """dblink's connection is not the read-only session: only the parser stops it."""
        pg_db.execute("CREATE EXTENSION IF NOT EXISTS dblink")
        original = pg_db.balance("20001")
        write = pg_db.sql("UPDATE {invoices} SET balance = 1 WHERE invoice_no = ''20001''")
        query = pg_db.sql(
            f"SELECT {COLUMNS}, dblink_exec('host=127.0.0.1 port=5432 dbname=test "
            f"user=postgres', '{write}') AS done FROM {{invoices}}"
        )

        error = pass_over(pg_db, sim, tmp_path, query)

        assert pg_db.balance("20001") == original
        assert error is not None
        assert "calls dblink_exec(), which runs SQL text over a connection of its own" in error

    def test_check_reports_the_refusal(self, maria_db: Backend, sim: Sim, tmp_path: Path) -> None:
        """`kravia-sync check` names the key and the reason, and fails."""
        settings = fixture_settings(maria_db, query="CALL anything()")
        config = sql_config(tmp_path, sim, settings)

        result = run_cli("check", "--config", str(config), cwd=tmp_path)

        assert result.returncode == 1, result.stdout + result.stderr
        output = " ".join((result.stdout + result.stderr).split())
        assert "sources.erp.settings.query" in output
        assert "the query is a CALL statement, not a SELECT" in output

    def test_postgresql_reads_strings_as_the_parser_does(
        self, pg_db: Backend, tmp_path: Path
    ) -> None:
        """A user whose default is standard_conforming_strings = off would have `\\'` read as
        a quote inside a string, where the parser sees the string end: the connector's
        sessions switch it on, so the server reads the text the parser read."""
        role = pg_db.sql("ks_role_{invoices}")
        pg_db.execute(f"CREATE ROLE {role} LOGIN")
        pg_db.cleanup.append(f"DROP ROLE IF EXISTS {role}")
        pg_db.execute(f"ALTER ROLE {role} SET standard_conforming_strings = off")
        query = (
            "SELECT 'n' AS invoice_number, DATE '2026-01-01' AS invoice_date, "
            "DATE '2026-01-02' AS due_date, 1.00 AS amount, 'a\\' AS debtor_name, "
            "'b' AS address_line1, '0150' AS postal_code, 'Oslo' AS city"
        )
        url = pg_db.url.replace("postgres@", f"{role}@")
        made = connector(pg_db, tmp_path, url=url, query=query, document_query=None, columns=None)

        (record,) = records(made)

        assert record.fields["debtor_name"] == "a\\"
        assert record.fields["address_line1"] == "b"


def test_the_server_could_write_the_outfile_were_it_asked(
    maria_db: Backend, tmp_path: Path
) -> None:
    """The OUTFILE test means something: as root, this server writes such a file."""
    folder = Path(tempfile.mkdtemp(prefix="ks-outfile-"))
    try:
        folder.chmod(0o777)
        target = folder / "probe.txt"
        maria_db.execute(f"SELECT 1 INTO OUTFILE '{target}'")
        assert target.exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
