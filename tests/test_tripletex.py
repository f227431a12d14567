"""Tripletex end to end over real HTTP: the Tripletex simulator into the Kravia simulator, and
the connector's own rules (sessions, invoice-date windows, what is collected, rate limits)."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr
from support import Sim, cli_env, load, run_cli, run_pass, write_config

from connectors.rest._paging import OffsetPaging, PageRequest, PageResponse, PagingError
from connectors.tripletex import (
    EXAMPLE_SETTINGS,
    SessionTokenAuth,
    TripletexConnector,
    TripletexSettings,
    invoice_windows,
)
from connectors.tripletex._credit_notes import credit_note_record
from kravia_sync.connector import (
    ConnectorError,
    PaymentRecord,
    RecordError,
    SourceRecord,
    load_connector,
)
from kravia_sync.lifecycle import Phase
from kravia_sync.state.store import StateStore
from kravia_sync.testing._tripletex_data import oslo_today
from kravia_sync.testing.tripletex import (
    RunningTripletex,
    TripletexCompany,
    TripletexSimulator,
    demo_company,
)

CONSUMER = "tt-consumer-Wq4Hn8Kd"
EMPLOYEE = "tt-employee-Zr7Pv2Mc"
OSLO = ZoneInfo("Europe/Oslo")


@pytest.fixture(autouse=True)
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLETEX_CONSUMER_TOKEN", CONSUMER)
    monkeypatch.setenv("TRIPLETEX_EMPLOYEE_TOKEN", EMPLOYEE)


@pytest.fixture
def company() -> TripletexCompany:
    """300 invoices of 60 customers over about 160 days, and 30 credit notes: 30 settled,
    30 not due, 30 too young, 30 partly paid, 30 partly credited, 6 in EUR."""
    return demo_company(invoices=300, customers=60)


@pytest.fixture
def tripletex(company: TripletexCompany) -> Iterator[TripletexSimulator]:
    simulator = TripletexSimulator(
        company, consumer_token=CONSUMER, employee_token=EMPLOYEE, limit=10_000
    )
    with RunningTripletex(simulator):
        yield simulator


def start_date(company: TripletexCompany) -> date:
    return min(date.fromisoformat(i["invoiceDate"]) for i in company.invoices) - timedelta(days=3)


def settings(tripletex: TripletexSimulator, **extra: Any) -> dict[str, Any]:
    return {
        "consumer_token_env": "TRIPLETEX_CONSUMER_TOKEN",
        "employee_token_env": "TRIPLETEX_EMPLOYEE_TOKEN",
        "start_date": start_date(tripletex.company).isoformat(),
        "window_days": 60,
        "page_size": 40,
        "base_url": tripletex.base_url,
        **extra,
    }


def connector(tripletex: TripletexSimulator, tmp_path: Path, **extra: Any) -> TripletexConnector:
    made = TripletexConnector.from_settings(settings(tripletex, **extra), base_dir=tmp_path)
    assert isinstance(made, TripletexConnector)
    return made


def source(tripletex: TripletexSimulator, extra: str = "") -> str:
    return f"""
[[sources]]
name = "tripletex"
connector = "tripletex"
[sources.settings]
consumer_token_env = "TRIPLETEX_CONSUMER_TOKEN"
employee_token_env = "TRIPLETEX_EMPLOYEE_TOKEN"
start_date = "{start_date(tripletex.company).isoformat()}"
window_days = 60
page_size = 40
base_url = "{tripletex.base_url}"
{extra}
"""


def config_with(tmp_path: Path, sim: Sim, text: str) -> Path:
    config = write_config(tmp_path, sim.base_url)
    head = config.read_text(encoding="utf-8").split("[[sources]]")[0]
    config.write_text(head + text, encoding="utf-8")
    return config


def expected_ids(company: TripletexCompany) -> list[str]:
    return sorted(str(i["id"]) for i in company.to_collect(oslo_today()))


def records(items: list[Any]) -> dict[str, SourceRecord]:
    return {
        str(item.fields["accounting_invoice_id"]): item
        for item in items
        if isinstance(item, SourceRecord)
    }


class TestTripletexConnector:
    def test_reads_every_open_invoice_with_its_customer_window_by_window(
        self, tripletex: TripletexSimulator, company: TripletexCompany, tmp_path: Path
    ) -> None:
        """Credit notes and settled invoices left out, EUR quarantined, the rest with the
        customer from the same answer; each window asked once; no PDF fetched."""
        reader = connector(tripletex, tmp_path)

        items = list(reader.read())

        read = records(items)
        errors = [item for item in items if isinstance(item, RecordError)]
        open_nok = [
            i
            for i in company.invoices
            if not i["isCreditNote"]
            and i["amountOutstanding"] > 0
            and i["currency"]["code"] == "NOK"
        ]
        assert sorted(read) == sorted(str(i["id"]) for i in open_nok)
        assert len(read) == 300 - 30 - 6
        eur = [i for i in company.invoices if i["currency"]["code"] == "EUR"]
        assert sorted(e.key for e in errors) == sorted(
            f"invoice {i['invoiceNumber']} (id {i['id']})" for i in eur
        )
        assert all(e.field == "currency" and "register it by hand" in e.reason for e in errors)
        end = oslo_today() + timedelta(days=1)
        windows = invoice_windows(start_date(company), end, 60)
        assert sorted(tripletex.windows) == [(a.isoformat(), b.isoformat()) for a, b in windows]
        calls = tripletex.calls()
        assert calls["invoices"] == reader.stats.pages
        assert calls["sessions_created"] == 1
        assert "pdf" not in calls

    def test_amounts_debtors_and_emails(
        self, tripletex: TripletexSimulator, company: TripletexCompany, tmp_path: Path
    ) -> None:
        """Outstanding kroner exactly (partly paid, partly credited); private or business from
        isPrivateIndividual; the overdue-notice address first."""
        read = records(list(connector(tripletex, tmp_path).read()))

        by_id = {str(i["id"]): i for i in company.invoices}
        partial = [
            v
            for v in read.values()
            if by_id[str(v.fields["accounting_invoice_id"])]["amountOutstanding"]
            < by_id[str(v.fields["accounting_invoice_id"])]["amount"]
        ]
        assert len(partial) == 60  # 30 partly paid, 30 partly credited
        for key, record in read.items():
            source = by_id[key]
            customer = source["customer"]
            fields = record.fields
            assert fields["amount"] == source["amountOutstanding"]
            assert isinstance(fields["amount"], Decimal)
            assert fields["invoice_number"] == str(source["invoiceNumber"])
            assert fields["due_date"] == date.fromisoformat(source["invoiceDueDate"])
            private = customer["isPrivateIndividual"]
            assert fields["debtor_type"] == ("private" if private else "business")
            assert fields.get("organization_number") == (customer["organizationNumber"] or None)
            email = customer["overdueNoticeEmail"] or customer["invoiceEmail"] or customer["email"]
            assert fields["debtor_email"] == email
            assert fields["country"] == customer["postalAddress"]["country"]["isoAlpha2Code"]
            assert record.document is not None
            assert record.key == f"invoice {source['invoiceNumber']} (id {source['id']})"

    def test_a_session_ending_mid_read_is_renewed_once_and_the_read_completes(
        self, tripletex: TripletexSimulator, tmp_path: Path
    ) -> None:
        reader = connector(tripletex, tmp_path)
        tripletex.expire_sessions(after=3)

        items = list(reader.read())

        assert len(records(items)) == 264
        calls = tripletex.calls()
        assert calls["sessions_created"] == 2
        assert calls["statuses"][401] == 1
        assert reader.session.sessions_created == 2

    def test_a_failing_window_fails_the_read(
        self, tripletex: TripletexSimulator, company: TripletexCompany, tmp_path: Path
    ) -> None:
        """Every retry of the second window answers 503: the read raises, naming it."""
        reader = connector(tripletex, tmp_path, retry={"attempts": 2, "backoff_seconds": 0.01})
        second = invoice_windows(start_date(company), oslo_today() + timedelta(days=1), 60)[1]
        tripletex.fail("invoices", date_from=second[0].isoformat(), faults=["503", "503"])

        with pytest.raises(ConnectorError) as failure:
            list(reader.read())

        assert f"dated {second[0]} to {second[1] - timedelta(days=1)}" in str(failure.value)
        assert "503" in str(failure.value)

    def test_a_start_date_in_the_future_fails_rather_than_reading_nothing(
        self, tripletex: TripletexSimulator, tmp_path: Path
    ) -> None:
        future = (oslo_today() + timedelta(days=5)).isoformat()
        with pytest.raises(ConnectorError, match="in the future"):
            list(connector(tripletex, tmp_path, start_date=future).read())

    def test_settings_need_both_tokens_once_and_a_start_date(self) -> None:
        base = {"consumer_token_env": "A", "employee_token_env": "B", "start_date": "2024-01-01"}
        TripletexSettings.model_validate(base)
        with pytest.raises(ValueError, match="employee_token_env"):
            TripletexSettings.model_validate({**base, "employee_token_env": None})
        with pytest.raises(ValueError, match="consumer_token"):
            TripletexSettings.model_validate({**base, "consumer_token_file": "x"})
        with pytest.raises(ValueError, match="start_date"):
            TripletexSettings.model_validate({k: v for k, v in base.items() if k != "start_date"})

    def test_windows_cover_every_day_once(self) -> None:
        start, end = date(2021, 3, 1), date(2025, 1, 2)
        windows = invoice_windows(start, end, 365)
        assert windows[0][0] == start
        assert windows[-1][1] == end
        assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
        assert all((b - a).days <= 365 for a, b in windows)
        assert invoice_windows(end, end, 365) == []

    def test_a_changing_version_digest_fails_the_window(self) -> None:
        """versionDigest is "used to know if the paginated list has changed"."""
        pager = OffsetPaging(
            type="offset",
            offset_param="from",
            limit_param="count",
            limit=2,
            digest_path="versionDigest",
        ).pager()
        request = pager.first("invoice", {})
        page = PageResponse("u", httpx.Headers(), {"versionDigest": "a", "values": [1, 2]}, 2)
        request2 = pager.next(request, page)
        assert isinstance(request2, PageRequest)
        assert request2.params["from"] == "2"
        changed = PageResponse("u", httpx.Headers(), {"versionDigest": "b", "values": [3, 4]}, 2)
        with pytest.raises(PagingError, match="versionDigest changed"):
            pager.next(request2, changed)

    def test_tripletex_is_an_installed_connector_with_an_example(self) -> None:
        assert load_connector("tripletex") is TripletexConnector
        assert 'connector = "tripletex"' in EXAMPLE_SETTINGS


class TestSessionRenewal:
    def make(
        self, now: list[datetime], asked: list[dict[str, str]]
    ) -> tuple[SessionTokenAuth, Any]:
        auth = SessionTokenAuth(
            consumer_token=SecretStr(CONSUMER),
            employee_token=SecretStr(EMPLOYEE),
            company_id=0,
            timezone=lambda: OSLO,
            clock=lambda: now[0],
        )

        def request(url: str, form: Any, headers: Any, /, *, method: str = "POST") -> Any:
            assert url == "token/session/:create"
            assert method == "PUT"
            assert headers == {}
            asked.append(dict(form))
            return 200, {"value": {"token": f"session-{len(asked)}"}}

        return auth, request

    def test_renewed_before_the_expiration_date_begins(self) -> None:
        now = [datetime(2025, 3, 10, 9, 0, tzinfo=OSLO)]
        asked: list[dict[str, str]] = []
        auth, request = self.make(now, asked)

        first = auth.headers(request)
        now[0] = datetime(2025, 3, 10, 23, 45, tzinfo=OSLO)
        same = auth.headers(request)
        now[0] = datetime(2025, 3, 10, 23, 51, tzinfo=OSLO)  # within 10 minutes of midnight
        renewed = auth.headers(request)

        assert first == same != renewed
        assert [a["expirationDate"] for a in asked] == ["2025-03-11", "2025-03-12"]
        assert asked[0]["consumerToken"] == CONSUMER
        assert "session-1" in auth.secrets()
        assert CONSUMER in auth.secrets()
        assert EMPLOYEE in auth.secrets()

    def test_after_a_401_a_new_session_is_made(self) -> None:
        now = [datetime(2025, 3, 10, 9, 0, tzinfo=UTC)]
        asked: list[dict[str, str]] = []
        auth, request = self.make(now, asked)
        first = auth.headers(request)
        assert auth.refresh() is True
        assert auth.headers(request) != first
        assert len(asked) == 2

    def test_a_refused_create_names_no_token(self) -> None:
        auth = SessionTokenAuth(
            consumer_token=SecretStr(CONSUMER),
            employee_token=SecretStr(EMPLOYEE),
            company_id=0,
            timezone=lambda: OSLO,
        )

        def refuse(url: str, form: Any, headers: Any, /, *, method: str = "POST") -> Any:
            return 403, {"message": f"token {EMPLOYEE} is not valid"}

        with pytest.raises(ConnectorError) as failure:
            auth.headers(refuse)
        assert "403" in str(failure.value)
        assert EMPLOYEE not in str(failure.value)


class TestRateLimit:
    @pytest.mark.slow
    def test_the_announced_budget_is_obeyed_without_a_single_429(
        self, company: TripletexCompany, tmp_path: Path
    ) -> None:
        """5 requests per 1-second period: the connector stops when none remain and waits
        for the reset; Tripletex never refuses it."""
        simulator = TripletexSimulator(
            company, consumer_token=CONSUMER, employee_token=EMPLOYEE, limit=5, period_seconds=1
        )
        with RunningTripletex(simulator):
            reader = connector(simulator, tmp_path, page_size=25)
            started = time.monotonic()
            items = list(reader.read())
            elapsed = time.monotonic() - started

        calls = simulator.calls()
        assert len(records(items)) == 264
        assert 429 not in calls["statuses"]
        periods = -(-calls["total"] // 5)
        assert calls["total"] >= 16
        assert elapsed >= periods - 1 - 0.1
        assert elapsed < periods + 1.5

    @pytest.mark.slow
    def test_a_429_waits_for_the_reset_and_the_read_completes(
        self, company: TripletexCompany, tmp_path: Path
    ) -> None:
        """Another program used the whole period's budget: the first calls are refused; the
        connector waits for X-Rate-Limit-Reset and reads everything."""
        simulator = TripletexSimulator(
            company, consumer_token=CONSUMER, employee_token=EMPLOYEE, limit=30, period_seconds=2
        )
        with RunningTripletex(simulator) as running, httpx.Client() as other:
            for _ in range(30):
                other.get(running.base_url + "invoice/1")
            reader = connector(simulator, tmp_path, page_size=100)
            items = list(reader.read())

        calls = simulator.calls()
        assert len(records(items)) == 264
        assert calls["statuses"][429] == 1  # the session create, once; then it waited
        assert calls["sessions_created"] == 1


class TestTripletexIntoKravia:
    def test_exactly_the_overdue_open_invoices_are_registered_once_with_their_pdfs(
        self, sim: Sim, tripletex: TripletexSimulator, company: TripletexCompany, tmp_path: Path
    ) -> None:
        """Settled, not yet due, too young, credit notes and EUR: none in Kravia. The rest,
        partly paid and partly credited among them, once each; a second pass sends nothing."""
        config = config_with(tmp_path, sim, source(tripletex))

        first = run_pass(config)

        assert first.status == "attention", first.as_dict()  # the six EUR invoices wait
        cases = sim.cases()
        assert sorted(c["accountingInvoiceId"] for c in cases) == expected_ids(company)
        assert len(cases) == 30 * 5 + 30 * 2 - 6  # kinds 5 to 9, partly paid or credited
        by_id = {str(i["id"]): i for i in company.invoices}
        for case in cases:
            invoice = by_id[case["accountingInvoiceId"]]
            assert case["started"]
            assert Decimal(str(case["originalAmount"])) == invoice["amountOutstanding"]
            pdf = company.pdfs[invoice["id"]]
            assert [d["sha256"] for d in case["documents"]] == [hashlib.sha256(pdf).hexdigest()]
            private = invoice["customer"]["isPrivateIndividual"]
            assert case["body"]["isPrivateIndividual"] == ("true" if private else "false")
        kravia_before = sim.calls_total()
        pdfs_before = tripletex.calls()["pdf"]

        second = run_pass(config)

        assert second.status == "attention", second.as_dict()
        assert sim.calls_total() == kravia_before
        assert tripletex.calls()["pdf"] == pdfs_before

    def test_a_credit_note_after_registration_reaches_kravia_once_as_a_credit_note(
        self, sim: Sim, tripletex: TripletexSimulator, company: TripletexCompany, tmp_path: Path
    ) -> None:
        """A credit note made after registration goes to Kravia once, as a credit note with
        Tripletex's id for it; the drop it makes in the credited invoice's amountOutstanding
        is not sent again as a payment; it never becomes a case; later passes send nothing.
        Credit notes on invoices made before they were registered (the company's partly
        credited invoices) were netted: the amounts registered already left them out."""
        config = config_with(tmp_path, sim, source(tripletex))
        run_pass(config)
        assert [p for p in sim.simulator.payments() if p["accountingPaymentId"]] == []
        target = company.to_collect(oslo_today())[0]
        before = next(c for c in sim.cases() if c["accountingInvoiceId"] == str(target["id"]))
        note = tripletex.credit(target["id"], Decimal("100.00"))

        run_pass(config)
        again = run_pass(config)

        posted = [p for p in sim.simulator.payments() if p["accountingPaymentId"] is not None]
        assert [(p["type"], p["accountingPaymentId"]) for p in posted] == [
            ("CreditNote", str(note["id"]))
        ]
        assert abs(Decimal(str(posted[0]["amount"]))) == Decimal("100.00")
        after = next(c for c in sim.cases() if c["accountingInvoiceId"] == str(target["id"]))
        assert Decimal(str(after["remainingAmount"])) == (
            Decimal(str(before["remainingAmount"])) - Decimal("100.00")
        )
        assert str(note["id"]) not in {c["accountingInvoiceId"] for c in sim.cases()}
        assert again.counts["payments_sent"] == 0

    @pytest.mark.slow
    def test_a_failed_window_takes_nothing_as_gone_and_the_next_pass_does(
        self, sim: Sim, tripletex: TripletexSimulator, company: TripletexCompany, tmp_path: Path
    ) -> None:
        retry = "[sources.settings.retry]\nattempts = 2\nbackoff_seconds = 0.01"
        config = config_with(tmp_path, sim, source(tripletex, retry))
        run_pass(config)
        started = len(sim.cases())
        paid = company.to_collect(oslo_today())[0]
        tripletex.pay(paid["id"], paid["amountOutstanding"])
        last = invoice_windows(start_date(company), oslo_today() + timedelta(days=1), 60)[-1]
        tripletex.fail("invoices", date_from=last[0].isoformat(), faults=["503", "drop"])
        kravia_before = sim.calls_total()

        failed = run_pass(config)

        assert failed.status == "failed"
        [result] = failed.sources
        assert result.error is not None
        assert f"dated {last[0]}" in result.error
        assert failed.counts["gone"] == 0
        assert sim.calls_total() == kravia_before
        with StateStore(load(config).state_path) as store:
            assert store.phase_counts() == {Phase.STARTED.value: started}

        recovered = run_pass(config)

        assert recovered.counts["gone"] == 1


class TestSecretsAndCli:
    @pytest.mark.slow
    def test_no_token_in_any_output(
        self, sim: Sim, tripletex: TripletexSimulator, tmp_path: Path
    ) -> None:
        """reconcile at debug level (a failed read with retries among them), plan, status, and
        wrong tokens: neither token nor any session token is printed."""
        retry = "[sources.settings.retry]\nattempts = 2\nbackoff_seconds = 0.01"
        config = config_with(tmp_path, sim, source(tripletex, retry))
        text = config.read_text(encoding="utf-8").replace('level = "info"', 'level = "debug"')
        config.write_text(text, encoding="utf-8")
        env = cli_env(TRIPLETEX_CONSUMER_TOKEN=CONSUMER, TRIPLETEX_EMPLOYEE_TOKEN=EMPLOYEE)

        first = run_cli("reconcile", cwd=tmp_path, env=env)
        tripletex.fail("invoices", faults=["503", "drop"])
        failed = run_cli("reconcile", "--json", cwd=tmp_path, env=env)
        plan = run_cli("plan", cwd=tmp_path, env=env)
        status = run_cli("status", cwd=tmp_path, env=env)
        wrong_env = {**env, "TRIPLETEX_EMPLOYEE_TOKEN": "tt-wrong-Qx81"}
        wrong = run_cli("reconcile", cwd=tmp_path, env=wrong_env)

        assert first.returncode in {0, 3}, first.stdout + first.stderr  # 3: attention (EUR)
        assert failed.returncode != 0
        assert "403" in wrong.stdout + wrong.stderr
        sessions = list(tripletex.sessions)
        assert len(sessions) >= 3
        for result in (first, failed, plan, status, wrong):
            output = result.stdout + result.stderr
            for secret in (CONSUMER, EMPLOYEE, "tt-wrong-Qx81", *sessions):
                assert secret not in output

    def test_init_writes_an_example_that_check_accepts_against_tripletex(
        self, tripletex: TripletexSimulator, tmp_path: Path
    ) -> None:
        """`init --source tripletex`, pointed at the simulator: `check` creates a session and
        lists invoices; with a wrong employee token it fails, without printing a token."""
        written = run_cli("init", "--source", "tripletex", cwd=tmp_path)
        assert written.returncode == 0, written.stderr
        config = tmp_path / "kravia-sync.toml"
        text = config.read_text("utf-8")
        assert 'connector = "tripletex"' in text
        text = text.replace(
            '# base_url = "https://tripletex.no/v2/"', f'base_url = "{tripletex.base_url}"'
        )
        config.write_text(text, encoding="utf-8")
        env = cli_env(
            KRAVIA_TOKEN="", TRIPLETEX_CONSUMER_TOKEN=CONSUMER, TRIPLETEX_EMPLOYEE_TOKEN=EMPLOYEE
        )

        checked = run_cli("check", cwd=tmp_path, env=env)
        refused = run_cli(
            "check", cwd=tmp_path, env={**env, "TRIPLETEX_EMPLOYEE_TOKEN": "tt-wrong-Qx81"}
        )

        assert "valid configuration" in checked.stdout, checked.stdout + checked.stderr
        assert "source tripletex answers with its credentials" in checked.stdout
        assert "no Kravia token" in checked.stderr
        assert tripletex.calls()["sessions_created"] == 1
        assert refused.returncode != 0
        assert "403" in refused.stdout + refused.stderr
        for output in (checked.stdout + checked.stderr, refused.stdout + refused.stderr):
            assert CONSUMER not in output
            assert "tt-wrong-Qx81" not in output


class TestCreditNoteRecords:
    NOTE: ClassVar[dict[str, Any]] = {
        "id": 3_000_901,
        "invoiceNumber": 10_901,
        "invoiceDate": "2026-11-20",
        "amount": -250.5,
        "currency": {"code": "NOK"},
        "isCreditNote": True,
        "creditedInvoice": 3_000_017,
    }

    def test_a_credit_note_is_a_record_of_the_invoice_it_credits(self) -> None:
        record = credit_note_record(self.NOTE, since=None)

        assert isinstance(record, PaymentRecord)
        assert record.fields["payment_id"] == "3000901"
        assert record.fields["kind"] == "credit_note"
        assert record.fields["amount"] == Decimal("250.5")
        assert record.fields["accounting_invoice_id"] == "3000017"
        assert record.fields["date"] == date(2026, 11, 20)

    def test_what_cannot_be_sent_is_left_out_or_named(self) -> None:
        note = self.NOTE
        assert credit_note_record({**note, "creditedInvoice": None}, since=None) is None
        assert credit_note_record({**note, "currency": {"code": "EUR"}}, since=None) is None
        assert credit_note_record({**note, "amount": 0}, since=None) is None
        assert credit_note_record(note, since=date(2026, 11, 21)) is None
        bad = credit_note_record({**note, "amount": "NaN"}, since=None)
        assert isinstance(bad, RecordError)
        assert (bad.key, bad.field) == ("credit note 3000901", "amount")
        undated = credit_note_record({**note, "invoiceDate": "20.11.2026"}, since=None)
        assert isinstance(undated, RecordError)
        assert undated.field == "invoiceDate"
