"""Payments and credit notes end to end: folder source → engine → Kravia simulator over HTTP.

Each payment and credit note reaches Kravia exactly once (the simulator does not de-duplicate,
so a second send would show), Kravia's own payouts are never echoed back, and a payment the
registered amount already leaves out is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from support import Sim, invoice_record, run_cli, run_pass, write_config

from kravia_sync.kravia.calls import Reservation
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import Faults

RECORDS = 'payments = "records"'  # the folder's default, spelled out
DROPS = 'payments = "amount_drops"'
PAYOUT_RULE = 'payouts = { payers = ["Kravia AS"] }'


def write_invoices(folder: Path, records: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "invoices.json").write_text(json.dumps(records), encoding="utf-8")


def write_payments(folder: Path, rows: list[dict[str, str]]) -> None:
    columns = ["payment_id", "kind", "date", "amount", "invoice_number", "payer"]
    with (folder / "payments.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter=";")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in columns})


def write_invoices_and_return(folder: Path, numbers: list[int]) -> list[dict[str, Any]]:
    records = [invoice_record(n) for n in numbers]
    write_invoices(folder, records)
    return records


def by_invoice(sim: Sim) -> dict[str, dict[str, Any]]:
    return {case["invoiceNo"]: case for case in sim.cases()}


def money_calls(sim: Sim) -> list[dict[str, Any]]:
    """Payments and credit notes Kravia accepted (its own payouts left out)."""
    return [p for p in sim.simulator.payments() if p["accountingPaymentId"] is not None]


def payment_phases(config_dir: Path) -> dict[str, str]:
    with StateStore(config_dir / "state" / "kravia-sync.db") as store:
        return {p.payment_id: p.phase.value for p in store.all_payments()}


class TestReportedPayments:
    def test_direct_payment_credit_notes_and_a_payout(self, sim: Sim, tmp_path: Path) -> None:
        """A direct payment, a partial and a full credit note are forwarded once each; the
        payout Kravia made (booked by the creditor with Kravia as payer) is not echoed; the
        capital Kravia holds ends exactly right, and later passes send nothing."""
        folder = tmp_path / "invoices"
        records = [invoice_record(n) for n in (10001, 10002, 10003)]
        write_invoices(folder, records)
        config = write_config(tmp_path, sim.base_url, source=RECORDS, policy=PAYOUT_RULE)
        first = run_pass(config)
        assert first.counts["started"] == 3
        cases = by_invoice(sim)
        original = {
            n: Decimal(r["amount"])
            for n, r in zip(("10001", "10002", "10003"), records, strict=True)
        }
        # The debtor of 10001 pays Kravia 100.00; Kravia pays it out to the creditor.
        sim.simulator.payout([(cases["10001"]["id"], Decimal("100.00"))])
        write_payments(
            folder,
            [
                {
                    "payment_id": "P-1",
                    "date": "2026-11-20",
                    "amount": "300,00",
                    "invoice_number": "10001",
                },
                {
                    "payment_id": "CN-1",
                    "kind": "credit_note",
                    "date": "2026-11-21",
                    "amount": "-200.00",
                    "invoice_number": "10002",
                },
                {
                    "payment_id": "CN-2",
                    "kind": "credit_note",
                    "date": "2026-11-21",
                    "amount": str(original["10003"]),
                    "invoice_number": "10003",
                },
                {
                    "payment_id": "UTB-9",
                    "date": "2026-11-22",
                    "amount": "100.00",
                    "invoice_number": "10001",
                    "payer": "Kravia AS",
                },
            ],
        )

        second = run_pass(config)

        sent = money_calls(sim)
        assert sorted(p["accountingPaymentId"] for p in sent) == ["CN-1", "CN-2", "P-1"]
        cases = by_invoice(sim)
        assert Decimal(str(cases["10001"]["remainingAmount"])) == original["10001"] - Decimal(
            "400.00"
        )
        assert Decimal(str(cases["10002"]["remainingAmount"])) == original["10002"] - Decimal(
            "200.00"
        )
        assert Decimal(str(cases["10003"]["remainingAmount"])) == 0
        assert payment_phases(tmp_path) == {
            "P-1": "sent",
            "CN-1": "sent",
            "CN-2": "sent",
            "UTB-9": "payout",
        }
        assert second.counts["payments_sent"] == 3

        third = run_pass(config)

        assert len(money_calls(sim)) == 3
        assert (
            sum(v for k, v in third.remote_calls.items() if k.startswith(("payment", "creditnote")))
            == 0
        )

    def test_payment_seen_before_the_invoice_was_sent_is_netted(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The invoice's amount is what is owed now: a payment in the same first read is
        already left out of it, so it is never sent."""
        folder = tmp_path / "invoices"
        write_invoices(folder, [invoice_record(10001)])
        write_payments(
            folder,
            [
                {
                    "payment_id": "P-1",
                    "date": "2026-11-01",
                    "amount": "50",
                    "invoice_number": "10001",
                }
            ],
        )
        config = write_config(tmp_path, sim.base_url, source=RECORDS)

        run_pass(config)
        run_pass(config)

        assert money_calls(sim) == []
        assert payment_phases(tmp_path) == {"P-1": "netted"}

    def test_payment_records_are_counted_not_taken_when_amounts_tell(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """With payments = "amount_drops" the amounts tell what was paid: a payment record
        is counted as ignored and never sent (else the money would count twice)."""
        folder = tmp_path / "invoices"
        write_invoices(folder, [invoice_record(10001)])
        config = write_config(tmp_path, sim.base_url, source=DROPS)
        run_pass(config)
        row = {"payment_id": "P-1", "date": "2026-11-01", "amount": "50", "invoice_number": "10001"}
        write_payments(folder, [row])

        summary = run_pass(config)

        assert money_calls(sim) == []
        assert summary.counts["payments_ignored"] == 1
        assert payment_phases(tmp_path) == {}


class TestClamp:
    def test_a_payment_above_the_capital_left_is_clamped_and_shown(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """Kravia would ignore the excess silently: only the capital left is sent, and the
        clamp is noted on the payment and counted in the run."""
        folder = tmp_path / "invoices"
        records = write_invoices_and_return(folder, [10001])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        owed = Decimal(records[0]["amount"])
        row = {
            "payment_id": "P-9",
            "date": "2026-11-20",
            "amount": str(owed + 500),
            "invoice_number": "10001",
        }
        write_payments(folder, [row])

        summary = run_pass(config)

        (sent,) = money_calls(sim)
        assert Decimal(str(sent["amount"])) == owed
        assert summary.counts["payments_clamped"] == 1
        with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
            (payment,) = store.all_payments()
        assert payment.lines[0].sent == owed
        assert "clamped" in (payment.note or "")
        status = run_cli("status", cwd=tmp_path)
        assert "clamped" in status.stdout


class TestLostAnswers:
    def test_a_lost_answer_is_checked_where_the_payment_went(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A payment over two invoices, the first with no capital left (clamped to nothing,
        so not in the body): after a lost answer the check looks where it was sent, finds it,
        and never sends it again."""
        folder = tmp_path / "invoices"
        records = write_invoices_and_return(folder, [10001, 10002])
        config = write_config(tmp_path, sim.base_url)
        run_pass(config)
        full = {"payment_id": "CN-1", "kind": "credit_note", "date": "2026-11-19"}
        full |= {"amount": records[0]["amount"], "invoice_number": "10001"}
        write_payments(folder, [full])
        run_pass(config)
        split = [
            {"payment_id": "P-2", "date": "2026-11-20", "amount": "100", "invoice_number": n}
            for n in ("10001", "10002")
        ]
        write_payments(folder, [full, *split])
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("payment",))

        lost = run_pass(config)
        sim.simulator.faults = Faults()
        settled = run_pass(config)

        posts = [p for p in sim.simulator.payments() if p["accountingPaymentId"] == "P-2"]
        assert len(posts) == 1
        assert [i["amount"] for i in posts[0]["invoices"]] == [Decimal("100.00")]
        assert lost.counts["payments_sending"] == 1
        assert payment_phases(tmp_path)["P-2"] == "sent"
        assert settled.counts["payments_sent"] == 1

    def test_a_payment_that_waits_for_its_place_is_settled_from_when_it_left(
        self, sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A payment whose place in flight comes 2.5 s late: the intent journaled with it, all
        a process killed as the call leaves would leave behind, may be settled only the settle
        time after the call left, not after the moment the payment was sized (a slow Kravia
        could then still be storing it when it is looked for, and it would be sent again)."""
        folder = tmp_path / "invoices"
        write_invoices_and_return(folder, [10001])
        retry = "backoff_base_seconds = 0.05\nsettle_seconds = 5\nmax_inline_wait_seconds = 0"
        config = write_config(tmp_path, sim.base_url, retry=retry)
        run_pass(config)
        row = {"payment_id": "P-9", "date": "2026-11-20", "amount": "100"}
        write_payments(folder, [row | {"invoice_number": "10001"}])
        reserve = KraviaClient.reserve
        left: list[datetime] = []

        @contextlib.asynccontextmanager
        async def late(self: KraviaClient) -> AsyncIterator[Reservation]:
            await asyncio.sleep(2.5)
            async with reserve(self) as reservation:
                yield reservation

        register_payment = KraviaClient.register_payment
        journaled: list[datetime | None] = []

        async def leaving(self: KraviaClient, **arguments: Any) -> Any:
            # What the store holds as the call leaves: what a process killed now leaves behind.
            left.append(datetime.now(UTC))
            with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
                (payment,) = [p for p in store.all_payments() if p.payment_id == "P-9"]
            journaled.append(payment.settle_after)
            return await register_payment(self, **arguments)

        monkeypatch.setattr(KraviaClient, "reserve", late)
        monkeypatch.setattr(KraviaClient, "register_payment", leaving)
        run_pass(config)

        (sent,) = left
        (settle_after,) = journaled
        assert settle_after is not None
        # Kravia's clock is read from Date headers cut to the second; half a second of slack.
        assert settle_after >= sent + timedelta(seconds=5) - timedelta(seconds=0.5)


class TestAmountDrops:
    def test_a_drop_is_forwarded_once_and_a_payout_is_not_echoed(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        folder = tmp_path / "invoices"
        records = [invoice_record(n) for n in (10001, 10002)]
        write_invoices(folder, records)
        config = write_config(tmp_path, sim.base_url, source=DROPS)
        run_pass(config)
        cases = by_invoice(sim)
        sim.simulator.payout([(cases["10002"]["id"], Decimal("100.00"))])
        before = {r["invoice_number"]: Decimal(r["amount"]) for r in records}
        # 10001: the debtor paid the creditor 250.00; 10002: Kravia's payout, booked.
        records[0]["amount"] = str(before["10001"] - Decimal("250.00"))
        records[1]["amount"] = str(before["10002"] - Decimal("100.00"))
        write_invoices(folder, records)

        second = run_pass(config)
        run_pass(config)

        sent = money_calls(sim)
        assert len(sent) == 1
        assert Decimal(str(sent[0]["amount"])) == Decimal("250.00")
        assert sent[0]["accountingPaymentId"].startswith("ks-drop-")
        cases = by_invoice(sim)
        assert Decimal(str(cases["10001"]["remainingAmount"])) == before["10001"] - 250
        assert Decimal(str(cases["10002"]["remainingAmount"])) == before["10002"] - 100
        assert sorted(payment_phases(tmp_path).values()) == ["payout", "sent"]
        assert second.counts["changed"] == 2

    def test_a_rise_or_a_new_address_needs_a_person(self, sim: Sim, tmp_path: Path) -> None:
        folder = tmp_path / "invoices"
        records = [invoice_record(10001)]
        write_invoices(folder, records)
        config = write_config(tmp_path, sim.base_url, source=DROPS)
        run_pass(config)
        records[0]["amount"] = str(Decimal(records[0]["amount"]) + 10)
        records[0]["address_line1"] = "Nygata 3"
        write_invoices(folder, records)

        noted = run_pass(config)
        later = run_pass(config)

        assert noted.status == "attention"  # a person has a change to make in Kravia
        assert noted.as_dict()["attention"] == {"noted_changes": 1}
        assert later.status == "done"  # said once; `status` lists it until then
        assert money_calls(sim) == []
        with StateStore(tmp_path / "state" / "kravia-sync.db") as store:
            (case,) = store.load_cases("files").values()
        assert case.attention is not None
        assert "rose from" in case.attention
        assert "details" in case.attention


class TestFaults:
    @pytest.mark.parametrize("seed", [1, 2])
    def test_every_payment_once_under_faults(self, sim: Sim, tmp_path: Path, seed: int) -> None:
        """5xx, 429 and answers dropped after Kravia applied the payment: each payment and
        credit note still arrives exactly once, over as many passes as it takes."""
        folder = tmp_path / "invoices"
        numbers = list(range(10001, 10021))
        write_invoices(folder, [invoice_record(n) for n in numbers])
        config = write_config(tmp_path, sim.base_url, source=RECORDS)
        run_pass(config)
        write_payments(
            folder,
            [
                {
                    "payment_id": f"P-{n}",
                    "kind": "credit_note" if n % 3 == 0 else "payment",
                    "date": "2026-11-20",
                    "amount": "10.00",
                    "invoice_number": str(n),
                }
                for n in numbers
            ],
        )
        sim.simulator.faults = Faults(
            error_5xx=0.2,
            rate_limit_429=0.1,
            drop_after_commit=0.3,
            seed=seed,
            operations=("payment", "creditnote", "details"),
        )
        for _ in range(8):
            run_pass(config)
            if all(phase == "sent" for phase in payment_phases(tmp_path).values()):
                break
        sim.simulator.faults = Faults()
        # A payment whose answer was lost is verified once Kravia's clock (its Date headers,
        # cut to the second) is past the settle time since.
        time.sleep(2.5)
        run_pass(config)

        ids = sorted(p["accountingPaymentId"] for p in money_calls(sim))
        assert ids == sorted(f"P-{n}" for n in numbers)
        assert set(payment_phases(tmp_path).values()) == {"sent"}
