"""The SQL connector: overdue invoices from a query against PostgreSQL, MariaDB/MySQL, MS SQL or
SQLite, read-only (`_connector`, which says how). Beside it: its settings (`_settings`), its
database's connections, statements and failures (`_database`), the query's columns
(`_columns`), the invoice copies (`_documents`), the payments query (`_payments`), what differs
between servers (`_server`), how rows become records (`_rows`) and the two-phase read on
PostgreSQL (`_postgres`)."""

from connectors.sql._connector import SqlConnector, SqlDocumentError
from connectors.sql._rows import parse_money_text
from connectors.sql._settings import EXAMPLE_SETTINGS, SqlSettings

__all__ = [
    "EXAMPLE_SETTINGS",
    "SqlConnector",
    "SqlDocumentError",
    "SqlSettings",
    "parse_money_text",
]
