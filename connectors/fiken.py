"""The Fiken connector: unpaid invoices from Fiken's API v2 (api.fiken.no/api/v2).

A preset of the `rest` connector, from Fiken's published OpenAPI description (2.0.0):

* Auth: a personal API token (`token_env` or `token_file`; it never expires), for a company's
  own use, or OAuth2 (`[oauth]`), which Fiken asks of third parties: a person consents once
  (`kravia-sync auth fiken`), and the connector then renews its access token from the stored
  refresh token, storing each rotated one before use (`connectors._fiken_oauth`). Both are
  sent as `Authorization: Bearer`. `check()` asks for the company (`GET /companies/{slug}`).
* Invoices: `GET /companies/{companySlug}/invoices?settled=false` — "returns all invoices that
  have not been fully settled" — paged with `page` (from 0) and `pageSize` (at most 100), the
  totals in `Fiken-Api-Page-Count` and `Fiken-Api-Result-Count`. The read fails (nothing is
  taken as gone) when those totals change during the read or do not match what was read.
* Fields: `invoiceId` (the accountingInvoiceId: Fiken's primary key), `invoiceNumber`,
  `issueDate`, `dueDate`, `currency`, `invoiceText`, and the outstanding balance
  `sale.outstandingBalance` in øre (Fiken: "Amounts are always represented as a number, and
  specifies the number of cents"). Invoices whose sale is settled, written off
  (`sale.writeOff`: a loss registered, e.g. after collection failed) or deleted (`sale.deleted`:
  reversed), or whose outstanding balance is zero, are left out: there is nothing to collect.
  One already in Kravia is then gone from the source: flagged for a person, never sent again.
* The customer: `GET /companies/{companySlug}/contacts/{contactId}` for the invoice's
  `customer.contactId`, once per customer per read — `name`, `customerNumber`,
  `organizationNumber` (a business debtor when present), `email`, `address.streetAddress`,
  `streetAddressLine2`, `postCode`, `city`, `country` (a name such as "Norge" or a code).
* The PDF: `invoicePdf.downloadUrl` ("for use with API credentials"), fetched only when the
  engine sends it to Kravia, with the token only if it is on the API's host.
* Limits: Fiken allows "a single concurrent API-request" (more "may result in a 429") and
  "API calls may be slowed if you execute more than 4 requests per second": one request at a
  time, at most `requests_per_second` (4) started per second; 429 and `Retry-After` honoured.
* Credit notes: `GET /companies/{companySlug}/creditNotes`, every page, read before the
  invoices (see `connectors.fiken_credit`), and those modified since the day before the read
  began read again after them: one made or changed in between fails the read. Each invoice's
  amount is what it still owes after its credit notes, whichever way Fiken's
  `outstandingBalance` counts them (undocumented); an invoice credited in full is left out.
  Each credit note tied to an invoice is yielded as a payment record of kind `credit_note`
  whose payment id is its `creditNoteId`.

How money paid reaches Kravia, and why: payments stay *amount drops* (the source's default
`payments = "amount_drops"`). Fiken's payments (`sale.salePayments`, `paymentId`, `date`,
`account`, `amount`) carry nothing that tells a debtor's payment from Kravia's own payout booked
by the creditor, while a drop is first explained by the payouts Kravia lists on the case: the
safer way not to echo a payout back. Credit notes are records, so they reach Kravia as credit
notes with Fiken's id. The drop a credit note causes is not sent a second time: the engine
forwards credit notes before drops, a drop waits while a credit note on its invoice is
unsettled, and a drop is limited to what Kravia's capital exceeds what is still owed (after a
credit note has gone, nothing). A credit note first seen before its invoice was registered is
netted (the registered amount left it out); each is clamped to the capital Kravia says is left.
A credit note made during the read fails the read (nothing of it is taken; the next pass
reads again): the invoices read may count it or not.

What Fiken's description leaves open is listed in docs/sources/fiken.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Final

from pydantic import Field, field_validator, model_validator

from connectors._fiken_oauth import FikenOAuth, FikenOAuthSettings
from connectors.fiken_credit import (
    CENTS,
    CreditNote,
    InvoiceFigures,
    credit_note_record,
    owed_after_credits,
    parse_credit_note,
    read_credit_notes,
)
from connectors.rest import RestConnector, RestSettings, RetrySettings
from connectors.rest._auth import Authenticator
from connectors.rest._review import not_in_nok
from kravia_sync import (
    ConnectorError,
    ConnectorSettings,
    PaymentRecord,
    RecordError,
    SourceRecord,
)

__all__ = [
    "EXAMPLE_SETTINGS",
    "FIKEN_API",
    "FikenConnector",
    "FikenOAuthSettings",
    "FikenSettings",
    "rest_settings",
]

FIKEN_API: Final = "https://api.fiken.no/api/v2/"
FIKEN_MAX_PAGE_SIZE: Final = 100
FIKEN_REQUESTS_PER_SECOND: Final = 4.0

EXAMPLE_SETTINGS: Final = f"""\
[[sources]]
name = "fiken"                   # a short, stable name; it keys the state of this source
connector = "fiken"
id_prefix = ""                   # prepended to each accountingInvoiceId (Fiken's invoiceId)
[sources.settings]
# The company's slug, as in https://fiken.no/foretak/<slug>/ (GET /companies lists them).
company_slug = "fiken-demo-as"
# A personal API token (Fiken: Rediger konto -> API -> Personlige API-nøkler), for your own
# company: name an environment variable holding it, or a file (relative to this file). It is
# redacted from every log line and message.
token_env = "FIKEN_TOKEN"
# token_file = "/run/secrets/fiken_token"
#
# Or, instead of a token, OAuth2 (what Fiken asks of third parties acting for a company): the
# app's client id and secret, and where the refresh token is kept. Run
# `kravia-sync auth fiken` once to consent; the connector renews its access from then on.
# [sources.settings.oauth]
# client_id = "your-app-client-id"
# client_secret_env = "FIKEN_CLIENT_SECRET"     # or client_secret_file
# redirect_uri = "http://127.0.0.1:8765/callback"   # one of the app's redirect URLs
# refresh_token_file = "fiken-refresh-token"    # relative to this file; written 0600
#
# Fiken allows one request at a time and slows down beyond 4 requests per second.
# requests_per_second = 4
# page_size = 100                # invoices per page (Fiken's maximum is 100)
# documents = true               # send each invoice's PDF (invoicePdf) to Kravia
# credit_notes = true            # read GET /creditNotes: amounts after credit notes, and
#                                # each credit note to Kravia as a credit note
# Credit notes issued from this day on go to Kravia as credit notes; older ones are counted in
# the amounts only. On a company kravia-sync has not synced before, any day will do; when
# upgrading from a version that did not read credit notes, the day of the upgrade.
credit_notes_since = {datetime.now(UTC).date().isoformat()}
# timeout_seconds = 30
# [sources.settings.retry]       # 429, 5xx and dropped connections, per request
# attempts = 5
# backoff_seconds = 0.5
"""


class FikenSettings(ConnectorSettings):
    """Settings of the Fiken connector (`[sources.settings]` of a `fiken` source)."""

    company_slug: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200)
    token_env: str | None = None
    token_file: Path | None = None
    oauth: FikenOAuthSettings | None = None
    base_url: str = FIKEN_API
    """Fiken's API; another URL only for a test server."""
    page_size: int = Field(default=FIKEN_MAX_PAGE_SIZE, ge=1, le=FIKEN_MAX_PAGE_SIZE)
    requests_per_second: float = Field(default=FIKEN_REQUESTS_PER_SECOND, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    documents: bool = True
    credit_notes: bool = True
    """Read the credit notes (one paged read): amounts after them, and each to Kravia."""
    credit_notes_since: date | None = None
    """Credit notes issued before this day are counted in the amounts but never sent; required
    with `credit_notes` (see `_credit_notes_since_given`)."""

    @model_validator(mode="after")
    def _one_token(self) -> FikenSettings:
        given = [self.token_env, self.token_file, self.oauth]
        if sum(value is not None for value in given) != 1:
            raise ValueError(
                "give a personal API token (token_env, an environment variable, or token_file) "
                "or OAuth2 (an [oauth] table), exactly one"
            )
        return self

    @model_validator(mode="after")
    def _credit_notes_since_given(self) -> FikenSettings:
        if self.credit_notes and self.credit_notes_since is None:
            raise ValueError(
                "credit_notes_since: the day from which credit notes go to Kravia as credit "
                "notes (older ones count in the amounts only): any day for a company not synced "
                "before; the upgrade's day for one synced by a version without credit notes, "
                "whose credit notes Kravia's amounts already leave out. Or credit_notes = false"
            )
        return self

    @field_validator("base_url")
    @classmethod
    def _slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


def rest_settings(settings: FikenSettings) -> RestSettings:
    """The `rest` settings that read Fiken as `settings` say."""
    company = f"companies/{settings.company_slug}"
    auth: dict[str, object] = {"type": "bearer"}
    if settings.token_env is not None:
        auth["token_env"] = settings.token_env
    elif settings.token_file is not None:
        auth["token_file"] = settings.token_file
    else:  # OAuth2: FikenConnector.make_authenticator gives the credentials
        auth = {"type": "none"}
    raw: dict[str, Any] = {
        "base_url": settings.base_url,
        "auth": auth,
        "timeout_seconds": settings.timeout_seconds,
        "rate_limit": {
            "requests_per_second": settings.requests_per_second,
            "max_in_flight": 1,
        },
        "retry": settings.retry,
        "invoices": {
            "path": f"{company}/invoices",
            "params": {"settled": False},
            "paging": {
                "type": "page_number",
                "page_param": "page",
                "first_page": 0,
                "size_param": "pageSize",
                "page_size": settings.page_size,
                "total_pages_header": "Fiken-Api-Page-Count",
                "total_records_header": "Fiken-Api-Result-Count",
            },
        },
        "fields": {
            "accounting_invoice_id": {"path": "invoiceId", "transform": "text"},
            "invoice_number": {"path": "invoiceNumber", "transform": "text"},
            "invoice_date": {"path": "issueDate", "transform": "date"},
            "due_date": {"path": "dueDate", "transform": "date"},
            "amount": {"path": "sale.outstandingBalance", "transform": "minor_units"},
            "currency": "currency",
            "description": "invoiceText",
        },
        "customer": {
            "path": f"{company}/contacts/{{invoice.customer.contactId}}",
            "fields": {
                "debtor_name": "name",
                "debtor_number": {"path": "customerNumber", "transform": "text"},
                "organization_number": "organizationNumber",
                "debtor_email": "email",
                "address_line1": "address.streetAddress",
                "address_line2": "address.streetAddressLine2",
                "postal_code": "address.postCode",
                "city": "address.city",
                "country": {"path": "address.country", "transform": "country"},
            },
        },
    }
    if settings.documents:
        raw["document"] = {"url_path": "invoicePdf.downloadUrl"}
    return RestSettings.model_validate(raw)


class FikenConnector(RestConnector):
    """Reads a Fiken company's unpaid invoices, their customers and their PDFs."""

    settings_model: ClassVar[type[ConnectorSettings]] = FikenSettings
    example_config: ClassVar[str] = EXAMPLE_SETTINGS

    def __init__(self, settings: ConnectorSettings, *, base_dir: Path) -> None:
        if not isinstance(settings, FikenSettings):
            raise TypeError(f"FikenConnector needs FikenSettings, not {type(settings).__name__}")
        self.fiken = settings
        super().__init__(rest_settings(settings), base_dir=base_dir)
        self._credits = _CreditNotes()  # those of the read under way

    def __repr__(self) -> str:
        return f"FikenConnector(company_slug={self.fiken.company_slug!r})"

    def make_authenticator(self, settings: RestSettings, base_dir: Path) -> Authenticator:
        """OAuth2 refresh tokens when `[oauth]` is set, else the personal API token."""
        if self.fiken.oauth is not None:
            return FikenOAuth(self.fiken.oauth, base_dir)
        return super().make_authenticator(settings, base_dir)

    def check(self) -> list[str] | None:
        """`GET /companies/{slug}`: the credentials are accepted and reach the company."""
        slug = self.fiken.company_slug
        problems = self.http.probe(f"companies/{slug}", f"the company {slug}")
        if any("answered 403" in problem or "answered 404" in problem for problem in problems):
            problems.append(
                f"the credentials do not reach the company {slug}: check company_slug; with "
                "OAuth2, a company must be among those the consent covers (Fiken: Rediger "
                "konto -> Sikkerhet -> Apper du har gitt tilgang til)"
            )
        return problems

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        """The credit notes, then the unsettled invoices as they come, each at what it owes
        after its credit notes, then the credit notes tied to an invoice as payment records.
        A credit note made or changed during the read (those modified since the day before it
        began are read again at its end) fails the read: the invoices read may count it or
        not, so nothing of this read is taken, and the next pass reads it whole."""
        if not self.fiken.credit_notes:
            yield from super().read()
            return
        began = self.today()
        self._credits, errors = self._read_credit_notes({})
        try:
            yield from super().read()
        finally:
            notes = self._credits
            self._credits = _CreditNotes()
        changed_since = (began - timedelta(days=1)).isoformat()
        again, _ = self._read_credit_notes({"lastModifiedGe": changed_since})
        moved = sorted(
            n.credit_note_id for n in again.by_id.values() if notes.by_id.get(n.credit_note_id) != n
        )
        if moved:
            raise ConnectorError(
                f"credit note {moved[0]} was made or changed while the invoices were read; "
                "nothing of this read is taken, the next pass reads it again"
            )
        yield from errors
        since = self.fiken.credit_notes_since
        for note in notes.by_id.values():
            if note.invoice_id is None or not note.in_nok or note.gross == 0:
                continue  # tied to no invoice, or in a currency whose invoice is not sent
            if since is None or note.issued >= since:
                yield credit_note_record(note)

    def _read_credit_notes(
        self, params: Mapping[str, str]
    ) -> tuple[_CreditNotes, list[RecordError]]:
        """Every credit note `params` select (one paged read), and those that cannot be read."""
        found = _CreditNotes()
        errors: list[RecordError] = []
        path = f"companies/{self.fiken.company_slug}/creditNotes"
        with self.http.session() as session:
            pager = self.settings.invoices.paging.pager()
            raws = read_credit_notes(
                session, path, pager, params, max_pages=self.settings.invoices.max_pages
            )
            for position, raw in enumerate(raws, start=1):
                note = parse_credit_note(raw, f"credit note {position} of {path}")
                if isinstance(note, RecordError):
                    errors.append(note)
                    continue
                found.by_id[note.credit_note_id] = note
                if note.invoice_id is not None:
                    found.by_invoice.setdefault(note.invoice_id, []).append(note)
        return found, errors

    def review(
        self, key: str, invoice: Mapping[str, Any], fields: dict[str, object]
    ) -> RecordError | bool:
        """Leave out what has nothing to collect (settled, written off, deleted, nothing
        outstanding); quarantine what Fiken's documentation does not let us read safely (the
        outstanding balance of an invoice in another currency)."""
        sale = invoice.get("sale")
        if isinstance(sale, Mapping) and (
            sale.get("settled") is True
            # A loss registered (e.g. COLLECTION_FAILED) or a reversed sale: nothing to collect.
            or sale.get("writeOff") not in {None, False}
            or sale.get("deleted") is True
        ):
            return False
        amount = fields.get("amount")
        if isinstance(amount, Decimal) and amount == 0:
            return False  # credit notes can only lower what is owed
        foreign = not_in_nok(key, fields, amount="sale.outstandingBalance")
        if foreign is not None:
            return foreign
        return self._after_credits(key, invoice, fields)

    def _after_credits(
        self, key: str, invoice: Mapping[str, Any], fields: dict[str, object]
    ) -> RecordError | bool:
        """The invoice at what it owes after its credit notes (`owed_after_credits`): False
        when that is nothing (credited in full), a `RecordError` when it cannot be told."""
        sale = invoice.get("sale")
        sale = sale if isinstance(sale, Mapping) else {}
        invoice_id = _whole(invoice.get("invoiceId"))
        outstanding = _whole(sale.get("outstandingBalance"))
        if not self.fiken.credit_notes or invoice_id is None or outstanding is None:
            return True  # the mapping reports what is missing
        linked = invoice.get("associatedCreditNotes")
        ids = tuple(i for i in linked if _whole(i) is not None) if isinstance(linked, list) else ()
        figures = InvoiceFigures(
            invoice_id=invoice_id,
            outstanding=outstanding,
            total_paid=_whole(sale.get("totalPaid")),
            gross=_whole(invoice.get("gross")),
            credit_note_ids=ids,
        )
        notes = self._credits
        owed = owed_after_credits(figures, notes.by_id, notes.by_invoice.get(invoice_id, ()))
        if isinstance(owed, str):
            return RecordError(key, "amount", owed)
        if owed == 0:
            return False
        if owed != outstanding:
            fields["amount"] = Decimal(owed) / CENTS
        return True


@dataclass
class _CreditNotes:
    """The credit notes of one read: by id, and by the invoice they name."""

    by_id: dict[int, CreditNote] = field(default_factory=dict)
    by_invoice: dict[int, list[CreditNote]] = field(default_factory=dict)


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
