"""Reading Tripletex within its announced rate limit: 10,000 invoices dated over 5 years.

    python bench/tripletex_read.py [--invoices 10000] [--years 5] [--page-size 100]
                                   [--limit 50] [--period 5] [--latency-ms 50]

The Tripletex simulator allows `limit` requests per period of `period` seconds and announces
it in `X-Rate-Limit-Limit`/`-Remaining`/`-Reset` (past it: 429 for the rest of the period),
each request taking `latency-ms`. The `tripletex` connector reads every invoice in one-year
invoice-date windows, `page-size` a page, the customer in the same answer, with one session.
It is paced by the headers alone (no requests_per_second). The ideal is the number of
requests a read needs (one session, and each window's pages) divided by the allowed rate
(`limit / period`); the target is a wall time within 1.2 x of it. The simulator runs in this
process (in a thread).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from connectors.tripletex import TripletexConnector, invoice_windows
from kravia_sync.connector import SourceRecord
from kravia_sync.logging import configure_logging
from kravia_sync.testing._tripletex_data import oslo_today
from kravia_sync.testing.tripletex import RunningTripletex, TripletexSimulator, demo_company

CONSUMER = "bench-consumer-7d1e"
EMPLOYEE = "bench-employee-92af"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--period", type=float, default=5.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    configure_logging(level="warning", fmt="json")
    today = oslo_today()
    company = demo_company(
        invoices=args.invoices,
        customers=args.customers,
        spread_days=args.years * 365 - 40,
        pdf_every=0,
        foreign_every=0,
    )
    start = today - timedelta(days=args.years * 365)
    simulator = TripletexSimulator(
        company,
        consumer_token=CONSUMER,
        employee_token=EMPLOYEE,
        limit=args.limit,
        period_seconds=args.period,
        latency_ms=args.latency_ms,
    )
    os.environ["TRIPLETEX_BENCH_CONSUMER"] = CONSUMER
    os.environ["TRIPLETEX_BENCH_EMPLOYEE"] = EMPLOYEE
    with RunningTripletex(simulator), tempfile.TemporaryDirectory() as tmp:
        connector = TripletexConnector.from_settings(
            {
                "consumer_token_env": "TRIPLETEX_BENCH_CONSUMER",
                "employee_token_env": "TRIPLETEX_BENCH_EMPLOYEE",
                "start_date": start.isoformat(),
                "window_days": 365,
                "base_url": simulator.base_url,
                "page_size": args.page_size,
            },
            base_dir=Path(tmp),
        )
        started = time.perf_counter()
        records = sum(1 for item in connector.read() if isinstance(item, SourceRecord))
        wall = time.perf_counter() - started
    calls = simulator.calls()
    windows = invoice_windows(start, today + timedelta(days=1), 365)
    per_window = [
        sum(1 for i in company.invoices if a.isoformat() <= i["invoiceDate"] < b.isoformat())
        for a, b in windows
    ]
    # a window's pages: until a short page (one more when a window fills its pages exactly)
    pages = sum(n // args.page_size + 1 for n in per_window)
    needed = 1 + pages
    rate = args.limit / args.period
    ideal = needed / rate
    report = {
        "invoices": len(company.invoices),
        "records_read": records,
        "windows": len(windows),
        "pages": pages,
        "latency_ms": args.latency_ms,
        "limit_per_period": f"{args.limit} per {args.period:g} s",
        "requests_needed": needed,
        "requests_made": calls["total"],
        "refused_429": calls["statuses"].get(429, 0),
        "ideal_seconds": round(ideal, 2),
        "wall_seconds": round(wall, 2),
        "ratio_to_ideal": round(wall / ideal, 3),
        "target_ratio": 1.2,
        "periods": math.ceil(needed / args.limit),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
