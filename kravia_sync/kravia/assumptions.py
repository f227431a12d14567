"""What Kravia's API looks like: every assumption kravia-sync makes about it, in one place.

Kravia publishes how-to guides, not a reference. Below, what the guides document comes first;
everything marked ASSUMED is what we must assume until Kravia confirms it. Each is a named
constant here (the webhook signatures also a small function), so changing one touches this
module: the client (`kravia_sync.kravia.client`) writes Kravia's requests and reads its answers
through these names only. docs/kravia-api-assumptions.md lists them. Nothing here does I/O or
imports the rest of kravia-sync, so the settings can read the default base URL without loading
the client.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

__all__ = [
    "ACTION_NAME_KEYS",
    "ACTION_PATH",
    "ACTION_START",
    "ALREADY_STARTED_STATUSES",
    "ALREADY_STARTED_WORDS",
    "AUTH_HEADER",
    "BOOKKEEP_CREATES",
    "BOOKKEEP_PATH",
    "BOOKKEEP_REFERENCE_PARAM",
    "CLAIM_TYPE",
    "CLOSED_STATUSES",
    "CONFIG_STATUSES",
    "CREDIT_NOTE_PATH",
    "CREDIT_NOTE_TIME_SUFFIX",
    "DATE_RESOLUTION",
    "DEFAULT_BASE_URL",
    "DETAILS_ACTIONS_KEY",
    "DETAILS_DOCUMENTS_KEY",
    "DETAILS_OUTSTANDING_KEY",
    "DETAILS_PATH",
    "DETAILS_PAYMENTS_KEY",
    "DETAILS_REMAINING_CAPITAL_KEY",
    "DETAILS_STATUS_KEY",
    "DOCUMENT_FIELD",
    "DOCUMENT_PATH",
    "DOCUMENT_TYPE_INVOICE",
    "DOCUMENT_TYPE_KEYS",
    "MAX_RETRY_AFTER_SECONDS",
    "NOT_APPLIED_STATUSES",
    "OPEN_STATUSES",
    "OVERLOAD_STATUSES",
    "PAYMENT_AMOUNT_KEY",
    "PAYMENT_APPLIED_KEY",
    "PAYMENT_DATE_KEY",
    "PAYMENT_ID_KEY",
    "PAYMENT_PATH",
    "PAYMENT_TYPES",
    "PAYMENT_TYPE_KEY",
    "REGISTER_ID_KEYS",
    "REGISTER_PATH",
    "SEARCH_ID_KEYS",
    "SEARCH_ITEMS_KEYS",
    "SEARCH_ORDER_BY_LAST_UPDATED",
    "SEARCH_PAGE_OVERLAP",
    "SEARCH_PAGE_SIZE",
    "SEARCH_PATH",
    "SEARCH_TOTAL_KEYS",
    "SETTLEMENTS_PATH",
    "SETTLEMENT_BOOKED_KEY",
    "SETTLEMENT_DATE_KEY",
    "SETTLEMENT_ITEMS_KEYS",
    "SETTLEMENT_LINES_KEY",
    "SETTLEMENT_REFERENCE_KEY",
    "STARTED_STATUSES",
    "WEBHOOK_ALGORITHM",
    "WEBHOOK_PATH",
    "WEBHOOK_SIGNATURE_RECIPES",
    "webhook_signatures",
]

# --- documented -------------------------------------------------------------------------------
DEFAULT_BASE_URL = "https://api.kravia.ai/api/v2/"
REGISTER_PATH = "invoice/register"
DOCUMENT_PATH = "invoice/{id}/document"
ACTION_PATH = "invoice/{id}/action"
SEARCH_PATH = "invoice/search"
DETAILS_PATH = "invoice/{id}/details"
PAYMENT_PATH = "invoice/payment"
CREDIT_NOTE_PATH = "invoice/creditnote"
SETTLEMENTS_PATH = "settlements"
BOOKKEEP_PATH = "settlements/{id}/bookkeep"
BOOKKEEP_REFERENCE_PARAM = "internalAccountingId"
CLAIM_TYPE = "CollectionCase"
DOCUMENT_TYPE_INVOICE = "Invoice"
ACTION_START = "Start"
SEARCH_ORDER_BY_LAST_UPDATED = 11

# --- ASSUMED ----------------------------------------------------------------------------------
# ASSUMED: the token goes raw into `Authorization`, no scheme (the guide shows no `Bearer`).
AUTH_HEADER = "Authorization"
# ASSUMED: the document is sent as multipart/form-data with one file part named `file`
# (the guide shows a multipart header but a JSON-looking body {"file": "BASE64"}).
DOCUMENT_FIELD = "file"
# ASSUMED: register answers 2xx with a JSON body carrying the new integer id; we accept a bare
# integer or an object with any of these keys (compared case-insensitively). Two of them
# present with different values make the answer unreadable: the case is then looked up.
REGISTER_ID_KEYS = ("id", "invoiceId")
# ASSUMED: search answers a JSON list, or an object whose items are under one of these keys.
SEARCH_ITEMS_KEYS = ("items", "Items", "data", "result", "results", "value")
# ASSUMED: `lastUpdatedTime` is UTC (the guide's example carries no zone). Search windows are
# measured on Kravia's clock (the `Date` header of its answers), never on ours.
SEARCH_PAGE_SIZE = 100
SEARCH_PAGE_OVERLAP = 10  # consecutive pages overlap by this many items (see search)
# ASSUMED: each search item carries the case's integer id (`id` or `invoiceId`); an item
# without one makes the whole answer unreadable (a case we cannot see could be the one we
# look for). `accountingInvoiceId` and `invoiceNo` may be missing: that case is then "unknown"
# to anything with its invoice number, never absent.
SEARCH_ID_KEYS = ("id", "invoiceId")
# ASSUMED: an object answer may say how many cases match in all (ends the paging early).
SEARCH_TOTAL_KEYS = ("totalCount", "count")
# An HTTP Date header is cut to the second: Kravia's clock is up to this much past it.
DATE_RESOLUTION = timedelta(seconds=1)
# ASSUMED: details report documents under `documents` (each with a `type`, or `documentType`)
# and what can still be done under `availableActions`: a list of names, a list of objects
# naming the action (`name`, `action` or `actionName`), or an object of booleans. `Start`
# disappears (or is false) once collection has started. A missing `documents` says nothing.
DETAILS_DOCUMENTS_KEY = "documents"
DOCUMENT_TYPE_KEYS = ("type", "documentType")
DETAILS_ACTIONS_KEY = "availableActions"
ACTION_NAME_KEYS = ("name", "action", "actionName")
# ASSUMED: statuses that mean collection was started at some point (so Start is done).
STARTED_STATUSES = frozenset({"collectionstarted", "paused", "closed"})
# ASSUMED: a Start sent to a case already started is refused with a 4xx saying the action is
# not available (or already done); only after a Start whose outcome was unknown is such an
# answer taken as "already started".
ALREADY_STARTED_STATUSES = frozenset({400, 409, 422})
ALREADY_STARTED_WORDS = ("not available", "already")
# ASSUMED: details and search items give the case's status under `status`, the remaining
# capital (what payments and credit notes can still reduce) under `remainingAmount`, and what
# the debtor still owes (capital plus any fees and interest) under `outstandingAmount`.
DETAILS_STATUS_KEY = "status"
DETAILS_REMAINING_CAPITAL_KEY = "remainingAmount"
DETAILS_OUTSTANDING_KEY = "outstandingAmount"
# ASSUMED: status names. Only these are read as open or closed; any other status leaves
# "closed" unknown (None) rather than guessed.
OPEN_STATUSES = frozenset({"registered", "collectionstarted", "paused"})
CLOSED_STATUSES = frozenset({"closed"})
# ASSUMED: details list the money recorded on the case under `payments`, each entry with
# `type`, `accountingPaymentId` (the id we sent; none on Kravia's own collections), `date`,
# `amount` (negative for a credit note) and `appliedAmount` (what reduced the capital).
DETAILS_PAYMENTS_KEY = "payments"
PAYMENT_ID_KEY = "accountingPaymentId"
PAYMENT_TYPE_KEY = "type"
PAYMENT_DATE_KEY = "date"
PAYMENT_AMOUNT_KEY = "amount"
PAYMENT_APPLIED_KEY = "appliedAmount"
# ASSUMED: the payment type names in details (compared case-insensitively).
PAYMENT_TYPES = {"payment": "payment", "creditnote": "credit_note", "collected": "collected"}
# ASSUMED: `GET settlements` answers a list, or an object with the list under one of these
# keys, all in one answer (no paging). Each settlement has an integer `id`, `settlementDate`,
# `amount`, `isBooked` and `invoices` (lines of `invoiceId` and a positive `amount`).
SETTLEMENT_ITEMS_KEYS = ("items", "Items", "data", "result", "results", "value")
SETTLEMENT_DATE_KEY = "settlementDate"
SETTLEMENT_BOOKED_KEY = "isBooked"
SETTLEMENT_LINES_KEY = "invoices"
# ASSUMED: a settlement booked with `PATCH settlements/{id}/bookkeep` reports the reference it
# was booked under as `internalAccountingId` (read when present, shown to the operator; a
# settlement without it is still readable).
SETTLEMENT_REFERENCE_KEY = "internalAccountingId"
# ASSUMED: the bookkeep call takes no body (the reference goes in the query, as documented);
# any 2xx means booked, and what its body holds is not read; a refusal (already booked under
# another reference, a settlement that is not there) is a 4xx. Booking a settlement twice
# under the same internal id does no harm, so the client treats a lost bookkeep answer as
# transient, not ambiguous. `kravia-sync payouts book` does not rely on that: after any
# answer other than a 2xx or a 4xx it reads the settlement back (`GET settlements`) before
# it sends anything again, and a rerun after a lost answer reads it first too.
BOOKKEEP_CREATES = False
# ASSUMED: the credit note's `Date` is sent as midnight without zone, as in the guide.
CREDIT_NOTE_TIME_SUFFIX = "T00:00:00"
# ASSUMED: 429 and 503 mean "not applied, try later". Any other 5xx on a call that creates
# something may have been applied before the failure, so it is treated as ambiguous.
NOT_APPLIED_STATUSES = frozenset({429, 503})
# ASSUMED: Kravia publishes no rate limit and no rate-limit headers: the pace is found from its
# 429s (with any Retry-After) and overload answers (`pacing.py`); only `requests_per_second`,
# when configured, is a fixed limit.
# Answers that mean Kravia (or what stands before it) is overloaded: fewer calls in flight.
OVERLOAD_STATUSES = frozenset({502, 503, 504})
# 404 or 405 on an endpoint that is not one case's (register, search, payment, …) means the
# base URL is wrong: a configuration problem that stops the pass and marks nothing.
CONFIG_STATUSES = frozenset({404, 405})
# How long a `Retry-After` hint may make us wait; longer hints are clamped to this.
MAX_RETRY_AFTER_SECONDS = 60.0

# --- webhooks ---------------------------------------------------------------------------------
# Documented: one webhook per creditor, set with `PUT creditor/{id}/webhook` and a body of
# `secret`, `enabled` and `url` (a public https:// endpoint), fired on every change to the
# creditor's invoices with `{"header": {"algorithm": "MD5"}, "data": {"timestamp", "eventType",
# "claimId"}, "signature"}`; `claimId` is the Kravia invoice id.
WEBHOOK_PATH = "creditor/{id}/webhook"
WEBHOOK_ALGORITHM = "MD5"
# ASSUMED: the signing recipe is unpublished. A signature is taken as valid when it equals
# (as hex, any case) the MD5 of one of these canonical forms, tried in this order; "data as
# sent" is the exact text of the `data` value in the body, "data compact" is `data`
# re-serialised as JSON without spaces. The simulator signs with the first. Whatever the
# signature says, a webhook is only a hint to read that case's details sooner, never state.
WEBHOOK_SIGNATURE_RECIPES: tuple[str, ...] = (
    "md5(secret + data compact)",
    "md5(data compact + secret)",
    "md5(secret + data as sent)",
    "md5(data as sent + secret)",
    "hmac-md5(secret, data compact)",
    "hmac-md5(secret, data as sent)",
)


def webhook_signatures(secret: str, data: object, data_text: str) -> list[tuple[str, str]]:
    """(recipe, lower-case hex MD5) for each of WEBHOOK_SIGNATURE_RECIPES, in order: what a
    webhook whose `data` is `data` (its text in the body: `data_text`) may be signed with."""
    compact = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    key = secret.encode("utf-8")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()

    def hmac_md5(text: str) -> str:
        return hmac.new(key, text.encode("utf-8"), "md5").hexdigest()

    digests = (
        md5(secret + compact),
        md5(compact + secret),
        md5(secret + data_text),
        md5(data_text + secret),
        hmac_md5(compact),
        hmac_md5(data_text),
    )
    return list(zip(WEBHOOK_SIGNATURE_RECIPES, digests, strict=True))
