"""The example `rest` source that `kravia-sync init --source rest` writes: Fiken's API v2 by
hand, the worked example for any other accounting system (the tests run it as it is)."""

from typing import Final

__all__ = ["EXAMPLE_SETTINGS"]

EXAMPLE_SETTINGS: Final = """\
[[sources]]
name = "accounting"              # a short, stable name; it keys the state of this source
connector = "rest"
id_prefix = ""                   # prepended to each accountingInvoiceId
[sources.settings]
# Any JSON API. This example reads Fiken (api.fiken.no, API v2) by hand; for Fiken itself
# the `fiken` connector does the same with less to write. Paths are relative to base_url,
# and credentials are only ever sent to its host.
base_url = "https://api.fiken.no/api/v2/"
timeout_seconds = 30

# Credentials come from the environment or a file, never from this file:
#   type = "bearer"  token_env / token_file
#   type = "basic"   username, password_env / password_file
#   type = "api_key" header = "X-API-Key", prefix = "", key_env / key_file
#   type = "oauth2_client_credentials"  token_url, client_id, client_secret_env / _file,
#                                      scope, client_auth = "basic" | "body"
[sources.settings.auth]
type = "bearer"
token_env = "FIKEN_TOKEN"

# Fiken allows one request at a time and slows down beyond 4 requests per second.
[sources.settings.rate_limit]
requests_per_second = 4
max_in_flight = 1

# 429 waits for Retry-After; 5xx and dropped connections are retried with backoff.
[sources.settings.retry]
attempts = 5
backoff_seconds = 0.5

[sources.settings.invoices]
path = "companies/fiken-demo-as/invoices"
records_path = ""                # the answer is the list itself
# Query parameters. Text may hold expressions: {today}, {today - 14d}, {now - 2h},
# {today:%d.%m.%Y}. An invoice due 14 days ago was issued at least 14 days ago, so this
# asks only for invoices that can be old enough to collect.
params = { settled = false, issueDateLe = "{today - 14d}" }

# Paging: type = "page_number" | "offset" | "cursor" | "link_header" | "none".
# Fiken counts pages from 0 and announces the page and record counts in headers.
[sources.settings.invoices.paging]
type = "page_number"
page_param = "page"
first_page = 0
size_param = "pageSize"
page_size = 100
total_pages_header = "Fiken-Api-Page-Count"
total_records_header = "Fiken-Api-Result-Count"

# Record field = a dotted path into each invoice, or a table with a transform:
# text, date (format = "%d.%m.%Y"), minor_units (øre → kroner, exact), decimal, boolean
# (if_true / if_false), country (names and ISO codes → ISO alpha-2).
[sources.settings.fields]
accounting_invoice_id = { path = "invoiceId", transform = "text" }
invoice_number = { path = "invoiceNumber", transform = "text" }
invoice_date = { path = "issueDate", transform = "date" }
due_date = { path = "dueDate", transform = "date" }
amount = { path = "sale.outstandingBalance", transform = "minor_units" }
currency = "currency"
description = "invoiceText"

# The customer lives in another endpoint: fetched once per customer and read (cached).
[sources.settings.customer]
path = "companies/fiken-demo-as/contacts/{invoice.customer.contactId}"
[sources.settings.customer.fields]
debtor_name = "name"
debtor_number = { path = "customerNumber", transform = "text" }
organization_number = "organizationNumber"
debtor_email = "email"
address_line1 = "address.streetAddress"
address_line2 = "address.streetAddressLine2"
postal_code = "address.postCode"
city = "address.city"
country = { path = "address.country", transform = "country" }

# The invoice PDF, fetched only when it is sent to Kravia: a URL in the invoice
# (url_path), or an endpoint template such as path = "invoices/{invoice.invoiceId}/pdf".
[sources.settings.document]
url_path = "invoicePdf.downloadUrl"
"""
