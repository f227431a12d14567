"""The local state store: cases, the journal of remote calls, runs, quarantine and the lease.

`StateStore` is one SQLite database (`kravia_sync.state.database`) with the reads and writes of
each group of its tables: cases (`case_table`), payments and credit notes (`payment_table`),
what a person decides (`operator_tables`), an invoice's other ids (`alias_table`), what
Kravia told us (`kravia_tables`), the runs' own books and the writer lease (`run_tables`), and
the booking of Kravia's payouts (`payout_tables`).
"""

from __future__ import annotations

from kravia_sync.state.alias_table import AliasTable
from kravia_sync.state.case_table import CaseTable
from kravia_sync.state.kravia_tables import KraviaTables
from kravia_sync.state.operator_tables import OperatorTables
from kravia_sync.state.payment_table import PaymentTable
from kravia_sync.state.payout_tables import PayoutTables
from kravia_sync.state.run_tables import RunTables

__all__ = ["StateStore"]


class StateStore(
    CaseTable, PaymentTable, OperatorTables, KraviaTables, RunTables, AliasTable, PayoutTables
):
    """The state database, with every table's reads and writes (see `Database` for the
    connections, the transactions and the writer's fence)."""
