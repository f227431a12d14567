"""Whether an SQL source's database user could write, as `kravia-sync check` warns: the
privileges it holds, asked of the server (PostgreSQL's role attributes and table privileges,
MariaDB/MySQL's information_schema, SQL Server's `fn_my_permissions`), or, for SQLite, whether
the file is writable. A SELECT-only user is the wall that holds when the parser and the
read-only session do not (see `_readonly`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import text

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy.engine import Connection

__all__ = []


ADVICE: Final = "give the source a database user that may only SELECT (see the README)"


# PostgreSQL: the user, whether it is a superuser or may write files or run programs on the
# server, how many tables (and views, foreign tables) it may write to, and the first of them.
_POSTGRES: Final = """
WITH writable AS (
  SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'f')
    AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg!_%' ESCAPE '!'
    AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
)
SELECT current_user,
       r.rolsuper,
       pg_has_role(current_user, 'pg_write_server_files', 'USAGE')
         OR pg_has_role(current_user, 'pg_execute_server_program', 'USAGE'),
       (SELECT count(*) FROM writable),
       ARRAY(SELECT name FROM writable ORDER BY name LIMIT 3)
FROM pg_catalog.pg_roles r
WHERE r.rolname = current_user
"""


# MariaDB/MySQL privileges that change data, schema, routines or files (SUPER and READ_ONLY
# ADMIN also write when the server is read-only).
MYSQL_WRITING: Final = frozenset(
    {
        "INSERT",
        "UPDATE",
        "DELETE",
        "DELETE HISTORY",
        "CREATE",
        "DROP",
        "ALTER",
        "INDEX",
        "CREATE VIEW",
        "CREATE ROUTINE",
        "ALTER ROUTINE",
        "EXECUTE",
        "TRIGGER",
        "EVENT",
        "FILE",
        "SUPER",
        "READ_ONLY ADMIN",
        "CREATE USER",
    }
)


# Privileges held globally, on databases, on tables and on columns, for the user and its
# current role.
_MYSQL: Final = """
SELECT PRIVILEGE_TYPE, '*.*' FROM information_schema.USER_PRIVILEGES
WHERE GRANTEE IN (:user, :role)
UNION ALL
SELECT PRIVILEGE_TYPE, CONCAT(TABLE_SCHEMA, '.*') FROM information_schema.SCHEMA_PRIVILEGES
WHERE GRANTEE IN (:user, :role)
UNION ALL
SELECT PRIVILEGE_TYPE, CONCAT(TABLE_SCHEMA, '.', TABLE_NAME)
FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE IN (:user, :role)
UNION ALL
SELECT PRIVILEGE_TYPE, CONCAT(TABLE_SCHEMA, '.', TABLE_NAME)
FROM information_schema.COLUMN_PRIVILEGES WHERE GRANTEE IN (:user, :role)
"""


MSSQL_WRITING: Final = frozenset(
    {
        "CONTROL SERVER",
        "ALTER ANY DATABASE",
        "CONTROL",
        "ALTER",
        "INSERT",
        "UPDATE",
        "DELETE",
        "EXECUTE",
        "CREATE TABLE",
        "CREATE PROCEDURE",
    }
)


# The user's effective permissions on the server and in the database (roles included).
_MSSQL: Final = """
SELECT permission_name, 'the server' FROM fn_my_permissions(NULL, 'SERVER')
UNION ALL
SELECT permission_name, 'the database' FROM fn_my_permissions(NULL, 'DATABASE')
"""


def write_warnings(connection: Connection, backend: str) -> list[str]:
    """Why the database user behind `connection` could write (empty when it holds no writing
    privilege the server reports)."""
    if backend == "postgresql":
        user, superuser, server_files, tables, first = connection.execute(text(_POSTGRES)).one()
        return postgres_warnings(
            str(user), superuser=superuser, server_files=server_files, tables=tables, first=first
        )
    if backend in {"mysql", "mariadb"}:
        user, role = connection.execute(text("SELECT CURRENT_USER(), CURRENT_ROLE()")).one()
        grantee = mysql_grantee(str(user))
        role_grantee = grantee if role is None else f"'{role}'"
        rows = connection.execute(text(_MYSQL), {"user": grantee, "role": role_grantee}).all()
        return granted_warnings(str(user), rows, MYSQL_WRITING)
    if backend == "mssql":
        user = connection.execute(text("SELECT CURRENT_USER")).scalar_one()
        rows = connection.execute(text(_MSSQL)).all()
        return granted_warnings(str(user), rows, MSSQL_WRITING)
    if backend == "sqlite":
        return sqlite_warnings(connection.engine.url.database)
    return [f"cannot tell whether the database user may write on {backend}: {ADVICE}"]


def postgres_warnings(
    user: str, *, superuser: bool, server_files: bool, tables: int, first: Sequence[str]
) -> list[str]:
    """Why a PostgreSQL user could write: a superuser, a member of the roles that write
    server files or run programs, or `tables` tables it may write to (`first` of them)."""
    if superuser:
        superuser_warning = (
            f"the database user {user} is a superuser: it may write anything, also where the "
            "read-only session does not stop it (dblink's own connections, files on the "
            f"server); {ADVICE}"
        )
        return [superuser_warning]
    warnings = []
    if server_files:
        warnings.append(
            f"the database user {user} may write files or run programs on the server "
            f"(pg_write_server_files, pg_execute_server_program); {ADVICE}"
        )
    if tables:
        more = f" and {tables - len(first)} more" if tables > len(first) else ""
        plural = "s" if tables > 1 else ""
        warnings.append(
            f"the database user {user} may write (INSERT, UPDATE, DELETE or TRUNCATE) to "
            f"{tables} table{plural}: {', '.join(first)}{more}; {ADVICE}"
        )
    return warnings


def mysql_grantee(user: str) -> str:
    """`CURRENT_USER()`'s `name@host` as information_schema writes a grantee: `'name'@'host'`."""
    name, _, host = user.rpartition("@")
    return f"'{name}'@'{host}'"


def granted_warnings(
    user: str, rows: Iterable[Sequence[Any]], writing: frozenset[str]
) -> list[str]:
    """One warning naming the writing privileges of (privilege, where) `rows`, grouped by
    where they hold; none when there are none."""
    scopes: dict[str, set[str]] = {}
    for privilege, scope in rows:
        name = str(privilege).upper()
        if name in writing:
            scopes.setdefault(str(scope), set()).add(name)
    if not scopes:
        return []
    held = "; ".join(
        f"{', '.join(sorted(privileges))} on {scope}"
        for scope, privileges in sorted(scopes.items())
    )
    return [f"the database user {user} may write: {held}; {ADVICE}"]


def sqlite_warnings(database: str | None) -> list[str]:
    if not database or database == ":memory:" or database.startswith("file:"):
        return []
    if not os.access(Path(database), os.W_OK):
        return []
    warning = (
        f"the SQLite file {database} is writable by this user: the connector opens it with "
        "query_only, but a file it may not write (chmod a-w, or a read-only mount) is the "
        "wall that holds"
    )
    return [warning]
