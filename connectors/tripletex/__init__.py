"""The Tripletex connector: unpaid invoices from Tripletex's API v2 (tripletex.no/v2).

A preset of the `rest` connector, from Tripletex's published OpenAPI description
(`openapi.json`) and its official examples (`Tripletex/tripletex-api2`):

* Auth: a session token from `PUT /token/session/:create` (consumer and employee tokens, an
  expiration date), then HTTP Basic with the company id (`0`) and the session token
  (`_session`). The session is renewed before it ends and after a 401.
* Invoices: `GET /invoice` — "charged outgoing invoices" — needs `invoiceDateFrom`
  (inclusive) and `invoiceDateTo` (exclusive): read in windows of `window_days` from
  `start_date` up to today, each paged with `from`/`count` in the list envelope
  `{fullResultSize, from, count, versionDigest, values}`. A window whose `versionDigest`
  changes between pages, or that fails, fails the read: nothing of it is taken as gone.
* Fields: the `fields` expression names the customer, its postal address and that address's
  country, and the currency, so one answer holds everything (unnamed objects come as
  `{id, url}`). Amounts are decimal kroner (`amountOutstanding`, "excluding reminders").
* Overdue is judged on our side: there is no filter on it. Invoices with nothing outstanding
  are left out; an invoice in another currency than NOK is quarantined.
  `customer.isPrivateIndividual` says private or business. Credit notes (`isCreditNote`) are
  never invoices: each becomes a credit-note record of the invoice it credits
  (`_credit_notes`).
* The PDF: `GET /invoice/{id}/pdf`, fetched only when the engine sends it.
* Limits: `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset` (seconds left of the period)
  are obeyed before Tripletex refuses; 429 waits for the reset.

What the description leaves open is listed in docs/sources/tripletex.md.
"""

from connectors.tripletex._connector import TripletexConnector
from connectors.tripletex._session import SessionTokenAuth
from connectors.tripletex._settings import (
    EXAMPLE_SETTINGS,
    INVOICE_FIELDS,
    TRIPLETEX_API,
    TripletexSettings,
    invoice_windows,
    rest_settings,
)

__all__ = [
    "EXAMPLE_SETTINGS",
    "INVOICE_FIELDS",
    "TRIPLETEX_API",
    "SessionTokenAuth",
    "TripletexConnector",
    "TripletexSettings",
    "invoice_windows",
    "rest_settings",
]
