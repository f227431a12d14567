"""An invoice's other ids: the ids a source gave an invoice after its case was registered
under another (see `kravia_sync.engine.drift`). Few: read whole for each source read."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from kravia_sync.state.database import Database
from kravia_sync.state.records import InvoiceAlias
from kravia_sync.state.stored import utc_text

__all__ = ["AliasTable"]


class AliasTable(Database):
    """The `invoice_aliases` table."""

    def aliases(self, source: str) -> dict[str, str]:
        """The source's other ids, each with the accountingInvoiceId of its case."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT alias_id, accounting_invoice_id FROM invoice_aliases WHERE source = ?",
                (source,),
            ).fetchall()
        return {str(alias): str(aid) for alias, aid in rows}

    def case_of_alias(self, alias: str) -> str | None:
        """The accountingInvoiceId of the case whose later id `alias` is (of any source);
        None when it is no alias, or the alias of cases of several sources."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT DISTINCT accounting_invoice_id FROM invoice_aliases WHERE alias_id = ?",
                (alias,),
            ).fetchall()
        return str(rows[0][0]) if len(rows) == 1 else None

    def alias_records(self, source: str | None = None) -> list[InvoiceAlias]:
        """Every recorded alias (of one source, when named), oldest first."""
        query = (
            "SELECT source, alias_id, accounting_invoice_id, invoice_number, recorded_at "
            "FROM invoice_aliases"
        )
        parameters: tuple[str, ...] = ()
        if source is not None:
            query += " WHERE source = ?"
            parameters = (source,)
        with self._read() as connection:
            rows = connection.execute(f"{query} ORDER BY recorded_at, alias_id", parameters)
            return [
                InvoiceAlias(str(s), str(alias), str(aid), str(number), datetime.fromisoformat(at))
                for s, alias, aid, number, at in rows.fetchall()
            ]

    def record_aliases(self, aliases: Iterable[InvoiceAlias]) -> None:
        """Keep these aliases, in one transaction: an alias kept already now names the case
        given here (two invoices may swap ids), and an alias of a case to itself is forgotten
        (the invoice has its case's own id again)."""
        kept: list[tuple[str, str, str, str, str]] = []
        forgotten: list[tuple[str, str]] = []
        for alias in aliases:
            if alias.alias_id == alias.accounting_invoice_id:
                forgotten.append((alias.source, alias.alias_id))
                continue
            kept.append(
                (
                    alias.source,
                    alias.alias_id,
                    alias.accounting_invoice_id,
                    alias.invoice_number,
                    utc_text(alias.at),
                )
            )
        if not kept and not forgotten:
            return
        with self._fenced_write() as connection:
            connection.executemany(
                "DELETE FROM invoice_aliases WHERE source = ? AND alias_id = ?", forgotten
            )
            connection.executemany(
                "INSERT INTO invoice_aliases (source, alias_id, accounting_invoice_id, "
                "invoice_number, recorded_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (source, alias_id) DO UPDATE SET "
                "accounting_invoice_id = excluded.accounting_invoice_id, "
                "invoice_number = excluded.invoice_number, recorded_at = excluded.recorded_at",
                kept,
            )
