"""Reading Fiken at Fiken's rate limit: 10,000 invoices over 100 pages at 50 ms latency.

    python bench/fiken_read.py [--invoices 10000] [--page-size 100] [--customers 100]
                               [--latency-ms 50] [--rps 4]

The Fiken simulator serves every invoice unsettled, `page-size` a page, each request taking
`latency-ms`, refusing (429) a second request in flight or more than `rps` a second. The
`fiken` connector reads the credit notes, then every invoice with each customer's contact once,
then checks the credit notes changed since. The ideal is the number of requests a read needs
(pages + distinct customers + the pages of credit notes, one when there are none, + one)
divided by the rate; the target is a wall time within 1.2 x of
it. The simulator runs in this process (in a thread): the client spends
the read waiting for its turn, so they barely compete for the interpreter.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

from connectors.fiken import FikenConnector
from kravia_sync.connector import SourceRecord
from kravia_sync.logging import configure_logging
from kravia_sync.testing.fiken import FikenSimulator, RunningFiken, demo_company

TOKEN = "bench-fiken-token-51c2"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--rps", type=float, default=4.0)
    args = parser.parse_args()
    configure_logging(level="warning", fmt="json")
    company = demo_company(
        invoices=args.invoices, customers=args.customers, pdf_every=0, with_settled=False
    )
    simulator = FikenSimulator(
        company, token=TOKEN, requests_per_second=args.rps, latency_ms=args.latency_ms
    )
    os.environ["FIKEN_BENCH_TOKEN"] = TOKEN
    with RunningFiken(simulator), tempfile.TemporaryDirectory() as tmp:
        connector = FikenConnector.from_settings(
            {
                "company_slug": company.slug,
                "credit_notes_since": "2000-01-01",
                "token_env": "FIKEN_BENCH_TOKEN",
                "base_url": simulator.base_url,
                "page_size": args.page_size,
                "requests_per_second": args.rps,
            },
            base_dir=Path(tmp),
        )
        started = time.perf_counter()
        records = sum(1 for item in connector.read() if isinstance(item, SourceRecord))
        wall = time.perf_counter() - started
    calls = simulator.calls()
    pages = math.ceil(args.invoices / args.page_size)
    customers = len({invoice["customer"]["contactId"] for invoice in company.invoices})
    # the list, and the check at the end for one made during the read (one page)
    credit_note_pages = max(1, math.ceil(len(company.credit_notes) / args.page_size)) + 1
    needed = pages + customers + credit_note_pages
    ideal = needed / args.rps
    report = {
        "invoices": args.invoices,
        "records_read": records,
        "pages": pages,
        "customers": customers,
        "credit_note_pages": credit_note_pages,
        "latency_ms": args.latency_ms,
        "rate_limit_rps": args.rps,
        "requests_needed": needed,
        "requests_made": calls["total"],
        "refused_429": calls["statuses"].get(429, 0),
        "most_in_flight": calls["most_in_flight"],
        "ideal_seconds": round(ideal, 2),
        "wall_seconds": round(wall, 2),
        "ratio_to_ideal": round(wall / ideal, 3),
        "invoices_per_second": round(records / wall, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
