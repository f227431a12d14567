"""The Tripletex connector: the `rest` connector with Tripletex's sessions, invoice-date windows
and the rules of what is an invoice to collect."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from connectors.rest import Clock, RestConnector, RestSettings
from connectors.rest._auth import Authenticator, read_secret
from connectors.rest._review import not_in_nok
from connectors.tripletex._credit_notes import credit_note_record
from connectors.tripletex._session import SessionTokenAuth
from connectors.tripletex._settings import (
    EXAMPLE_SETTINGS,
    TripletexSettings,
    invoice_windows,
    rest_settings,
)
from kravia_sync import (
    ConnectorError,
    ConnectorSettings,
    PaymentRecord,
    RecordError,
    SourceRecord,
)

__all__ = ["TripletexConnector"]

# Where a notice about an overdue invoice should go, best first (the customer's fields).
_EMAILS = ("overdueNoticeEmail", "invoiceEmail", "email")


class TripletexConnector(RestConnector):
    """Reads a Tripletex company's unpaid invoices with their customers, and their PDFs."""

    settings_model: ClassVar[type[ConnectorSettings]] = TripletexSettings
    example_config: ClassVar[str] = EXAMPLE_SETTINGS

    def __init__(self, settings: ConnectorSettings, *, base_dir: Path) -> None:
        if not isinstance(settings, TripletexSettings):
            kind = type(settings).__name__
            raise TypeError(f"TripletexConnector needs TripletexSettings, not {kind}")
        self.tripletex = settings
        super().__init__(rest_settings(settings), base_dir=base_dir)
        self._credit_notes: list[PaymentRecord | RecordError] = []  # of the read under way

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        """The invoices as they come, then the credit notes met among them, each as the
        payment record of the invoice it credits (`credit_note_record`)."""
        self._credit_notes = []
        try:
            yield from super().read()
            notes = list(self._credit_notes)
        finally:
            self._credit_notes = []
        yield from notes

    def __repr__(self) -> str:
        return f"TripletexConnector(company_id={self.tripletex.company_id})"

    def make_authenticator(self, settings: RestSettings, base_dir: Path) -> Authenticator:  # noqa: ARG002 - the session auth is made from the Tripletex settings
        s = self.tripletex
        consumer = read_secret(
            s.consumer_token_env, s.consumer_token_file, base_dir, "Tripletex consumer token"
        )
        employee = read_secret(
            s.employee_token_env, s.employee_token_file, base_dir, "Tripletex employee token"
        )
        return SessionTokenAuth(
            consumer_token=consumer,
            employee_token=employee,
            company_id=s.company_id,
            timezone=self._zone,
            session_days=s.session_days,
        )

    def _zone(self) -> tzinfo:
        return self.timezone  # set by the engine after construction: looked up when used

    @property
    def session(self) -> SessionTokenAuth:
        """The session authenticator (for tests and `check`)."""
        auth = self.http.authenticator
        assert isinstance(auth, SessionTokenAuth)  # noqa: S101 - make_authenticator made it
        return auth

    def listings(self, clock: Clock) -> Iterator[tuple[str, dict[str, str]]]:
        """One listing per invoice-date window, from `start_date` to today (GET /invoice needs
        `invoiceDateFrom`, inclusive, and `invoiceDateTo`, exclusive). A window that fails
        fails the whole read."""
        end = clock.today + timedelta(days=1)
        start = self.tripletex.start_date
        if start >= end:
            raise ConnectorError(
                f"start_date {start} is in the future: there is nothing to read yet "
                "(nothing of this read is taken as gone)"
            )
        for lower, upper in invoice_windows(start, end, self.tripletex.window_days):
            last = upper - timedelta(days=1)
            label = f" dated {lower} to {last}"
            yield label, {"invoiceDateFrom": lower.isoformat(), "invoiceDateTo": upper.isoformat()}

    def review(
        self, key: str, invoice: Mapping[str, Any], fields: dict[str, object]
    ) -> RecordError | bool:
        """Leave out credit notes (never an invoice to collect: what they credit shows in the
        credited invoice's amountOutstanding) and what has nothing outstanding; quarantine an
        invoice in another currency (which currency amountOutstanding is then in is not
        settled); take the customer's best e-mail address for notices."""
        if invoice.get("isCreditNote") is True:
            if self.tripletex.credit_notes:
                note = credit_note_record(invoice, since=self.tripletex.credit_notes_since)
                if note is not None:
                    self._credit_notes.append(note)
            return False
        amount = fields.get("amount")
        if isinstance(amount, Decimal) and amount <= 0:
            return False  # settled (or overpaid): nothing to collect
        foreign = not_in_nok(key, fields, amount="amountOutstanding")
        if foreign is not None:
            return foreign
        customer = invoice.get("customer")
        if isinstance(customer, Mapping):
            for name in _EMAILS:
                email = customer.get(name)
                if isinstance(email, str) and email.strip():
                    fields["debtor_email"] = email.strip()
                    break
        return True

    def check(self) -> list[str] | None:
        """Create a session and list today's invoices (at most one): the tokens work and the
        employee may read invoices. The problem, when not."""
        today = Clock.current(self.timezone).today
        params = {
            "invoiceDateFrom": today.isoformat(),
            "invoiceDateTo": (today + timedelta(days=1)).isoformat(),
            "count": "1",
            "fields": "id",
        }
        try:
            self.session.refresh()
            with self.http.session() as session:
                session.get_json("invoice", what="a check of the invoice list", params=params)
        except ConnectorError as exc:
            return [self.http.redact(str(exc))]
        return []
