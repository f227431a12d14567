"""`kravia-sync check` on an SQL source: it connects and runs each configured query for its
columns alone, so a refused password, an unreachable server, a missing column or a failing
query fails it with a clear message (never the password); a database user that could write is
a warning, printed, that fails nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import quote

from sql_fixture import (
    QUERY,
    Backend,
    connector,
    database_user,
    fixture_settings,
    open_backend,
    sql_config,
)
from support import Sim, cli_env, run_cli

from connectors.sql._privileges import granted_warnings, mysql_grantee, postgres_warnings
from connectors.sql._rows import no_rows_of

PASSWORD = "Hemmelig-Æ@pw/7%Zq"
PASSWORD_IN_URL = quote(PASSWORD, safe="")


def check(config: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("check", "--config", str(config), cwd=tmp_path, env=cli_env(**env))


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    """Everything `check` printed, on one line (the terminal width folds long lines)."""
    return " ".join((result.stdout + result.stderr).split())


def assert_no_password(result: subprocess.CompletedProcess[str]) -> None:
    for secret in (PASSWORD, PASSWORD_IN_URL):
        assert secret not in result.stdout + result.stderr


class TestProblems:
    def test_a_wrong_password_fails_the_check(self, sim: Sim, tmp_path: Path) -> None:
        """MariaDB refuses root with this password: check connects, so it says so."""
        with open_backend("mariadb", tmp_path / "db") as db:
            settings = fixture_settings(db, password_env="KS_TEST_DB_PASSWORD")  # noqa: S106
            config = sql_config(tmp_path, sim, settings)

            result = check(config, tmp_path, KS_TEST_DB_PASSWORD=PASSWORD)

        assert result.returncode == 1, result.stdout + result.stderr
        output = output_of(result)
        assert "error: source erp: cannot connect to mariadb+pymysql://root:***@" in output
        assert "Access denied for user 'root'" in output
        assert "ok source erp answers" not in output
        assert_no_password(result)

    def test_an_unreachable_server_fails_the_check(self, sim: Sim, tmp_path: Path) -> None:
        """Nothing listens on port 1; the password in the URL is hidden in the message."""
        for scheme in ("postgresql", "mariadb"):
            url = f"{scheme}://kravia:{PASSWORD_IN_URL}@127.0.0.1:1/test"
            config = sql_config(tmp_path, sim, {"url": url, "query": "SELECT 1 AS x"})

            result = check(config, tmp_path)

            assert result.returncode == 1, result.stdout + result.stderr
            output = output_of(result)
            assert "error: source erp: cannot connect to" in output
            assert "kravia:***@127.0.0.1:1/test" in output
            assert_no_password(result)

    def test_a_missing_column_is_named(self, server_db: Backend, sim: Sim, tmp_path: Path) -> None:
        """The query runs without its rows, and the field without a column is named."""
        query = server_db.sql(QUERY, extra="").replace("c.name AS debtor_name,", "")
        config = sql_config(tmp_path, sim, fixture_settings(server_db, query=query))

        result = check(config, tmp_path)

        assert result.returncode == 1, result.stdout + result.stderr
        output = output_of(result)
        assert "the query returns no column for the field 'debtor_name'" in output
        assert "[sources.settings.columns]" in output  # the advice, not eaten as markup

    def test_a_failing_query_is_reported_with_the_databases_reason(
        self, server_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        query = server_db.sql(QUERY, extra="").replace(
            server_db.tables["invoices"], "ks_no_such_table"
        )
        config = sql_config(tmp_path, sim, fixture_settings(server_db, query=query))

        result = check(config, tmp_path)

        assert result.returncode == 1, result.stdout + result.stderr
        output = output_of(result)
        assert "the query failed on" in output
        assert "ks_no_such_table" in output

    def test_the_payments_and_document_queries_are_checked_too(
        self, server_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """Every problem is named, each on its own line."""
        payments = server_db.sql("SELECT invoice_no AS invoice_number FROM {invoices}")
        document = server_db.sql(
            "SELECT pdf, invoice_id FROM {invoice_pdfs} WHERE invoice_id = :invoice_number"
        )
        settings = fixture_settings(server_db, payments_query=payments, document_query=document)
        config = sql_config(tmp_path, sim, settings)

        result = check(config, tmp_path)

        assert result.returncode == 1, result.stdout + result.stderr
        output = output_of(result)
        assert "the payments query returns no column 'payment_id'" in output
        assert "the document query returns 2 columns; it must return one" in output

    def test_a_query_that_is_no_subquery_is_checked_as_written(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A final semicolon and a comment after it: the `LIMIT 0` wrapping fails, and the
        query is run as written instead (a read runs it so too): no false alarm."""
        with open_backend("postgresql", tmp_path / "db") as db:
            query = db.sql(QUERY, extra="") + "; -- the end"
            config = sql_config(tmp_path, sim, fixture_settings(db, query=query))

            result = check(config, tmp_path)

        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok source erp answers with its credentials" in output_of(result)


class TestWarnings:
    def test_a_user_that_may_write_is_a_warning_not_a_failure(
        self, server_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        """The fixture logs in as postgres (a superuser) and MariaDB's root. (The query binds
        `:today`, as a read binds it.)"""
        query = server_db.sql(QUERY, extra="").replace(
            "WHERE i.balance > 0", "WHERE i.balance > 0 AND :today IS NOT NULL"
        )
        config = sql_config(tmp_path, sim, fixture_settings(server_db, query=query))

        result = check(config, tmp_path)

        assert result.returncode == 0, result.stdout + result.stderr
        output = output_of(result)
        assert "ok source erp answers with its credentials" in output
        expected = {
            "postgresql": "warning: source erp: the database user postgres is a superuser",
            "mariadb": "warning: source erp: the database user root@127.0.0.1 may write: ",
        }[server_db.name]
        assert expected in output
        assert "give the source a database user that may only SELECT" in output

    def test_a_select_only_user_gets_no_warning(
        self, server_db: Backend, sim: Sim, tmp_path: Path
    ) -> None:
        with database_user(server_db, PASSWORD) as user:
            host = server_db.url.split("@", 1)[1]
            scheme = server_db.url.split("://", 1)[0]
            url = f"{scheme}://{user}:{PASSWORD_IN_URL}@{host}"
            config = sql_config(tmp_path, sim, fixture_settings(server_db, url=url))

            result = check(config, tmp_path)

        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok source erp answers with its credentials" in output_of(result)
        assert "warning" not in output_of(result)
        assert_no_password(result)

    def test_a_user_with_a_write_grant_on_one_table_is_named(
        self, server_db: Backend, tmp_path: Path
    ) -> None:
        """Not a superuser, but INSERT on the invoices: the warning names table and grant."""
        with database_user(server_db, PASSWORD, privileges="SELECT, INSERT") as user:
            host = server_db.url.split("@", 1)[1]
            scheme = server_db.url.split("://", 1)[0]
            made = connector(server_db, tmp_path, url=f"{scheme}://{user}:{PASSWORD_IN_URL}@{host}")

            warnings = made.check_warnings()

        assert len(warnings) == 1, warnings
        if server_db.name == "postgresql":
            assert (
                f"the database user {user} may write (INSERT, UPDATE, DELETE or TRUNCATE)"
                in (warnings[0])
            )
            assert "to 3 tables" in warnings[0]
            assert server_db.tables["invoices"] in warnings[0]
        else:
            assert f"the database user {user}@% may write: INSERT on test." in warnings[0]
            assert f"test.{server_db.tables['invoices']}" in warnings[0]

    def test_a_writable_sqlite_file_is_a_warning(self, sim: Sim, tmp_path: Path) -> None:
        with open_backend("sqlite", tmp_path) as db:
            query = db.sql(QUERY, extra="").replace(
                "WHERE i.balance > 0", "WHERE i.balance > 0 AND :today IS NOT NULL"
            )
            config = sql_config(tmp_path, sim, fixture_settings(db, query=query))

            result = check(config, tmp_path)

        assert result.returncode == 0, result.stdout + result.stderr
        assert "warning: source erp: the SQLite file" in output_of(result)
        assert "is writable by this user" in output_of(result)


class TestWarningTexts:
    def test_postgresql_names_what_the_user_may_do(self) -> None:
        def warnings(**found: object) -> list[str]:
            held = {"superuser": False, "server_files": False, "tables": 0, "first": [], **found}
            return postgres_warnings("reader", **held)  # type: ignore[arg-type]

        assert warnings() == []
        (files,) = warnings(server_files=True)
        assert "may write files or run programs on the server" in files
        (tables,) = warnings(tables=5, first=["a.x", "a.y", "a.z"])
        assert "to 5 tables: a.x, a.y, a.z and 2 more" in tables
        (superuser,) = warnings(superuser=True, server_files=True, tables=9, first=["a.x"])
        assert "is a superuser" in superuser
        assert "also where the read-only session does not stop it" in superuser

    def test_grants_are_grouped_by_where_they_hold(self) -> None:
        rows = [("SELECT", "erp.*"), ("INSERT", "erp.*"), ("update", "erp.t"), ("DELETE", "*.*")]
        (warning,) = granted_warnings("u@%", rows, frozenset({"INSERT", "UPDATE", "DELETE"}))
        assert "may write: DELETE on *.*; INSERT on erp.*; UPDATE on erp.t;" in warning
        assert granted_warnings("u@%", [("SELECT", "erp.*")], frozenset({"INSERT"})) == []

    def test_a_mariadb_grantee_is_written_as_information_schema_writes_it(self) -> None:
        assert mysql_grantee("kravia@127.0.0.1") == "'kravia'@'127.0.0.1'"
        assert mysql_grantee("odd@name@%") == "'odd@name'@'%'"


class TestWithoutRows:
    def test_sql_server_reads_the_columns_with_top_0_the_others_with_limit_0(self) -> None:
        """SQL Server has no LIMIT; a final semicolon is dropped inside the subquery."""
        query = "SELECT a FROM t;"
        assert no_rows_of(query, "*", "mssql") == (
            "SELECT TOP 0 * FROM (\nSELECT a FROM t\n) AS kravia_sync_q"
        )
        for backend in ("postgresql", "mysql", "sqlite"):
            assert no_rows_of(query, "*", backend) == (
                "SELECT * FROM (\nSELECT a FROM t\n) AS kravia_sync_q LIMIT 0"
            )
