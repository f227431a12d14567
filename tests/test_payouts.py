"""`kravia-sync payouts` and `payouts book`: Kravia's unbooked payouts with the invoices they
cover, and booking one at Kravia exactly once (against the bundled simulator, over real HTTP)."""

from __future__ import annotations

import asyncio
import getpass
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import (
    TOKEN,
    Sim,
    cli_env,
    load,
    run_cli,
    run_pass,
    write_config,
    write_invoices,
)

from kravia_sync.engine.payouts import (
    BookingDecision,
    BookingReport,
    BookingRequest,
    BookingResult,
    BookingStep,
    book_payout,
    decide_booking,
    read_back_outcome,
)
from kravia_sync.kravia.answers import MoneyLine, Settlement
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.state.bookings import BookingAttempt, BookingOutcome
from kravia_sync.state.store import StateStore
from kravia_sync.testing.simulator import Faults

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def settlement(*, booked: bool | None = False, reference: str | None = None) -> Settlement:
    return Settlement(
        id=90001,
        settled_on=date(2026, 11, 20),
        amount=Decimal("100.00"),
        lines=[MoneyLine(1000001, Decimal("100.00"))],
        booked=booked,
        reference=reference,
    )


def attempt(outcome: BookingOutcome | None = None, reference: str = "B-1") -> BookingAttempt:
    return BookingAttempt(
        attempt_id="a1",
        settlement_id=90001,
        reference=reference,
        booked_by="kari",
        at=T0,
        outcome=outcome,
        outcome_at=None if outcome is None else T0,
    )


class TestDecideBooking:
    def test_a_settlement_kravia_does_not_list_is_not_booked(self) -> None:
        """No such settlement: nothing to send, whatever the journal holds."""
        assert decide_booking(None, None).step is BookingStep.NO_SUCH
        assert decide_booking(None, attempt()).step is BookingStep.NO_SUCH

    def test_an_unbooked_settlement_is_sent(self) -> None:
        assert decide_booking(settlement(), None) == BookingDecision(BookingStep.SEND)

    def test_a_booked_one_with_no_attempt_left_open_is_already_booked(self) -> None:
        """Booked by us before (outcome known) or elsewhere: refused, nothing journaled."""
        booked = settlement(booked=True, reference="B-1")
        assert decide_booking(booked, None) == BookingDecision(BookingStep.ALREADY_BOOKED)
        ours = attempt(BookingOutcome.BOOKED)
        assert decide_booking(booked, ours) == BookingDecision(BookingStep.ALREADY_BOOKED)

    @pytest.mark.parametrize("outcome", [None, BookingOutcome.UNKNOWN])
    @pytest.mark.parametrize("told", [None, "B-1"])
    def test_a_lost_answer_then_booked_is_confirmed_not_sent_again(
        self, outcome: BookingOutcome | None, told: str | None
    ) -> None:
        """Our attempt left open (a crash, or an answer lost and not read back) and Kravia
        lists it booked under our reference (or none it tells): the call reached Kravia."""
        decision = decide_booking(settlement(booked=True, reference=told), attempt(outcome))
        assert decision.step is BookingStep.CONFIRM
        assert decision.settles is BookingOutcome.BOOKED

    def test_booked_under_another_reference_closes_our_open_attempt_unbooked(self) -> None:
        decision = decide_booking(settlement(booked=True, reference="OTHER"), attempt())
        assert decision.step is BookingStep.ALREADY_BOOKED
        assert decision.settles is BookingOutcome.NOT_BOOKED
        assert "OTHER" in (decision.why or "")

    def test_unbooked_after_our_open_attempt_is_sent_again(self) -> None:
        """The earlier call did not take effect: it is closed as not booked, then sent."""
        decision = decide_booking(settlement(booked=False), attempt(BookingOutcome.UNKNOWN))
        assert (decision.step, decision.settles) == (BookingStep.SEND, BookingOutcome.NOT_BOOKED)

    def test_a_settlement_that_does_not_say_whether_it_is_booked_is_sent(self) -> None:
        """Kravia refuses it when booked under another reference; nothing is closed on a
        guess."""
        assert decide_booking(settlement(booked=None), attempt()) == BookingDecision(
            BookingStep.SEND
        )


class TestReadBack:
    @pytest.mark.parametrize(
        ("listed", "expected"),
        [
            (settlement(booked=True, reference="B-1"), BookingOutcome.BOOKED),
            (settlement(booked=True), BookingOutcome.BOOKED),
            (settlement(booked=True, reference="OTHER"), BookingOutcome.NOT_BOOKED),
            (settlement(booked=False), BookingOutcome.NOT_BOOKED),
            (settlement(booked=None), BookingOutcome.UNKNOWN),
            (None, BookingOutcome.UNKNOWN),
        ],
    )
    def test_what_the_list_after_a_failed_call_says(
        self, listed: Settlement | None, expected: BookingOutcome
    ) -> None:
        assert read_back_outcome(listed, attempt()) is expected


# --- against the simulator --------------------------------------------------------------------


def project(sim: Sim, directory: Path, numbers: range) -> dict[str, int]:
    """A configured project whose invoices a pass put into Kravia: invoice number → Kravia id."""
    write_invoices(directory / "invoices", numbers)
    config = write_config(directory, sim.base_url)
    assert run_pass(config).status == "done"
    wanted = {str(number) for number in numbers}
    return {c["invoiceNo"]: c["id"] for c in sim.cases() if c["invoiceNo"] in wanted}


def payout(sim: Sim, *lines: tuple[int, str]) -> int:
    made = sim.simulator.payout([(kravia_id, Decimal(amount)) for kravia_id, amount in lines])
    return int(made["id"])


def settlement_at_sim(sim: Sim, settlement_id: int) -> dict[str, Any]:
    return next(s for s in sim.simulator.settlements() if s["id"] == settlement_id)


def bookkeep_calls(sim: Sim) -> int:
    """PATCH settlements/{id}/bookkeep calls the simulator received, whatever it answered."""
    return sum(sim.simulator.calls()["bookkeep"].values())


def last_booking(directory: Path, settlement_id: int) -> BookingAttempt | None:
    with StateStore(load(directory / "kravia-sync.toml").state_path) as store:
        return store.last_booking(settlement_id)


class TestListing:
    def test_settlements_show_the_invoices_they_cover_ours_and_not_ours(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A settlement covering a case of ours shows its invoice number and source; one
        another state store registered is "not ours". Booked ones are not listed."""
        ours = project(sim, tmp_path / "ours", range(1, 3))
        theirs = project(sim, tmp_path / "theirs", range(7, 8))
        mixed = payout(sim, (ours["1"], "100.10"), (theirs["7"], "5.00"))
        booked = payout(sim, (ours["2"], "20.00"))
        httpx.patch(
            f"{sim.base_url}settlements/{booked}/bookkeep",
            params={"internalAccountingId": "ELSEWHERE"},
            headers={"Authorization": TOKEN},
        ).raise_for_status()

        shown = run_cli("payouts", cwd=tmp_path / "ours")

        assert shown.returncode == 0, shown.stderr
        assert str(mixed) in shown.stdout
        assert str(booked) not in shown.stdout
        assert "1 (files): 100.10" in shown.stdout
        assert f"Kravia {theirs['7']}, not ours: 5.00" in shown.stdout
        assert "105.10" in shown.stdout

    def test_json_gives_each_settlement_its_lines_and_booking(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        ours = project(sim, tmp_path / "ours", range(1, 2))
        theirs = project(sim, tmp_path / "theirs", range(7, 8))
        made = payout(sim, (ours["1"], "100.10"), (theirs["7"], "5.00"))

        shown = run_cli("payouts", "--json", cwd=tmp_path / "ours")

        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == {
            "settlements": [
                {
                    "id": made,
                    "date": settlement_at_sim(sim, made)["settlementDate"],
                    "amount": "105.10",
                    "invoices": [
                        {
                            "kravia_id": ours["1"],
                            "amount": "100.10",
                            "ours": True,
                            "invoice_number": "1",
                            "accounting_invoice_id": "1",
                            "source": "files",
                        },
                        {
                            "kravia_id": theirs["7"],
                            "amount": "5.00",
                            "ours": False,
                            "invoice_number": None,
                            "accounting_invoice_id": None,
                            "source": None,
                        },
                    ],
                    "booking": None,
                }
            ]
        }

    def test_a_booking_left_open_is_shown_with_the_settlement(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """An attempt whose outcome was never journaled (a crash after the intent) shows who
        sent it, as what, and that it is to be settled by booking again."""
        ours = project(sim, tmp_path, range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))
        crashed = BookingAttempt("crashed", made, "BILAG 9", "kari", T0)
        with StateStore(load(tmp_path / "kravia-sync.toml").state_path) as store:
            assert store.record_booking_intent(crashed, after=None)

        shown = run_cli("payouts", cwd=tmp_path)
        as_json = run_cli("payouts", "--json", cwd=tmp_path)

        assert shown.returncode == 0, shown.stderr
        assert "sent 2026-11-20 09:30 by kari as BILAG 9, answer lost" in shown.stdout
        (listed,) = json.loads(as_json.stdout)["settlements"]
        assert listed["booking"] == {
            "attempt_id": "crashed",
            "reference": "BILAG 9",
            "by": "kari",
            "at": T0.isoformat(),
            "outcome": None,
            "outcome_at": None,
            "http_status": None,
            "message": None,
        }

    def test_none_to_book(self, sim: Sim, tmp_path: Path) -> None:
        write_config(tmp_path, sim.base_url)
        shown = run_cli("payouts", "--json", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == {"settlements": []}


class TestBooking:
    def test_book_marks_it_booked_at_kravia_and_journals_who_when_and_the_reference(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        ours = project(sim, tmp_path, range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))
        before = datetime.now(UTC)

        booked = run_cli(
            "payouts", "book", str(made), "--reference", "BILAG 2026-117", cwd=tmp_path
        )

        after = datetime.now(UTC)
        assert booked.returncode == 0, booked.stderr
        assert f"settlement {made} booked" in booked.stdout
        at_sim = settlement_at_sim(sim, made)
        assert (at_sim["isBooked"], at_sim["internalAccountingId"]) == (True, "BILAG 2026-117")
        journaled = last_booking(tmp_path, made)
        assert journaled is not None
        assert (journaled.reference, journaled.booked_by) == ("BILAG 2026-117", getpass.getuser())
        assert journaled.outcome is BookingOutcome.BOOKED
        assert journaled.at.tzinfo is not None
        assert before <= journaled.at <= after
        listed = run_cli("payouts", "--json", cwd=tmp_path)
        assert json.loads(listed.stdout) == {"settlements": []}

    def test_by_names_who_booked_it_and_json_reports_it(self, sim: Sim, tmp_path: Path) -> None:
        ours = project(sim, tmp_path, range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))

        booked = run_cli(
            "payouts",
            "book",
            str(made),
            "--reference",
            "B-7",
            "--by",
            "Kari Nordmann",
            "--json",
            cwd=tmp_path,
        )

        assert booked.returncode == 0, booked.stderr
        report = json.loads(booked.stdout)
        assert (report["settlement_id"], report["result"], report["ok"], report["sent"]) == (
            made,
            "booked",
            True,
            True,
        )
        assert report["booking"]["by"] == "Kari Nordmann"
        assert report["booking"]["reference"] == "B-7"
        assert report["booking"]["outcome"] == "booked"
        assert datetime.fromisoformat(report["booking"]["at"]).tzinfo is not None
        assert last_booking(tmp_path, made).booked_by == "Kari Nordmann"  # type: ignore[union-attr]

    def test_booking_twice_says_already_booked_without_a_second_call(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        ours = project(sim, tmp_path, range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))
        first = run_cli("payouts", "book", str(made), "--reference", "B-1", cwd=tmp_path)

        again = run_cli("payouts", "book", str(made), "--reference", "B-1", cwd=tmp_path)

        assert first.returncode == 0, first.stderr
        assert again.returncode == 1
        assert "already booked as B-1 by" in again.stderr
        assert bookkeep_calls(sim) == 1

    def test_one_booked_elsewhere_is_already_booked_naming_kravias_reference(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        ours = project(sim, tmp_path, range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))
        httpx.patch(
            f"{sim.base_url}settlements/{made}/bookkeep",
            params={"internalAccountingId": "BY HAND"},
            headers={"Authorization": TOKEN},
        ).raise_for_status()

        again = run_cli("payouts", "book", str(made), "--reference", "B-1", "--json", cwd=tmp_path)

        assert again.returncode == 1
        report = json.loads(again.stdout)
        assert (report["result"], report["sent"]) == ("already_booked", False)
        assert "as BY HAND (not from this state store)" in report["message"]
        assert bookkeep_calls(sim) == 1  # the one made by hand
        assert last_booking(tmp_path, made) is None

    def test_options_given_before_book_apply_to_it(self, sim: Sim, tmp_path: Path) -> None:
        """`payouts --config FILE --json book …` books with that configuration and answers
        JSON."""
        ours = project(sim, tmp_path / "project", range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))
        config = tmp_path / "project" / "kravia-sync.toml"
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()

        booked = run_cli(
            "payouts",
            "--config",
            str(config),
            "--json",
            "book",
            str(made),
            "--reference",
            "B-2",
            cwd=elsewhere,
        )

        assert booked.returncode == 0, booked.stderr
        assert json.loads(booked.stdout)["result"] == "booked"
        assert settlement_at_sim(sim, made)["internalAccountingId"] == "B-2"

    def test_no_such_settlement(self, sim: Sim, tmp_path: Path) -> None:
        write_config(tmp_path, sim.base_url)
        shown = run_cli("payouts", "book", "4242", "--reference", "B-1", cwd=tmp_path)
        assert shown.returncode == 1
        assert "Kravia lists no settlement 4242" in shown.stderr
        assert bookkeep_calls(sim) == 0

    def test_a_blank_reference_is_refused_before_anything_is_sent(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        write_config(tmp_path, sim.base_url)
        shown = run_cli("payouts", "book", "4242", "--reference", "  ", cwd=tmp_path)
        assert shown.returncode == 1
        assert "a booking needs a reference" in shown.stderr
        assert sim.calls_total() == 0


class TestLostAnswers:
    def test_a_lost_answer_is_read_back_in_the_same_run(self, sim: Sim, tmp_path: Path) -> None:
        """Kravia booked it and the answer was dropped: the settlement is read back, found
        booked, and journaled so; one call only."""
        ours = project(sim, tmp_path, range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))
        sim.simulator.faults = Faults(drop_after_commit=1.0, operations=("bookkeep",))

        booked = run_cli("payouts", "book", str(made), "--reference", "B-1", cwd=tmp_path)

        assert booked.returncode == 0, booked.stderr
        assert "the answer was lost; Kravia lists it booked" in booked.stdout
        assert sim.simulator.calls()["bookkeep"] == {"0": 1}
        journaled = last_booking(tmp_path, made)
        assert journaled is not None
        assert journaled.outcome is BookingOutcome.BOOKED

    def test_a_failed_call_kravia_did_not_apply_is_sent_again_by_a_rerun(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A 500 that booked nothing: read back, journaled not booked, exit 1; the rerun
        books it."""
        ours = project(sim, tmp_path, range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))
        sim.simulator.faults = Faults(error_5xx=1.0, operations=("bookkeep",))

        failed = run_cli("payouts", "book", str(made), "--reference", "B-1", cwd=tmp_path)
        sim.simulator.faults = Faults()
        rerun = run_cli("payouts", "book", str(made), "--reference", "B-1", cwd=tmp_path)

        assert failed.returncode == 1
        assert "not_booked: Kravia did not book it" in failed.stderr
        assert rerun.returncode == 0, rerun.stderr
        assert sim.simulator.calls()["processed"]["bookkeep"] == 1
        assert settlement_at_sim(sim, made)["internalAccountingId"] == "B-1"

    def test_a_lost_answer_not_read_back_is_settled_by_the_rerun_without_a_second_call(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The answer lost and Kravia unreachable right after: the outcome is journaled
        unknown (exit 1). The rerun reads the settlement, finds it booked and journals our
        attempt booked, sending nothing."""
        ours = project(sim, tmp_path, range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))
        request = BookingRequest(made, "B-1", "kari")

        first = book_through(sim, tmp_path, request, LoseTheAnswerThenKravia())
        rerun = run_cli("payouts", "book", str(made), "--reference", "B-1", cwd=tmp_path)

        assert first.result is BookingResult.UNKNOWN
        assert "run the same command again" in first.message
        assert rerun.returncode == 0, rerun.stderr
        assert "reached Kravia; nothing sent again" in rerun.stdout
        assert bookkeep_calls(sim) == 1
        journaled = last_booking(tmp_path, made)
        assert journaled is not None
        assert journaled.attempt_id == first.attempt.attempt_id  # type: ignore[union-attr]
        assert (journaled.outcome, journaled.booked_by) == (BookingOutcome.BOOKED, "kari")

    def test_an_intent_whose_call_never_left_is_sent_once_by_the_rerun(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """A crash after the intent, before the call: Kravia lists it unbooked, so the
        earlier attempt is closed as not booked and the booking is sent, once."""
        ours = project(sim, tmp_path, range(1, 2))
        made = payout(sim, (ours["1"], "100.10"))
        crashed = BookingAttempt("crashed", made, "B-1", "kari", datetime.now(UTC))
        with StateStore(load(tmp_path / "kravia-sync.toml").state_path) as store:
            assert store.record_booking_intent(crashed, after=None)

        rerun = run_cli("payouts", "book", str(made), "--reference", "B-1", cwd=tmp_path)

        assert rerun.returncode == 0, rerun.stderr
        assert bookkeep_calls(sim) == 1
        journaled = last_booking(tmp_path, made)
        assert journaled is not None
        assert journaled.attempt_id != "crashed"
        assert journaled.outcome is BookingOutcome.BOOKED

    def test_a_refusal_is_journaled_and_not_read_back(self, tmp_path: Path) -> None:
        """A 4xx to the bookkeep call: refused, with Kravia's message; no second look."""
        seen: list[str] = []

        def kravia(request: httpx.Request) -> httpx.Response:
            seen.append(request.method)
            if request.method == "PATCH":
                return httpx.Response(400, json={"errors": {"InternalAccountingId": ["Nope."]}})
            item = {"id": 5, "amount": 1, "isBooked": False, "invoices": []}
            return httpx.Response(200, json={"items": [item]})

        with StateStore(tmp_path / "state.db") as store:
            report = asyncio.run(
                book_with(store, httpx.MockTransport(kravia), BookingRequest(5, "B-1", "kari"))
            )
            journaled = store.last_booking(5)

        assert report.result is BookingResult.REFUSED
        assert "InternalAccountingId: Nope." in report.message
        assert seen == ["GET", "PATCH"]
        assert journaled is not None
        assert (journaled.outcome, journaled.http_status) == (BookingOutcome.REFUSED, 400)


class TestKraviaAway:
    @pytest.mark.parametrize(
        "command", [("payouts",), ("payouts", "book", "5", "--reference", "B")]
    )
    def test_kravia_down_is_exit_1_with_a_clear_message(
        self, tmp_path: Path, command: tuple[str, ...]
    ) -> None:
        write_config(tmp_path, "http://127.0.0.1:9/api/v2/")

        shown = run_cli(*command, cwd=tmp_path)

        assert shown.returncode == 1
        assert "could not read Kravia's settlements at http://127.0.0.1:9/api/v2/" in shown.stderr
        assert TOKEN not in shown.stdout + shown.stderr
        with StateStore(load(tmp_path / "kravia-sync.toml").state_path) as store:
            assert store.last_booking(5) is None

    def test_json_reports_the_error_for_scripts(self, tmp_path: Path) -> None:
        write_config(tmp_path, "http://127.0.0.1:9/api/v2/")
        shown = run_cli("payouts", "--json", cwd=tmp_path)
        assert shown.returncode == 1
        assert "could not read Kravia's settlements" in json.loads(shown.stdout)["error"]

    def test_a_refused_token_is_named_and_not_printed(self, sim: Sim, tmp_path: Path) -> None:
        write_config(tmp_path, sim.base_url)
        wrong = "wrong-token-5531"

        shown = run_cli(
            "payouts",
            "book",
            "5",
            "--reference",
            "B",
            cwd=tmp_path,
            env=cli_env(KRAVIA_TOKEN=wrong),
        )

        assert shown.returncode == 1
        assert "Kravia refused the token" in shown.stderr
        assert wrong not in shown.stdout + shown.stderr
        assert bookkeep_calls(sim) == 0


# --- helpers for driving the booking in process ---------------------------------------------


class LoseTheAnswerThenKravia(httpx.AsyncBaseTransport):
    """The simulator over HTTP, until the bookkeep call: Kravia applies it, its answer is
    lost, and every call after it fails to connect."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.gone = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.gone:
            raise httpx.ConnectError("Kravia is unreachable", request=request)
        response = await self.inner.handle_async_request(request)
        if request.method == "PATCH":
            await response.aread()
            await response.aclose()
            self.gone = True
            raise httpx.ReadError("the connection was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def book_with(
    store: StateStore,
    transport: httpx.AsyncBaseTransport,
    request: BookingRequest,
    base_url: str = "http://kravia.test/api/v2/",
) -> BookingReport:
    async with KraviaClient(base_url=base_url, token=TOKEN, transport=transport) as client:
        return await book_payout(store, client, request)


def book_through(
    sim: Sim, directory: Path, request: BookingRequest, transport: httpx.AsyncBaseTransport
) -> BookingReport:
    with StateStore(load(directory / "kravia-sync.toml").state_path) as store:
        return asyncio.run(book_with(store, transport, request, sim.base_url))
