"""The first wall of the SQL source's read-only promise: every configured query is read by an SQL
parser (sqlglot) in its server's dialect before it is ever sent, and refused, with the reason,
unless it is one `SELECT` (or `WITH … SELECT`, or a set operation of SELECTs) in which the
parser sees nothing that writes.

What it refuses: more than one statement; any other statement (`UPDATE`, `CALL`, MariaDB's
`BEGIN NOT ATOMIC … END`, `EXEC`, `DO`, …); a write nested in the SELECT (PostgreSQL's
data-modifying `WITH`); `SELECT … INTO` (a table, variables, `OUTFILE`, `DUMPFILE`); locking
reads (`FOR UPDATE`, `FOR SHARE`, `LOCK IN SHARE MODE`, SQL Server's `UPDLOCK` and other hints
that take or hold locks); calls of the functions in `WRITING_FUNCTIONS`; MariaDB/MySQL
executable comments (`/*! … */`, which the server runs); and, failing closed, any text the
parser cannot read.

What it cannot see: a user-defined function or procedure that writes when a SELECT calls it,
a view or trigger that does, a function reached through an operator, and text a server reads
differently from the parser because of its settings (PostgreSQL's `standard_conforming_strings
= off`, which the connector's sessions switch on; MariaDB/MySQL's `NO_BACKSLASH_ESCAPES` or
`ANSI_QUOTES` modes). The session's read-only setting and, above all, a database user that may
only SELECT are the walls behind it (see the README)."""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Final

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.errors import ParseError, TokenError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlglot import Token

__all__ = ["WRITING_FUNCTIONS", "dialect_of", "refusal"]


# SQLAlchemy backend → sqlglot dialect. Another backend is read in the dialect of its own name
# when sqlglot has one, else in sqlglot's generic dialect.
_DIALECTS: Final[dict[str, str]] = {
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mssql": "tsql",
    "sqlite": "sqlite",
}


_DBLINK: Final = "runs SQL text over a connection of its own, outside this read-only session"
_SQL_TEXT: Final = "runs SQL text the parser cannot read"
_SERVER_FILE: Final = "writes a file on the database server"
_LARGE_OBJECT: Final = "writes a large object"
_SEQUENCE: Final = "advances a sequence"
_SETTING: Final = "changes the session's settings (it could undo the read-only session)"
_SERVER: Final = "acts on the server or on other sessions"
_REMOTE: Final = "runs SQL text on another server"
_SHELL: Final = "runs a command on the database server"
_EXTENSION: Final = "loads code into the database"
_FILE: Final = "writes a file"

# Functions that write, or that run SQL text the parser cannot look into, per backend (names as
# called, compared without regard to case or schema), each with why. A call of any function
# whose name starts with a name in `_WRITING_PREFIXES` is refused too.
WRITING_FUNCTIONS: Final[dict[str, dict[str, str]]] = {
    "postgresql": {
        "dblink": _DBLINK,
        "dblink_exec": _DBLINK,
        "query_to_xml": _SQL_TEXT,
        "query_to_xmlschema": _SQL_TEXT,
        "query_to_xml_and_xmlschema": _SQL_TEXT,
        "lo_export": _SERVER_FILE,
        "pg_file_write": _SERVER_FILE,
        "pg_file_rename": _SERVER_FILE,
        "pg_file_unlink": _SERVER_FILE,
        "pg_file_sync": _SERVER_FILE,
        "lo_import": _LARGE_OBJECT,
        "lo_create": _LARGE_OBJECT,
        "lo_creat": _LARGE_OBJECT,
        "lo_from_bytea": _LARGE_OBJECT,
        "lo_put": _LARGE_OBJECT,
        "lo_unlink": _LARGE_OBJECT,
        "nextval": _SEQUENCE,
        "setval": _SEQUENCE,
        "set_config": _SETTING,
        "pg_terminate_backend": _SERVER,
        "pg_cancel_backend": _SERVER,
        "pg_reload_conf": _SERVER,
        "pg_rotate_logfile": _SERVER,
        "pg_promote": _SERVER,
        "pg_switch_wal": _SERVER,
        "pg_create_restore_point": _SERVER,
        "pg_create_physical_replication_slot": _SERVER,
        "pg_create_logical_replication_slot": _SERVER,
        "pg_drop_replication_slot": _SERVER,
    },
    "mysql": {
        "nextval": _SEQUENCE,
        "setval": _SEQUENCE,
        "sys_exec": _SHELL,
        "sys_eval": _SHELL,
    },
    "mssql": {
        "openquery": _REMOTE,
        "openrowset": _REMOTE,
        "opendatasource": _REMOTE,
    },
    "sqlite": {
        "load_extension": _EXTENSION,
        "writefile": _FILE,
    },
}
WRITING_FUNCTIONS["mariadb"] = WRITING_FUNCTIONS["mysql"]


# Every dblink function (dblink_open, dblink_send_query, dblink_connect_u, …) works through
# dblink's own connections.
_WRITING_PREFIXES: Final[dict[str, dict[str, str]]] = {"postgresql": {"dblink": _DBLINK}}


# SQL Server table hints that take update or exclusive locks, or hold shared ones to the end
# of the transaction (NOLOCK, READPAST, INDEX(…) and the like are fine).
_LOCKING_HINTS: Final = frozenset(
    {"UPDLOCK", "XLOCK", "TABLOCK", "TABLOCKX", "HOLDLOCK", "SERIALIZABLE", "REPEATABLEREAD"}
)


# Statements and clauses that have no place inside a read: where the parser finds one, even
# nested in the SELECT (PostgreSQL's `WITH u AS (UPDATE … RETURNING *) SELECT …`), the query
# is refused.
_WRITES: Final[tuple[type[exp.Expr], ...]] = (
    exp.DML,
    exp.DDL,
    exp.Merge,
    exp.Command,
    exp.TruncateTable,
    exp.Drop,
    exp.Alter,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Grant,
    exp.Revoke,
    exp.Pragma,
    exp.Attach,
    exp.Detach,
    exp.Set,
    exp.Use,
    exp.Execute,
    exp.Analyze,
    exp.Kill,
    exp.LoadData,
    exp.Cache,
    exp.Uncache,
    exp.Refresh,
    exp.NextValueFor,
)


# How a query may begin: SELECT, WITH, or a parenthesis around either.
_QUERY_STARTS: Final = frozenset({TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN})


# SQLAlchemy's bind parameters and its escaped colon (`\:`), as `text()` reads them: the parser
# sees the query as the server gets it (a bind stays a `:name` placeholder).
_ESCAPED_COLON: Final = re.compile(r"\\(:\w*)(?![:\w])", re.UNICODE)


def dialect_of(backend: str) -> str:
    """The sqlglot dialect that reads `backend`'s SQL."""
    if backend in _DIALECTS:
        return _DIALECTS[backend]
    return backend if backend in sqlglot.Dialect.classes else ""


def refusal(query: str, backend: str, what: str = "the query") -> str | None:
    """Why `query` (named `what` in the reason) may not run on `backend`, or None when it is
    one SELECT in which the parser sees nothing that writes."""
    dialect = dialect_of(backend)
    sql = _ESCAPED_COLON.sub(r"\1", query)
    try:
        tokens = sqlglot.tokenize(sql, read=dialect)
    except TokenError as exc:
        return f"{what} cannot be read as SQL ({exc}); it is refused unread"
    if not tokens:
        return f"{what} is empty"
    reason = _token_refusal(tokens, backend)
    if reason is not None:
        return f"{what} {reason}"
    try:
        statements = [
            statement
            for statement in sqlglot.parse(sql, read=dialect)
            if statement is not None and not isinstance(statement, exp.Semicolon)
        ]
    except ParseError as exc:
        return f"{what} cannot be read as SQL ({_parse_error(exc)}); it is refused unread"
    if len(statements) != 1:
        return f"{what} holds {len(statements)} statements; it must be one SELECT"
    reason = _tree_refusal(statements[0], dialect)
    return None if reason is None else f"{what} {reason}"


def _token_refusal(tokens: Sequence[Token], backend: str) -> str | None:
    """What the tokens alone show: an executable comment, a statement that is no SELECT,
    `SELECT … INTO`, a call of a writing function."""
    if backend in {"mysql", "mariadb"}:
        for token in tokens:
            if any(comment.startswith(("!", "M!")) for comment in token.comments):
                return (
                    "holds an executable comment (/*! … */), whose contents the server runs: "
                    "write them as plain SQL"
                )
    first = tokens[0]
    if first.token_type not in _QUERY_STARTS:
        keyword = first.text.upper()
        return f"is {_article(keyword)} {keyword} statement, not a SELECT"
    for position, token in enumerate(tokens):
        if token.token_type == TokenType.INTO:
            target = tokens[position + 1].text.upper() if position + 1 < len(tokens) else ""
            if target in {"OUTFILE", "DUMPFILE"}:
                return f"is a SELECT … INTO {target}, which writes a file on the database server"
            return "is a SELECT … INTO, which writes (a table or variables)"
    return _function_refusal(tokens, backend)


def _function_refusal(tokens: Sequence[Token], backend: str) -> str | None:
    functions = WRITING_FUNCTIONS.get(backend, {})
    prefixes = _WRITING_PREFIXES.get(backend, {})
    for token, following in itertools.pairwise(tokens):
        if following.token_type != TokenType.L_PAREN:
            continue
        name = token.text.casefold()
        reason = functions.get(name) or next(
            (why for prefix, why in prefixes.items() if name.startswith(prefix)), None
        )
        if reason is not None:
            return f"calls {token.text}(), which {reason}"
    return None


def _tree_refusal(statement: exp.Expr, dialect: str) -> str | None:
    """What the parsed statement shows: not a query, a write inside it, a locking read."""
    if not isinstance(statement, exp.Query):
        keyword = _keyword(statement)
        return f"is {_article(keyword)} {keyword} statement, not a SELECT"
    for node in statement.walk():
        if isinstance(node, _WRITES):
            keyword = _keyword(node)
            return f"holds {_article(keyword)} {keyword} inside its SELECT, which writes"
        if isinstance(node, exp.Into):
            return "is a SELECT … INTO, which writes (a table or variables)"
        if isinstance(node, exp.Lock):
            return (
                f"is a locking read ({node.sql(dialect)}), which takes locks as if to write; "
                "read without it"
            )
        if isinstance(node, exp.WithTableHint):
            hints = sorted(
                {hint.name.upper() for hint in node.expressions} & _LOCKING_HINTS,
            )
            if hints:
                return (
                    f"takes locks with the table hint {', '.join(hints)}; read without it "
                    "(NOLOCK and the like are fine)"
                )
    return None


def _keyword(node: exp.Expr) -> str:
    """The statement's keyword for people (`UPDATE`, `CALL`, …)."""
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    if isinstance(node, exp.NextValueFor):
        return "NEXT VALUE FOR"
    return node.key.upper()


def _article(word: str) -> str:
    return "an" if word[:1] in set("AEIOU") else "a"


def _parse_error(exc: ParseError) -> str:
    """The parser's reason, with where it stopped (without the terminal's highlighting)."""
    if not exc.errors:
        return str(exc).splitlines()[0]
    error = exc.errors[0]
    near = str(error.get("highlight") or "").strip()
    where = f"line {error.get('line')}, column {error.get('col')}"
    return f"{error.get('description')} at {where}" + (f", near {near!r}" if near else "")
