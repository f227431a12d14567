"""How the query's rows become records: which columns are which fields, the digest of a whole
row, record keys, and values as the model takes them (money text parsed exactly)."""

from __future__ import annotations

import contextlib
import hashlib
import operator
import re
import uuid
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.exc import SQLAlchemyError

from kravia_sync import PAYMENT_FIELDS, REQUIRED_PAYMENT_FIELDS, ConnectorError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sqlalchemy.engine import CursorResult
from connectors.sql._settings import HAS_DOCUMENT

__all__ = ["parse_money_text"]


FALSE_TEXT: Final = frozenset({"", "0", "f", "false", "n", "no"})


# Values the record takes unchanged (the model reads blank text as missing).
PLAIN: Final = frozenset({str, Decimal, int, date, datetime, type(None)})


# Values whose repr is exact and stable across processes, so a row of them digests as it is.
REPR_EXACT: Final = PLAIN | {bool, float, bytes, uuid.UUID}


DIGEST_FORMAT: Final = "sql/1"


SERVER_DIGEST_FORMAT: Final = "sql/postgresql-row-hash/1"


ID_FIELDS: Final = ("accounting_invoice_id", "invoice_number")


def payment_columns(keys: Sequence[str], where: str) -> dict[str, int]:
    """Payment field → position in the payments query's rows; the required ones present."""
    if not keys:
        raise ConnectorError(f"the payments query on {where} returns no rows: it must be a SELECT")
    folded = {key.casefold(): position for position, key in enumerate(keys)}
    positions = {field: folded[field] for field in PAYMENT_FIELDS if field in folded}
    missing = [field for field in REQUIRED_PAYMENT_FIELDS if field not in positions]
    if "invoice_number" not in positions and "accounting_invoice_id" not in positions:
        missing.append("invoice_number (or accounting_invoice_id)")
    if missing:
        raise ConnectorError(
            f"the payments query returns no column {', '.join(repr(m) for m in missing)}; its "
            f"columns: {', '.join(keys)}. Alias them in the query; no payment was read"
        )
    return positions


class Layout:
    """How one query's rows become records: which columns are which fields, and the digest
    of a whole row, which covers every column and the way they are mapped.

    The digest is computed here from each column's exact repr, or, with `server_hash`, read
    from the row's last column, where PostgreSQL put a hash of the whole row (`WITH_ROW_HASH`).
    """

    def __init__(
        self,
        backend: str,
        keys: Sequence[str],
        columns: dict[str, int],
        *,
        with_documents: bool,
        server_hash: bool = False,
        session: str = "",
    ) -> None:
        """`backend`: the connector's (`postgresql`, ...); `with_documents`: whether it has a
        document query. Both are part of the digest's seed."""
        self.columns = columns
        self.keys = list(keys)
        self.server_hash = server_hash
        wanted = [(field, position) for field, position in columns.items() if field != HAS_DOCUMENT]
        self.names = tuple(field for field, _ in wanted)
        positions = [position for _, position in wanted]
        # The required fields make at least two columns, so itemgetter returns a tuple.
        self.pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] = operator.itemgetter(*positions)
        layout = (
            SERVER_DIGEST_FORMAT if server_hash else DIGEST_FORMAT,
            self.keys,
            sorted(columns.items()),
            backend,
            with_documents,
            *([session] if server_hash else []),
        )
        self._seed = hashlib.blake2b(repr(layout).encode(), digest_size=16)
        self.seed = int.from_bytes(self._seed.digest()[:8], "big", signed=True)
        self.digest: Callable[[tuple[Any, ...]], str] = (
            self._server_digest if server_hash else self._row_digest
        )

    def _row_digest(self, row: tuple[Any, ...]) -> str:
        """A hash of the layout and the whole row, every column by its exact repr (bytes, not
        a memoryview's address); a type with an unstable repr costs a revalidation, never a
        missed change."""
        if not REPR_EXACT.issuperset(map(type, row)):
            row = tuple(
                bytes(value) if isinstance(value, memoryview | bytearray) else value
                for value in row
            )
        digest = self._seed.copy()
        digest.update(repr(row).encode(errors="surrogatepass"))
        return digest.hexdigest()

    @staticmethod
    def _server_digest(row: Sequence[Any]) -> str:
        """The server's hash of the row, seeded with the layout's (its last column)."""
        return str(row[-1])


def wrapped(query: str, select: str) -> str:
    """`SELECT <select> FROM (query) AS kravia_sync_q`, on lines of their own so that a
    comment ending the query cannot swallow the parenthesis; a final semicolon is dropped."""
    inner = query.strip().removesuffix(";")
    return f"SELECT {select} FROM (\n{inner}\n) AS {SUBQUERY}"  # noqa: S608 - the configured query itself


def no_rows_of(query: str, select: str, backend: str) -> str:
    """`SELECT <select> FROM (query) AS kravia_sync_q` returning no row, only the columns:
    `LIMIT 0`, on SQL Server (which has no LIMIT) `TOP 0`."""
    if backend == "mssql":
        return wrapped(query, f"TOP 0 {select}")
    return f"{wrapped(query, select)} LIMIT 0"


def close_result(result: CursorResult[Any] | None) -> None:
    """Close a result (an unbuffered MySQL result must be finished before the connection runs
    more); errors while closing are not errors of the read."""
    if result is not None:
        with contextlib.suppress(SQLAlchemyError, OSError):
            result.close()


def record_key(fields: Mapping[str, object], number: int) -> str:
    """The record's name for people: its invoice number (and its own id when that differs),
    else its row number."""
    invoice_number = text_of(fields.get("invoice_number"))
    key = f"row {number}" if invoice_number is None else f"invoice {invoice_number}"
    own_id = text_of(fields.get("accounting_invoice_id"))
    if invoice_number is not None and own_id is not None and own_id != invoice_number:
        key = f"{key} (id {own_id})"
    return key


def value_of(value: object, *, sqlite: bool) -> object:
    """A column value as the record carries it (None: the field is left out)."""
    if isinstance(value, float):
        # SQLite's NUMERIC affinity stores 12480.50 as the REAL 12480.5: its shortest repr is
        # the decimal written. Elsewhere a float column is a schema error the model reports.
        return Decimal(repr(value)) if sqlite else value
    if isinstance(value, memoryview | bytearray | bytes):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw  # the model says it is not text
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def text_of(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text_ = str(value).strip()
    return text_ or None


def truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().casefold() not in FALSE_TEXT
    return bool(value)


MONEY_NOISE = re.compile(r"[^\d.,\-()]")


def parse_money_text(raw: str) -> Decimal | str:
    """PostgreSQL's MONEY text (`$12,480.50`, `kr 12 480,50`, `12.480,50 €`) as a `Decimal`.

    The text depends on the server's `lc_monetary`; the decimal separator is the last `.` or
    `,` when one or two digits follow it. Anything ambiguous is returned as text for the model
    to refuse with its reason.
    """
    negative = "-" in raw or "(" in raw
    digits = MONEY_NOISE.sub("", raw).replace("-", "").replace("(", "").replace(")", "")
    position = max(digits.rfind("."), digits.rfind(","))
    if position >= 0 and len(digits) - position - 1 in {1, 2}:
        whole, fraction = digits[:position], digits[position + 1 :]
    else:
        whole, fraction = digits, ""
        if position >= 0 and len(digits) - position - 1 != 3:
            return raw
        if position >= 0 and "." in digits and "," in digits:
            return raw
    whole = whole.replace(".", "").replace(",", "")
    if not whole.isdigit() or (fraction and not fraction.isdigit()):
        return raw
    try:
        amount = Decimal(f"{whole}.{fraction}" if fraction else whole)
    except InvalidOperation:  # pragma: no cover - guarded by the checks above
        return raw
    return -amount if negative else amount


def register_money_loader(dbapi_connection: Any) -> None:  # noqa: ANN401 - the driver's
    """Load PostgreSQL MONEY as `Decimal` on this psycopg connection."""
    from psycopg.adapt import Loader  # noqa: PLC0415 - psycopg is an optional extra

    class MoneyLoader(Loader):
        def load(self, data: Any) -> Decimal | str:  # noqa: ANN401 - psycopg's Buffer
            return parse_money_text(bytes(data).decode("utf-8"))

    dbapi_connection.adapters.register_loader("money", MoneyLoader)


# The hash, seeded with the layout's (so another column mapping hashes differently), as the
# hexadecimal text that is the record's digest (at most 16 digits: never mistaken for the
# 32 of a digest computed here).
SUBQUERY: Final = "kravia_sync_q"
