"""A strict local Kravia simulator: a real HTTP server with the same contract as the real API.

Used by tests, benchmarks and the demo (`kravia-sync simulate`). It implements the calls
kravia-sync makes, as documented in Kravia's API guide plus the assumptions the client makes
(see `kravia_sync.kravia.client`), and it is deliberately strict: what it accepts, the client may
send; what it refuses, a real ASP.NET service would very likely refuse too.

API (all under `/api/v2/`, header `Authorization: <token>`):

- `POST invoice/register` - JSON body; 200 `{"id", "invoiceNo", "accountingInvoiceId",
  "status"}`; 400 ASP.NET validation problem. NOT idempotent: the same body twice makes two
  cases (so tests can detect duplicates).
- `POST invoice/{id}/document?type=Invoice` - multipart part `file` (or JSON `{"file": b64}`).
- `POST invoice/{id}/action?action=Start|Pause|Resume` - JSON `{"Message": "..."}`. Start
  needs a registered case, Pause a started one, Resume a paused one (Pause and Resume are
  ASSUMED names). An action the status does not allow is 400 "Action <name> is not
  available for this invoice." (for Start on a started case, a stand-in: Kravia does not
  publish what it answers).
- `GET invoice/search?byAscending=&lastUpdatedTime=&orderBy=11&skip=&top=` - `{"totalCount",
  "items": [{"id", "invoiceNo", "accountingInvoiceId", "status", "currencyCode",
  "originalAmount", "remainingAmount", "outstandingAmount", "lastUpdatedTime"}]}`.
- `GET invoice/{id}/details` - the summary plus `debtorName`, `documents`, `payments`
  (`[{"id", "type": "Payment"|"CreditNote"|"Collected", "accountingPaymentId", "date",
  "amount", "appliedAmount", "settlementId", "registeredTime"}]`, credit notes negative),
  `availableActions` and `timeline`.
- `POST invoice/payment` - `{"date", "description", "AccountingPaymentId", "amount",
  "invoices": [{"invoiceId", "amount"}]}`, amounts > 0 and the lines summing to `amount`.
- `POST invoice/creditnote` - `{"Date", "Amount", "AccountingPaymentId", "Description",
  "Invoices": [{"InvoiceId", "Amount"}]}`, amounts < 0.
  Both take each line off its case's capital, at most what remains (the excess is ignored);
  a case whose capital reaches 0 is `Closed`. Neither is de-duplicated by
  AccountingPaymentId: the same payment sent twice counts twice.
- `GET settlements?ExcludeClosed=true` - `{"totalCount", "items": [{"id", "settlementDate",
  "amount", "currencyCode", "isBooked", "internalAccountingId", "invoices": [{"invoiceId",
  "invoiceNo", "accountingInvoiceId", "amount"}]}]}`; ExcludeClosed leaves out booked ones.
- `PATCH settlements/{id}/bookkeep?internalAccountingId=...` - marks a settlement booked
  (again under the same id: no change; under another id: 400).
- `PUT creditor/{id}/webhook` - `{"secret", "enabled", "url"}`: the creditor's webhook (one;
  kept in memory only). While it is enabled, every change to a case (registered, a document,
  an action, money, a payout) sends a webhook to the URL, signed by the simulator's choice of
  recipe (see `kravia_sync.testing._sim_webhooks`).

Status names (ASSUMED): Registered -> CollectionStarted (<-> Paused) and Closed once nothing
remains of the capital. No fees or interest are simulated: outstanding = remaining capital.

Kravia publishes no reference, so the shapes above are the defaults among several plausible
ones (`Shape`, set by keyword arguments, the `shape` property or `/_sim/shape`):

- `details_shape`: "list" (above); "object" - `availableActions` is `{"Start": true, "Pause":
  false, "Resume": false}` (every action known) and there is no `documents` key; "named" -
  `availableActions` is `[{"name": "Start"}]` and each document has `documentType` for `type`.
- `search_shape`: "items" (above); "list" - a bare JSON list; "data" - `{"data": [...]}`;
  "value" - `{"value": [...], "count": n}`. With `search_without_aid` the search items carry
  no `accountingInvoiceId` key (the details still do).
- `clock_offset_seconds`: Kravia's clock is the host's plus this; every time handed out (and
  the search's `lastUpdatedTime` filter, which compares with them) is on Kravia's clock.
- `register_shape`: "id" (above); "bare" - the id alone; "invoice_id" - `invoiceId` for `id`;
  "no_id" - the object without any id (an answer the engine cannot read).
- `time_zone`: "utc" (above); "local" - `lastUpdatedTime` of search items and details as
  Oslo's wall-clock time without a zone; "offset" - the same with its offset (`+01:00`). The
  search's `lastUpdatedTime` filter is still read as UTC.

Every answer, API or control, has a `Date` header (RFC 7231) from Kravia's clock, set by the
app itself, so it is there in process too (`httpx.ASGITransport(app=simulator.app)`). In
process, every endpoint works, but two faults cannot be what they are over HTTP: a dropped
answer raises `kravia_sync.testing._dropped.ConnectionDroppedError` out of the transport (or, with
`raise_app_exceptions=False`, gives the status and half the body), and a `timeout` only
delays the answer (the transport enforces no client timeout).

Control endpoints (no auth) under `/_sim/`: `GET cases`, `GET cases/{id}/documents/{n}`
(n is the 0-based position in the case's document list), `GET calls`, `GET faults`,
`PUT faults`, `GET shape`, `PUT shape` (`{"details_shape", "search_shape",
"search_without_aid", "clock_offset_seconds", "register_shape", "time_zone"}`; keys left out
take their defaults, unknown keys or values answer 400 `{"error"}`), `POST reset` (forgets
cases, calls and faults; keeps the shape), and for money:

- `GET payments` - every payment, credit note and payout accepted, in order:
  `[{"seq", "type", "accountingPaymentId", "date", "description", "amount", "invoices":
  [{"invoiceId", "amount", "appliedAmount"}], "settlementId", "received"}]`.
- `POST payout` - `{"invoiceId", "amount"}` or `{"invoices": [{"invoiceId", "amount"}]}`,
  optional `"date"`: the debtor paid Kravia and Kravia paid the creditor out. Each amount
  comes off the case's capital as a `Collected` payment and one unbooked settlement covers
  them; answers the settlement. 400 `{"error"}` for an unknown or closed case or an amount
  not in (0, remaining capital].
- `GET settlements` - every settlement, booked or not.
- `GET webhook` - the webhook's URL and whether it is enabled (never its secret), and every
  delivery: `{"url", "enabled", "secretSet", "deliveries": [{"claimId", "timestamp",
  "signing", "status", "error"}]}`.
- `POST webhook` - `{"claimId", "signing": "good"|"bad"|"none", "duplicate", "outOfOrder"}`:
  send one now (also for a case that does not exist); answers each delivery's result.

`calls()` / `GET /_sim/calls` answers::

    {"total": 7,
     "register": {"200": 3, "0": 1}, "document": {...}, "action": {...},
     "search": {...}, "details": {...}, "payment": {...}, "creditnote": {...},
     "settlements": {...}, "bookkeep": {...},    # counts by HTTP status (0: dropped)
     "processed": {"register": 4, "document": 0, ...}}   # calls whose effect was applied
"""

from __future__ import annotations

from kravia_sync.testing._sim_constants import (
    ACTION_PAUSE,
    ACTION_RESUME,
    ACTION_START,
    CLAIM_TYPE,
    COLLECTED_TYPE,
    CREDIT_NOTE_TYPE,
    DATA_FILE_FORMAT,
    DEFAULT_TOP,
    DOCUMENT_TYPES,
    FIRST_CASE_ID,
    FIRST_DOCUMENT_ID,
    FIRST_PAYMENT_ID,
    FIRST_SETTLEMENT_ID,
    MAX_BODY_BYTES,
    MAX_TOP,
    MUTATING_OPERATIONS,
    OPERATIONS,
    ORDER_BY_LAST_UPDATED,
    PAYMENT_TYPE,
    STATUS_CLOSED,
    STATUS_PAUSED,
    STATUS_REGISTERED,
    STATUS_STARTED,
)
from kravia_sync.testing._sim_core import Simulator
from kravia_sync.testing._sim_faults import Faults
from kravia_sync.testing._sim_json import format_dotnet_time, parse_dotnet_time
from kravia_sync.testing._sim_serving import RunningSimulator, serve
from kravia_sync.testing._sim_shapes import (
    MAX_CLOCK_OFFSET_SECONDS,
    DetailsShape,
    RegisterShape,
    SearchShape,
    Shape,
    TimeZone,
)
from kravia_sync.testing._sim_validation import validate_money, validate_register

__all__ = [
    "ACTION_PAUSE",
    "ACTION_RESUME",
    "ACTION_START",
    "CLAIM_TYPE",
    "COLLECTED_TYPE",
    "CREDIT_NOTE_TYPE",
    "DATA_FILE_FORMAT",
    "DEFAULT_TOP",
    "DOCUMENT_TYPES",
    "FIRST_CASE_ID",
    "FIRST_DOCUMENT_ID",
    "FIRST_PAYMENT_ID",
    "FIRST_SETTLEMENT_ID",
    "MAX_BODY_BYTES",
    "MAX_CLOCK_OFFSET_SECONDS",
    "MAX_TOP",
    "MUTATING_OPERATIONS",
    "OPERATIONS",
    "ORDER_BY_LAST_UPDATED",
    "PAYMENT_TYPE",
    "STATUS_CLOSED",
    "STATUS_PAUSED",
    "STATUS_REGISTERED",
    "STATUS_STARTED",
    "DetailsShape",
    "Faults",
    "RegisterShape",
    "RunningSimulator",
    "SearchShape",
    "Shape",
    "Simulator",
    "TimeZone",
    "format_dotnet_time",
    "parse_dotnet_time",
    "serve",
    "validate_money",
    "validate_register",
]
