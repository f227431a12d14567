"""No-op pass over overdue invoices in PostgreSQL: rows per second and peak memory.

    python bench/sql_noop.py [--counts 100000 1000000]

For each count: fills a PostgreSQL table (database `test` on 127.0.0.1) with that many overdue
invoices, records a first sync in the state store, then times `kravia-sync reconcile --json`
(a process of its own) with nothing to do, then once more after one row changed. Targets:
>= 100,000 rows/s, and the peak memory of the largest run within 1.2 x that of the smallest
(flat).

The first sync is recorded through the engine's own code (the sql connector reads every row,
the engine computes each record's hash and fingerprint and stores a started case) rather than
through 2 million calls to the simulator, which would take most of an hour; the simulator still
answers the timed pass, and the benchmark checks that it received no call.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from common import SimulatorProcess, run_reconcile, write_config

from connectors.sql import SqlConnector
from kravia_sync.connector import SourceRecord
from kravia_sync.engine.plan import record_hash
from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.model import Invoice
from kravia_sync.state.store import StateStore

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TABLE = "bench_invoices"
QUERY = f"""
SELECT invoice_number, invoice_date, due_date, amount, currency, debtor_name, debtor_number,
       debtor_email, address_line1, postal_code, city
FROM {TABLE}
WHERE due_date <= :today - 14
"""


def fill_table(count: int) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {TABLE}")
        db.execute(
            f"""CREATE TABLE {TABLE} (
                invoice_number text PRIMARY KEY, invoice_date date NOT NULL,
                due_date date NOT NULL, amount numeric(12, 2) NOT NULL, currency text,
                debtor_name text NOT NULL, debtor_number text, debtor_email text,
                address_line1 text NOT NULL, postal_code text NOT NULL, city text NOT NULL)"""
        )
        db.execute(
            f"""INSERT INTO {TABLE}
                SELECT (100000 + n)::text, current_date - 60, current_date - 40,
                       (n %% 9000 + 100) + 0.50, 'NOK', 'Kunde ' || n || ' Ødegård',
                       'K' || n, 'kunde' || n || '@example.com', 'Storgata ' || (n %% 300 + 1),
                       '0150', 'Oslo'
                FROM generate_series(1, %s) AS n""",
            (count,),
        )
        db.execute(f"ANALYZE {TABLE}")


def change_one_row() -> None:
    """Raise one invoice's amount (a change noted for a person: no remote call)."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as db:
        db.execute(f"UPDATE {TABLE} SET amount = amount + 1 WHERE invoice_number = '100001'")


def record_first_sync(directory: Path) -> int:
    """Store a started case for every row, computed as a real pass would."""
    connector = SqlConnector.from_settings({"url": URL, "query": QUERY}, base_dir=directory)
    now = datetime.now(UTC)
    batch: list[CaseState] = []
    stored = 0
    with StateStore(directory / "state" / "kravia-sync.db") as store:
        for record in connector.read():
            assert isinstance(record, SourceRecord), record
            invoice = Invoice.from_record(record.fields)
            batch.append(
                CaseState(
                    accounting_invoice_id=invoice.accounting_invoice_id,
                    source="erp",
                    record_key=record.key,
                    invoice_number=invoice.invoice_number,
                    phase=Phase.STARTED,
                    fingerprint=invoice.fingerprint(),
                    record_hash=record_hash(record),
                    has_document=False,
                    first_seen_at=now,
                    updated_at=now,
                    kravia_id=2_000_000 + stored,
                    registered_fingerprint=invoice.fingerprint(),
                )
            )
            stored += 1
            if len(batch) == 10_000:
                store.write_batch(batch, [])
                batch = []
        store.write_batch(batch, [])
        # A real first sync searched Kravia's cases before its first register.
        store.set_meta("mirror_cursor", now.isoformat())
    return stored


def sql_source() -> str:
    query = QUERY.replace('"', '\\"').strip().replace("\n", " ")
    return f"""
[[sources]]
name = "erp"
connector = "sql"
[sources.settings]
url = "{URL}"
query = "{query}"
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    results = []
    with SimulatorProcess() as simulator:
        for count in args.counts:
            with tempfile.TemporaryDirectory() as tmp:
                directory = Path(tmp)
                fill_table(count)
                stored = record_first_sync(directory)
                write_config(directory, simulator.base_url, source=sql_source())
                before = simulator.calls()["total"]
                runs = [run_reconcile(directory) for _ in range(args.repeat)]
                for run in runs:
                    assert run["code"] == 0, run["stderr"]
                    assert run["summary"]["counts"]["unchanged"] == count, run["summary"]
                best = min(runs, key=lambda run: run["summary"]["duration_seconds"])
                # One row changed: the second phase reads just that row back in full.
                change_one_row()
                changed = run_reconcile(directory)
                assert changed["code"] == 0, changed["stderr"]
                assert changed["summary"]["counts"]["changed"] == 1, changed["summary"]
                results.append(
                    {
                        "rows": count,
                        "cases_in_state": stored,
                        "pass_seconds": [run["summary"]["duration_seconds"] for run in runs],
                        "process_seconds": [round(run["wall"], 2) for run in runs],
                        "rows_per_second": round(count / best["summary"]["duration_seconds"]),
                        "peak_rss_mb": round(max(run["rss_kb"] for run in runs) / 1024, 1),
                        "one_row_changed_pass_seconds": changed["summary"]["duration_seconds"],
                        "remote_calls": simulator.calls()["total"] - before,
                    }
                )
    smallest, largest = results[0], results[-1]
    print(
        json.dumps(
            {
                "runs": results,
                "memory_ratio_largest_to_smallest": round(
                    largest["peak_rss_mb"] / smallest["peak_rss_mb"], 2
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
