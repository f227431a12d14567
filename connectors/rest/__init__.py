"""The declarative REST connector: invoices from a JSON API, described in the settings.

One `[sources.settings]` table says where the API is (`base_url`), how to authenticate
(`auth`), how fast it may be asked (`rate_limit`, `retry`), where the invoices are and how
they are paged (`invoices`), which field of an invoice is which record field (`fields`), where
the customer's details live when they are not in the invoice (`customer`), and where the PDF
is (`document`). See docs/sources/rest.md and `kravia-sync init --source rest`.

Modules: `_paths` (dotted paths), `_template` (the expression language), `_mapping` (fields
and transforms), `_paging` (paging strategies), `_auth` (credentials), `_http` (rate limit,
retries, errors), `_settings`, `_connector`.
"""

from connectors.rest._auth import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    NoAuth,
    OAuth2ClientCredentials,
)
from connectors.rest._connector import ReadStats, RestConnector, RestDocumentError
from connectors.rest._example import EXAMPLE_SETTINGS
from connectors.rest._http import RateLimitSettings, RetrySettings
from connectors.rest._mapping import FieldMapping
from connectors.rest._paging import (
    CursorPaging,
    LinkHeaderPaging,
    NoPaging,
    OffsetPaging,
    PageNumberPaging,
)
from connectors.rest._settings import (
    CustomerSettings,
    DocumentSettings,
    InvoicesSettings,
    RestSettings,
)
from connectors.rest._template import Clock, Template

__all__ = [
    "EXAMPLE_SETTINGS",
    "ApiKeyAuth",
    "BasicAuth",
    "BearerAuth",
    "Clock",
    "CursorPaging",
    "CustomerSettings",
    "DocumentSettings",
    "FieldMapping",
    "InvoicesSettings",
    "LinkHeaderPaging",
    "NoAuth",
    "NoPaging",
    "OAuth2ClientCredentials",
    "OffsetPaging",
    "PageNumberPaging",
    "RateLimitSettings",
    "ReadStats",
    "RestConnector",
    "RestDocumentError",
    "RestSettings",
    "RetrySettings",
    "Template",
]
