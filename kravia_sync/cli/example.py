"""The commented example configuration that `kravia-sync init` writes."""

EXAMPLE_CONFIG = """\
# kravia-sync configuration. Validate it with `kravia-sync check`.
#
# The Kravia token is a secret and does not belong here: set the environment variable
# KRAVIA_TOKEN, or put it in a file named `kravia_token` in the secrets directory
# (--secrets-dir; under systemd, $CREDENTIALS_DIRECTORY is used).
# Any key below can be overridden from the environment: KRAVIA_SYNC_<SECTION>__<KEY>,
# for example KRAVIA_SYNC_POLICY__MIN_DAYS_OVERDUE=21.
# Relative paths are relative to this file's directory.

[kravia]
# base_url = "https://api.kravia.ai/api/v2/"   # the default: Kravia's production API
creditor_id = 10759              # your creditor id at Kravia
# timeout_seconds = 30
# max_in_flight = 16             # the most calls at once; the pace Kravia takes well is
                                 # found from its answers, up to this
# requests_per_second = 20       # a hard ceiling, if your contract names one (unset: the
                                 # rate Kravia allows is found from its 429 answers)
# start_message = "Collection started by kravia-sync"

[policy]
min_days_overdue = 14            # Kravia takes invoices from 14 days after the due date
min_amount = "0"                 # smaller outstanding amounts are not sent (NOK, incl. VAT)
start = "auto"                   # "auto": start collection at once; "manual": register and wait
# timezone = "Europe/Oslo"       # whose calendar counts the days overdue
# canary = "on"                  # first contact: one case end to end, read back, then the rest

[state]
path = "state/kravia-sync.db"    # SQLite; WAL mode, synchronous=FULL
# lease_seconds = 120

# [retry]
# backoff_base_seconds = 2       # per-case exponential backoff with jitter
# backoff_cap_seconds = 3600
# retries_per_pass = 4           # transient failures retried within one pass
# max_inline_wait_seconds = 30   # longer waits are left to the next pass
# settle_seconds = 120           # after a lost answer, wait this long before looking it up
# max_lookups = 12               # failed look-ups before a case is parked for review

[log]
format = "auto"                  # "auto": readable on a terminal, JSON otherwise
level = "info"

"""
