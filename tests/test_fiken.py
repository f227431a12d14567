"""Fiken end to end over real HTTP: the Fiken simulator into the Kravia simulator.

The same data is read twice over: by the `fiken` connector, and by a hand-written `rest`
configuration (the worked example of docs/sources/rest.md, `kravia-sync init --source rest`) that knows
nothing of Fiken.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from support import CREDITOR_ID, TOKEN, Sim, cli_env, load, run_cli, run_pass, write_config

from connectors.fiken import EXAMPLE_SETTINGS as FIKEN_EXAMPLE
from connectors.fiken import FikenConnector, FikenSettings
from connectors.rest import EXAMPLE_SETTINGS as REST_EXAMPLE
from kravia_sync.connector import ConnectorError, RecordError, SourceRecord, load_connector
from kravia_sync.lifecycle import Phase
from kravia_sync.state.store import StateStore
from kravia_sync.testing.fiken import FikenCompany, FikenSimulator, RunningFiken, demo_company
from kravia_sync.testing.simulator import RunningSimulator, Simulator

FIKEN_TOKEN = "fiken-pat-Hq7Lm2Zx9PwK"
SLUG = "fiken-demo-as"
FAST = 200.0  # requests per second in tests (Fiken's own limit, 4, in the rate-limit tests)


def oslo_today() -> date:
    return datetime.now(ZoneInfo("Europe/Oslo")).date()


@pytest.fixture(autouse=True)
def fiken_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FIKEN_TOKEN", FIKEN_TOKEN)
    return FIKEN_TOKEN


@pytest.fixture
def company() -> FikenCompany:
    """300 invoices of 60 customers: 30 settled, 30 not due, 30 too young, 210 to collect."""
    return demo_company(invoices=300, customers=60, slug=SLUG)


@pytest.fixture
def fiken(company: FikenCompany) -> Iterator[FikenSimulator]:
    simulator = FikenSimulator(company, token=FIKEN_TOKEN, requests_per_second=FAST, burst=20)
    with RunningFiken(simulator):
        yield simulator


def fiken_source(fiken: FikenSimulator, *, extra: str = "") -> str:
    return f"""
[[sources]]
name = "fiken"
connector = "fiken"
[sources.settings]
company_slug = "{SLUG}"
credit_notes_since = 2000-01-01
token_env = "FIKEN_TOKEN"
base_url = "{fiken.base_url}"
page_size = 50
requests_per_second = {FAST}
{extra}
"""


def rest_source(fiken: FikenSimulator) -> str:
    """The hand-written configuration of docs/sources/rest.md, pointed at the simulator."""
    text = REST_EXAMPLE.replace("https://api.fiken.no/api/v2/", fiken.base_url)
    text = text.replace("companies/fiken-demo-as/", f"companies/{SLUG}/")
    text = text.replace("requests_per_second = 4", f"requests_per_second = {FAST}")
    return text.replace('name = "accounting"', 'name = "fiken"')


def config_with(tmp_path: Path, sim: Sim, source: str) -> Path:
    config = write_config(tmp_path, sim.base_url)
    head = config.read_text(encoding="utf-8").split("[[sources]]")[0]
    config.write_text(head + source, encoding="utf-8")
    return config


def expected_ids(company: FikenCompany) -> list[str]:
    return sorted(str(i["invoiceId"]) for i in company.unpaid_overdue(oslo_today()))


def case_view(case: dict[str, Any]) -> dict[str, Any]:
    """What Kravia was told about a case, without the ids and times it assigned."""
    return {
        "body": case["body"],
        "started": case["started"],
        "documents": [document["sha256"] for document in case["documents"]],
    }


class TestFikenConnector:
    def test_reads_unsettled_invoices_with_their_customers(
        self, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """Every unsettled invoice, its outstanding balance in kroner, its customer's card."""
        connector = FikenConnector.from_settings(
            {
                "company_slug": SLUG,
                "credit_notes_since": "2000-01-01",
                "token_env": "FIKEN_TOKEN",
                "base_url": fiken.base_url,
                "page_size": 50,
                "requests_per_second": FAST,
            },
            base_dir=tmp_path,
        )

        items = list(connector.read())

        assert all(isinstance(item, SourceRecord) for item in items)
        unsettled = [i for i in company.invoices if not i["sale"]["settled"]]
        assert len(items) == len(unsettled) == 270
        by_id = {str(i["invoiceId"]): i for i in company.invoices}
        partly_paid = next(i for i in unsettled if i["sale"]["totalPaid"])
        record = next(
            item
            for item in items
            if isinstance(item, SourceRecord)
            and item.fields["accounting_invoice_id"] == str(partly_paid["invoiceId"])
        )
        source = by_id[str(record.fields["accounting_invoice_id"])]
        contact = company.contacts[source["customer"]["contactId"]]
        assert record.fields["amount"] == Decimal(source["sale"]["outstandingBalance"]) / 100
        assert record.fields["amount"] < Decimal(source["gross"]) / 100
        assert record.fields["invoice_number"] == str(source["invoiceNumber"])
        assert record.fields["debtor_name"] == contact["name"]
        assert record.fields["debtor_number"] == str(contact["customerNumber"])
        assert record.fields["postal_code"] == contact["address"]["postCode"]
        assert record.fields["country"] == "NO"
        assert record.key == f"invoice {source['invoiceNumber']} (id {source['invoiceId']})"
        calls = fiken.calls()
        assert calls["invoices"] == math.ceil(270 / 50)
        assert calls["contact"] == len({i["customer"]["contactId"] for i in unsettled})
        assert "pdf" not in calls  # documents load only when sent
        assert calls["most_in_flight"] == 1

    def test_foreign_currency_is_quarantined_with_the_reason(
        self, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """Fiken does not say which currency outstandingBalance is in for a EUR invoice."""
        company.invoices[3]["currency"] = "EUR"
        connector = FikenConnector.from_settings(
            {
                "company_slug": SLUG,
                "credit_notes_since": "2000-01-01",
                "token_env": "FIKEN_TOKEN",
                "base_url": fiken.base_url,
                "requests_per_second": FAST,
            },
            base_dir=tmp_path,
        )

        errors = [item for item in connector.read() if isinstance(item, RecordError)]

        assert [(e.key, e.field) for e in errors] == [("invoice 10004 (id 1000003)", "currency")]
        assert "register it by hand" in errors[0].reason

    def test_settings_need_a_slug_and_one_token_source(self) -> None:
        """No token in the file; a slug that is a slug."""
        with pytest.raises(ValueError, match="exactly one"):
            FikenSettings.model_validate({"company_slug": SLUG})
        with pytest.raises(ValueError, match="company_slug"):
            FikenSettings.model_validate({"company_slug": "../x", "token_env": "FIKEN_TOKEN"})
        with pytest.raises(ValueError, match="page_size"):
            FikenSettings.model_validate(
                {"company_slug": SLUG, "token_env": "FIKEN_TOKEN", "page_size": 101}
            )

    def test_credit_notes_need_the_day_they_are_sent_from(self) -> None:
        """Without `credit_notes_since` a store synced before credit notes were read would
        send old credit notes its registered amounts already left out: the setting is
        required (named in the error) unless credit notes are not read."""
        base = {"company_slug": SLUG, "token_env": "FIKEN_TOKEN"}
        with pytest.raises(ValueError, match="credit_notes_since"):
            FikenSettings.model_validate(base)
        since = FikenSettings.model_validate({**base, "credit_notes_since": "2026-12-01"})
        assert since.credit_notes_since == date(2026, 12, 1)
        assert FikenSettings.model_validate({**base, "credit_notes": False}).credit_notes is False

    def test_fiken_is_an_installed_connector_with_an_example(self) -> None:
        """The entry point and the `init --source fiken` example."""
        assert load_connector("fiken") is FikenConnector
        assert 'connector = "fiken"' in FIKEN_EXAMPLE


class TestFikenIntoKravia:
    def test_one_pass_registers_exactly_the_overdue_unpaid_invoices_with_their_pdfs(
        self, sim: Sim, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """210 cases, one per overdue unpaid invoice, started, each with its PDF."""
        config = config_with(tmp_path, sim, fiken_source(fiken))

        summary = run_pass(config)

        assert summary.status == "done", summary.as_dict()
        cases = sim.cases()
        assert sorted(c["accountingInvoiceId"] for c in cases) == expected_ids(company)
        assert len(cases) == 210
        by_id = {str(i["invoiceId"]): i for i in company.invoices}
        for case in cases:
            source = by_id[case["accountingInvoiceId"]]
            assert case["started"]
            assert Decimal(str(case["originalAmount"])) == (
                Decimal(source["sale"]["outstandingBalance"]) / 100
            )
            pdf = company.pdfs[source["invoiceId"]]
            assert [d["sha256"] for d in case["documents"]] == [hashlib.sha256(pdf).hexdigest()]
            contact = company.contacts[source["customer"]["contactId"]]
            body = case["body"]
            assert body["debtorName"] == contact["name"]
            assert body["organizationNumber"] == contact["organizationNumber"]
            private = contact["organizationNumber"] is None
            assert body["isPrivateIndividual"] == ("true" if private else "false")

    def test_written_off_and_deleted_invoices_are_never_sent(
        self, sim: Sim, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """Overdue and unpaid, but with a loss registered (sale.writeOff) or the sale reversed
        (sale.deleted): nothing to collect, so no case. One written off after it reached
        Kravia is gone from the source: flagged, nothing more sent for it."""
        overdue = [int(i) for i in expected_ids(company)]
        written_off, deleted, later = overdue[0], overdue[1], overdue[2]
        fiken.write_off(written_off)
        fiken.delete(deleted)
        config = config_with(tmp_path, sim, fiken_source(fiken))

        first = run_pass(config)

        assert first.status == "done", first.as_dict()
        ids = sorted(c["accountingInvoiceId"] for c in sim.cases())
        assert ids == expected_ids(company)
        assert len(ids) == 208
        assert str(written_off) not in ids
        assert str(deleted) not in ids
        assert str(later) in ids

        fiken.write_off(later)
        sending = ("register", "document", "action", "payment", "creditnote")
        before = {name: sum(sim.simulator.calls()[name].values()) for name in sending}
        second = run_pass(config)

        assert second.counts["gone"] == 1
        assert second.status == "attention"  # a person looks at what Kravia still collects
        after = {name: sum(sim.simulator.calls()[name].values()) for name in sending}
        assert after == before  # nothing sent for it, nor for anything else
        with StateStore(load(config).state_path) as store:
            case = store.load_cases_by_id([str(later)])[str(later)]
        assert case.phase is Phase.STARTED

    def test_a_second_pass_makes_no_kravia_calls_and_few_fiken_calls(
        self, sim: Sim, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """Pages, one request per customer and two pages of credit notes (the list, and the
        check for one made during the read; there are none): no PDF, nothing to Kravia."""
        config = config_with(tmp_path, sim, fiken_source(fiken))
        run_pass(config)
        kravia_before = sim.calls_total()
        fiken_before = fiken.calls()

        summary = run_pass(config)

        fiken_after = fiken.calls()
        assert summary.status == "done", summary.as_dict()
        assert sim.calls_total() == kravia_before
        unsettled = [i for i in company.invoices if not i["sale"]["settled"]]
        customers = len({i["customer"]["contactId"] for i in unsettled})
        pages = math.ceil(270 / 50)
        assert fiken_after["total"] - fiken_before["total"] == pages + customers + 2
        assert fiken_after["credit_notes"] - fiken_before["credit_notes"] == 2
        assert fiken_after.get("pdf") == fiken_before.get("pdf")

    def test_a_hand_written_rest_configuration_gives_the_same_cases(
        self, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """The rest example of docs/sources/rest.md, no Fiken code: the same bodies, starts and PDFs."""
        views: list[list[dict[str, Any]]] = []
        for name, source in (("fiken", fiken_source(fiken)), ("rest", rest_source(fiken))):
            kravia = Simulator(token=TOKEN, creditor_id=CREDITOR_ID)
            with RunningSimulator(kravia) as running:
                directory = tmp_path / name
                directory.mkdir()
                sim = Sim(kravia, running)
                summary = run_pass(config_with(directory, sim, source))
                assert summary.status == "done", summary.as_dict()
                cases = sorted(kravia.cases(), key=lambda c: c["accountingInvoiceId"])
                views.append([case_view(case) for case in cases])

        assert len(views[0]) == len(expected_ids(company)) == 210
        assert views[0] == views[1]

    @pytest.mark.slow
    def test_an_outage_mid_read_fails_the_read_closes_nothing_and_the_next_pass_completes(
        self, sim: Sim, fiken: FikenSimulator, company: FikenCompany, tmp_path: Path
    ) -> None:
        """503s on page 3, then dropped connections: a failed source; later all is well."""
        retry = "[sources.settings.retry]\nattempts = 3\nbackoff_seconds = 0.01"
        config = config_with(tmp_path, sim, fiken_source(fiken, extra=retry))
        run_pass(config)
        started = len(sim.cases())
        paid = company.unpaid_overdue(oslo_today())[0]["invoiceId"]
        fiken.settle(paid)  # paid meanwhile: gone from the source, but only a full read says so
        fiken.fail("invoices", page=2, faults=["503", "503", "drop", "drop"])
        kravia_before = sim.calls_total()

        failed = run_pass(config)

        assert failed.status == "failed"
        [source] = failed.sources
        assert source.status == "failed"
        assert source.error is not None
        assert "invoices page 3" in source.error
        assert "dropped" in source.error
        assert FIKEN_TOKEN not in source.error
        assert failed.counts["gone"] == 0
        assert sim.calls_total() == kravia_before
        store = StateStore(load(config).state_path)
        try:
            assert store.phase_counts() == {Phase.STARTED.value: started}
        finally:
            store.close()

        recovered = run_pass(config)

        # The settled invoice left a complete read with nothing forwarded that explains it:
        # flagged for a person (it may have been paid to the creditor), never closed.
        assert recovered.status == "attention", recovered.as_dict()
        assert recovered.counts["gone"] == 1
        assert recovered.counts["gone_unexplained"] == 1
        assert sim.calls_total() == kravia_before


class TestRateLimit:
    @pytest.mark.slow
    def test_at_fikens_limit_the_read_is_paced_and_never_refused(self, tmp_path: Path) -> None:
        """4 requests per second, one at a time: no 429, and the time the limit implies."""
        company = demo_company(invoices=20, customers=4, slug=SLUG, pdf_every=0)
        simulator = FikenSimulator(company, token=FIKEN_TOKEN, requests_per_second=4, burst=2)
        with RunningFiken(simulator):
            connector = FikenConnector.from_settings(
                {
                    "company_slug": SLUG,
                    "credit_notes_since": "2000-01-01",
                    "token_env": "FIKEN_TOKEN",
                    "base_url": simulator.base_url,
                    "page_size": 6,
                },
                base_dir=tmp_path,
            )
            started = time.monotonic()
            items = list(connector.read())
            elapsed = time.monotonic() - started

        calls = simulator.calls()
        requests = calls["total"]
        assert len(items) == 18
        assert requests == 3 + 4 + 2  # pages of 18 invoices, four customers, credit notes twice
        assert calls["statuses"] == {200: requests}
        assert elapsed >= (requests - 1) / 4 - 0.05
        assert elapsed < (requests - 1) / 4 + 1.0

    @pytest.mark.slow
    def test_a_client_too_fast_for_the_limit_is_refused_with_429_and_recovers(
        self, tmp_path: Path
    ) -> None:
        """Configured past Fiken's limit: 429s with Retry-After, honoured; nothing lost."""
        company = demo_company(invoices=20, customers=4, slug=SLUG, pdf_every=0)
        simulator = FikenSimulator(company, token=FIKEN_TOKEN, requests_per_second=4, burst=2)
        with RunningFiken(simulator):
            connector = FikenConnector.from_settings(
                {
                    "company_slug": SLUG,
                    "credit_notes_since": "2000-01-01",
                    "token_env": "FIKEN_TOKEN",
                    "base_url": simulator.base_url,
                    "page_size": 6,
                    "requests_per_second": 50,
                    "retry": {"attempts": 10},
                },
                base_dir=tmp_path,
            )
            items = list(connector.read())

        calls = simulator.calls()
        assert len(items) == 18
        assert calls["rejected_rate"] > 0
        assert calls["statuses"][429] == calls["rejected_rate"]
        assert calls["most_in_flight"] == 1

    def test_a_second_request_in_flight_is_refused(self) -> None:
        """Fiken allows one request at a time; the simulator enforces it."""
        company = demo_company(invoices=5, customers=2, slug=SLUG)
        simulator = FikenSimulator(
            company, token=FIKEN_TOKEN, requests_per_second=100, latency_ms=200
        )
        url = f"companies/{SLUG}/contacts/5000000"
        with RunningFiken(simulator):
            headers = {"Authorization": f"Bearer {FIKEN_TOKEN}"}
            with (
                httpx.Client(base_url=simulator.base_url, headers=headers) as client,
                ThreadPoolExecutor(2) as pool,
            ):
                statuses = sorted(
                    r.status_code for r in pool.map(lambda _: client.get(url), range(2))
                )
        assert statuses == [200, 429]
        assert simulator.calls()["rejected_concurrent"] == 1


class TestSecrets:
    @pytest.mark.slow
    def test_the_token_is_in_no_log_line_or_output(
        self, sim: Sim, fiken: FikenSimulator, tmp_path: Path
    ) -> None:
        """reconcile (with retries and a failed read), plan and status: never the token."""
        retry = "[sources.settings.retry]\nattempts = 2\nbackoff_seconds = 0.01"
        config = config_with(tmp_path, sim, fiken_source(fiken, extra=retry))
        text = config.read_text(encoding="utf-8").replace('level = "info"', 'level = "debug"')
        config.write_text(text, encoding="utf-8")
        env = cli_env(FIKEN_TOKEN=FIKEN_TOKEN)

        first = run_cli("reconcile", cwd=tmp_path, env=env)
        fiken.fail("invoices", page=1, faults=["503", "drop"])
        failed = run_cli("reconcile", "--json", cwd=tmp_path, env=env)
        plan = run_cli("plan", cwd=tmp_path, env=env)
        status = run_cli("status", cwd=tmp_path, env=env)
        wrong_env = cli_env(FIKEN_TOKEN="wrong-Zq1-token")  # noqa: S106 - a test value
        wrong = run_cli("reconcile", cwd=tmp_path, env=wrong_env)

        assert first.returncode == 0, first.stdout + first.stderr
        assert failed.returncode != 0
        assert "retrying a request to the source" in failed.stderr
        assert "invoices page 2" in failed.stdout + failed.stderr
        assert "401" in wrong.stdout + wrong.stderr
        for result in (first, failed, plan, status, wrong):
            assert FIKEN_TOKEN not in result.stdout + result.stderr
        assert "wrong-Zq1-token" not in wrong.stdout + wrong.stderr

    def test_the_token_is_not_in_repr_or_a_connector_error(self, tmp_path: Path) -> None:
        """repr of settings and connector; an unreachable API's error."""
        connector = FikenConnector.from_settings(
            {
                "company_slug": SLUG,
                "credit_notes_since": "2000-01-01",
                "token_env": "FIKEN_TOKEN",
                "base_url": "http://127.0.0.1:9/api/v2/",
                "retry": {"attempts": 1},
            },
            base_dir=tmp_path,
        )
        assert FIKEN_TOKEN in connector.secret_values()
        with pytest.raises(ConnectorError) as failure:
            list(connector.read())
        for text in (repr(connector), repr(connector.settings), str(failure.value)):
            assert FIKEN_TOKEN not in text


class TestInit:
    @pytest.mark.parametrize("name", ["fiken", "rest"])
    def test_init_writes_an_example_that_check_accepts(
        self, name: str, fiken: FikenSimulator, tmp_path: Path
    ) -> None:
        """`init --source fiken|rest`, pointed at the simulator: `check` accepts the file and
        the Fiken token (and says the Kravia token is missing); a wrong Fiken token fails,
        named for the source and never printed."""
        written = run_cli("init", "--source", name, cwd=tmp_path)
        config = tmp_path / "kravia-sync.toml"
        text = config.read_text("utf-8")
        if name == "fiken":
            text = text.replace(
                'company_slug = "fiken-demo-as"',
                f'company_slug = "{SLUG}"\nbase_url = "{fiken.base_url}"',
            )
        else:
            text = text.replace("https://api.fiken.no/api/v2/", fiken.base_url)
            text = text.replace("companies/fiken-demo-as/", f"companies/{SLUG}/")
        config.write_text(text, encoding="utf-8")
        env = cli_env(KRAVIA_TOKEN="", FIKEN_TOKEN=FIKEN_TOKEN)
        checked = run_cli("check", cwd=tmp_path, env=env)
        wrong = run_cli("check", cwd=tmp_path, env={**env, "FIKEN_TOKEN": "fk-wrong-Zz19"})

        assert written.returncode == 0, written.stderr
        assert f'connector = "{name}"' in text
        assert "valid configuration" in checked.stdout, checked.stdout + checked.stderr
        assert f"({name})" in checked.stdout
        assert "answers with its credentials" in checked.stdout, checked.stdout + checked.stderr
        assert "no Kravia token" in checked.stderr
        assert wrong.returncode == 1
        assert "credentials check failed for source" in wrong.stderr
        for output in (checked.stdout + checked.stderr, wrong.stdout + wrong.stderr):
            assert FIKEN_TOKEN not in output
            assert "fk-wrong-Zz19" not in output
