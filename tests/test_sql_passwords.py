"""Database passwords reach each server as it expects them, however they are given (the
environment, a file, the URL): æøå, spaces and the characters a URL must escape included. Each
test makes a real user with such a password on the real server."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from sql_fixture import (
    INVOICES,
    Backend,
    connector,
    database_user,
    open_backend,
    records,
)

from connectors.sql import SqlConnector
from kravia_sync.connector import ConnectorError

# Letters MariaDB's clients send as UTF-8 (PyMySQL alone would send them as latin-1), spaces,
# and what a URL must escape.
PASSWORD = "Blåbær syltetøy @:/ Æ%Ø?#"
GIVEN = ("environment", "file", "url")


def connector_as(
    backend: Backend,
    user: str,
    password: str,
    *,
    given: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> SqlConnector:
    """The fixture's connector logging in as `user`, with `password` given the way `given`
    says."""
    host = backend.url.split("@", 1)[1]
    scheme = backend.url.split("://", 1)[0]
    if given == "url":
        url = f"{scheme}://{user}:{quote(password, safe='')}@{host}"
        return connector(backend, tmp_path, url=url)
    url = f"{scheme}://{user}@{host}"
    if given == "environment":
        monkeypatch.setenv("KS_TEST_DB_PASSWORD", password)
        return connector(backend, tmp_path, url=url, password_env="KS_TEST_DB_PASSWORD")  # noqa: S106 - a name
    (tmp_path / "db_password").write_text(password + "\n", encoding="utf-8")
    return connector(backend, tmp_path, url=url, password_file="db_password")  # noqa: S106 - a file name


class TestMariaDB:
    @pytest.mark.parametrize("given", GIVEN)
    def test_a_password_with_nordic_letters_spaces_and_url_characters_logs_in(
        self, given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """MariaDB checks the password: the read works only if it arrives as UTF-8."""
        with (
            open_backend("mariadb", tmp_path / "db") as db,
            database_user(db, PASSWORD) as user,
        ):
            made = connector_as(
                db, user, PASSWORD, given=given, tmp_path=tmp_path, monkeypatch=monkeypatch
            )

            assert len(records(made)) == len(INVOICES) - 1

    def test_a_wrong_password_is_still_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The test above means something: one letter off, and MariaDB refuses."""
        with (
            open_backend("mariadb", tmp_path / "db") as db,
            database_user(db, PASSWORD) as user,
        ):
            made = connector_as(
                db,
                user,
                PASSWORD[:-1],
                given="environment",
                tmp_path=tmp_path,
                monkeypatch=monkeypatch,
            )

            with pytest.raises(ConnectorError, match="Access denied"):
                records(made)


class TestPostgreSQL:
    @pytest.mark.parametrize("given", GIVEN)
    def test_the_password_reaches_libpq_intact(
        self, given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """This server trusts connections from 127.0.0.1 (pg_hba `trust`), so it never asks
        for the password: what can be checked is that libpq holds exactly the password given
        (`info.password`), and that the read works as the new SELECT-only role."""
        with (
            open_backend("postgresql", tmp_path / "db") as db,
            database_user(db, PASSWORD) as user,
        ):
            made = connector_as(
                db, user, PASSWORD, given=given, tmp_path=tmp_path, monkeypatch=monkeypatch
            )
            connection = made._database.connect()
            try:
                info = connection.connection.driver_connection.info  # type: ignore[union-attr]
                assert info.password == PASSWORD
                assert info.user == user
            finally:
                made.close_connection(connection)

            assert len(records(made)) == len(INVOICES) - 1
