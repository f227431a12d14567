"""The Fiken simulator follows Fiken's published paging, filters, auth and limits."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kravia_sync.testing.fiken import FikenSimulator, RunningFiken, demo_company

TOKEN = "sim-fiken-token-3k"
SLUG = "demo-as"


@pytest.fixture
def client() -> Iterator[tuple[FikenSimulator, httpx.Client]]:
    company = demo_company(invoices=30, customers=6, slug=SLUG)
    simulator = FikenSimulator(company, token=TOKEN, requests_per_second=1000, burst=100)
    with (
        RunningFiken(simulator),
        httpx.Client(
            base_url=simulator.base_url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http,
    ):
        yield simulator, http


class TestFikenSimulator:
    def test_pages_count_from_zero_with_fikens_headers(
        self, client: tuple[FikenSimulator, httpx.Client]
    ) -> None:
        """page/pageSize, and the four Fiken-Api-* headers."""
        _, http = client
        answer = http.get(f"companies/{SLUG}/invoices", params={"page": 1, "pageSize": 12})

        assert answer.status_code == 200
        assert [i["invoiceNumber"] for i in answer.json()] == list(range(10_013, 10_025))
        assert answer.headers["Fiken-Api-Page"] == "1"
        assert answer.headers["Fiken-Api-Page-Size"] == "12"
        assert answer.headers["Fiken-Api-Page-Count"] == "3"
        assert answer.headers["Fiken-Api-Result-Count"] == "30"

    def test_defaults_and_the_page_size_limit(
        self, client: tuple[FikenSimulator, httpx.Client]
    ) -> None:
        """25 a page by default; more than 100 is refused."""
        _, http = client
        assert len(http.get(f"companies/{SLUG}/invoices").json()) == 25
        too_big = http.get(f"companies/{SLUG}/invoices", params={"pageSize": 101})
        assert too_big.status_code == 400

    def test_settled_and_issue_date_filters(
        self, client: tuple[FikenSimulator, httpx.Client]
    ) -> None:
        """settled=false leaves out the paid; issueDateLe bounds the issue date."""
        simulator, http = client
        unsettled = http.get(
            f"companies/{SLUG}/invoices", params={"settled": "false", "pageSize": 100}
        ).json()
        assert len(unsettled) == 27
        assert not any(i["sale"]["settled"] for i in unsettled)
        bound = sorted(i["issueDate"] for i in simulator.company.invoices)[10]
        early = http.get(
            f"companies/{SLUG}/invoices", params={"issueDateLe": bound, "pageSize": 100}
        ).json()
        assert early
        assert all(i["issueDate"] <= bound for i in early)

    def test_due_date_and_last_modified_filters_and_no_filter_ignored(
        self, client: tuple[FikenSimulator, httpx.Client]
    ) -> None:
        """dueDate and lastModified filter as issueDate does; a parameter the simulator does
        not apply is a 400, never silently ignored."""
        simulator, http = client
        bound = sorted(i["dueDate"] for i in simulator.company.invoices)[10]
        due_early = http.get(
            f"companies/{SLUG}/invoices", params={"dueDateLt": bound, "pageSize": 100}
        ).json()
        expected = [i["invoiceId"] for i in simulator.company.invoices if i["dueDate"] < bound]
        assert expected
        assert [i["invoiceId"] for i in due_early] == expected
        changed = max(i["sale"]["lastModifiedDate"] for i in simulator.company.invoices)
        latest = http.get(
            f"companies/{SLUG}/invoices", params={"lastModifiedGe": changed, "pageSize": 100}
        ).json()
        assert latest
        assert all(i["sale"]["lastModifiedDate"] >= changed for i in latest)
        unknown = http.get(f"companies/{SLUG}/invoices", params={"orderReference": "x"})
        assert unknown.status_code == 400
        assert "orderReference" in unknown.json()["error"]

    def test_contacts_read_as_the_spec_types_them(
        self, client: tuple[FikenSimulator, httpx.Client]
    ) -> None:
        """No write-only field in a read; the country in the spec example's English form
        among others; the invoice list's customer is the full contact."""
        simulator, http = client
        contacts = [
            http.get(f"companies/{SLUG}/contacts/{contact_id}").json()
            for contact_id in simulator.company.contacts
        ]
        assert all("phoneNumber" not in c and "currency" not in c for c in contacts)
        assert {c["address"]["country"] for c in contacts} == {"Norway", "Norge", "NO"}
        listed = http.get(f"companies/{SLUG}/invoices").json()[0]
        contact = simulator.company.contacts[listed["customer"]["contactId"]]
        assert listed["customer"] == contact

    def test_contacts_pdfs_and_auth(self, client: tuple[FikenSimulator, httpx.Client]) -> None:
        """A contact by id, a PDF at its downloadUrl, 401 without the token, 404 unknown."""
        simulator, http = client
        first = http.get(f"companies/{SLUG}/invoices").json()[0]
        contact = http.get(f"companies/{SLUG}/contacts/{first['customer']['contactId']}")
        pdf = http.get(first["invoicePdf"]["downloadUrl"])

        assert contact.json()["address"]["postCode"]
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.content == simulator.company.pdfs[first["invoiceId"]]
        assert http.get(f"companies/{SLUG}/contacts/1").status_code == 404
        bare = httpx.get(f"{simulator.base_url}companies/{SLUG}/invoices")
        assert bare.status_code == 401

    def test_scripted_faults_then_normal_answers(
        self, client: tuple[FikenSimulator, httpx.Client]
    ) -> None:
        """A 503, then a connection dropped half-way, then the page."""
        simulator, http = client
        simulator.fail("invoices", page=0, faults=["503", "drop"])

        assert http.get(f"companies/{SLUG}/invoices").status_code == 503
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(f"companies/{SLUG}/invoices")
        assert http.get(f"companies/{SLUG}/invoices").status_code == 200
        assert simulator.calls()["statuses"][0] == 1

    def test_the_rate_limit_answers_429_with_retry_after(self) -> None:
        """Beyond the bucket: 429 and Retry-After."""
        company = demo_company(invoices=3, customers=1, slug=SLUG)
        simulator = FikenSimulator(company, token=TOKEN, requests_per_second=1, burst=2)
        with (
            RunningFiken(simulator),
            httpx.Client(
                base_url=simulator.base_url, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as http,
        ):
            statuses = [http.get(f"companies/{SLUG}/invoices") for _ in range(3)]

        assert [s.status_code for s in statuses] == [200, 200, 429]
        assert statuses[2].headers["Retry-After"] == "1"
        assert simulator.calls()["rejected_rate"] == 1
