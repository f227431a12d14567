"""How long each text field of a record may be, and which characters it may hold.

Kravia's guide names no length for any field, so every bound here is ours: generous enough for
any real invoice, far below what would be a mistake in the source (a whole document pasted
into a name, a column mapped to the wrong thing). Where a standard bounds a field, the bound
says how it compares. A value is measured as it would be sent: trimmed, in characters (Unicode
code points). A value over its bound is quarantined with its record and the field named; it is
never cut, and never sent.

Control characters (C0, DEL and C1: a NUL byte, an escape, a bell) and lone UTF-16 surrogates
are refused in every text field alike: Kravia would print them in letters to the debtor, and a
lone surrogate cannot be sent as UTF-8 at all. Only a description may hold tabs and line
breaks, as multi-line invoice texts do.

Fields whose own check is stricter (a currency or country code, an organisation number) carry
a loose bound too: it only keeps an absurd value from being quoted whole in the reason their
check gives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from kravia_sync.errors import InvalidRecordError

__all__ = [
    "INVOICE_FIELD_LIMITS",
    "MULTI_LINE_FIELDS",
    "PAYMENT_FIELD_LIMITS",
    "check_text_fields",
    "text_problem",
]

# The longest value accepted in each text field of an invoice record, in characters.
INVOICE_FIELD_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        # Invoice numbers are short (bank references, ISO 20022: 35); room for any numbering.
        "invoice_number": 100,
        # The source's id with its id_prefix: an invoice number at its bound with a prefix,
        # or a UUID or composite key.
        "accounting_invoice_id": 150,
        "currency": 32,  # an ISO 4217 code (3): a loose bound, see above
        # Free text, several lines allowed; longer is a document pasted in, not a description.
        "description": 1000,
        # A legal name with a department or c/o line (ISO 20022 payments allow 140).
        "debtor_name": 200,
        "debtor_number": 64,  # a customer number; room for a UUID or a composite key
        # The longest address SMTP can carry (RFC 5321: a path of 256 with its < and >).
        "debtor_email": 254,
        "debtor_type": 32,  # private or business: a loose bound
        "organization_number": 32,  # 9 digits with separators: a loose bound
        "ssn": 32,  # 11 digits with separators: a loose bound
        # A street address line (ISO 20022 payments allow 70).
        "address_line1": 100,
        "address_line2": 100,
        # ISO 20022's bound; the longest postal codes in use are about 10 (12345-6789).
        "postal_code": 16,
        # Place names run to 85 characters; ISO 20022 allows 35 for a town.
        "city": 100,
        "country": 32,  # an ISO 3166 alpha-2 code (2): a loose bound
    }
)

# The text fields of a payment record that are sent to Kravia (AccountingPaymentId and the
# description), bounded like their invoice counterparts.
PAYMENT_FIELD_LIMITS: Mapping[str, int] = MappingProxyType(
    {"payment_id": INVOICE_FIELD_LIMITS["accounting_invoice_id"], "description": 1000}
)

# The fields where a tab and a line break are text, not a control character.
MULTI_LINE_FIELDS = frozenset({"description"})

# C0 controls, DEL, C1 controls and lone surrogates; the second leaves tab, LF and CR out.
_REFUSED = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_REFUSED_IN_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(field: str, value: object, limit: int) -> str | None:
    """Why `value` cannot be sent as `field` (at most `limit` characters), or None.

    The value is measured trimmed, as it would be sent; a value that is not text (an SQL
    integer) is measured as its text. The reason never quotes the value."""
    text = (value if isinstance(value, str) else str(value)).strip()
    if len(text) > limit:
        return (
            f"{field} is {len(text):,} characters long; at most {limit:,} are accepted "
            "(correct it in the source)"
        )
    refused = _REFUSED_IN_LINES if field in MULTI_LINE_FIELDS else _REFUSED
    found = refused.search(text)
    if found is not None:
        return (
            f"{field} holds {_describe(found.group())} at character {found.start() + 1:,}; "
            "remove it in the source"
        )
    return None


def _describe(char: str) -> str:
    code = f"U+{ord(char):04X}"
    if "\ud800" <= char <= "\udfff":
        return f"{code} (half of a UTF-16 pair, without the other half)"
    return f"the control character {code}"


def check_text_fields(values: Mapping[str, object], limits: Mapping[str, int]) -> None:
    """Raise `InvalidRecordError` for the first field of `limits` (in their order) whose value
    is too long or holds a refused character; absent and None values pass."""
    for field, limit in limits.items():
        value = values.get(field)
        if value is None:
            continue
        problem = text_problem(field, value, limit)
        if problem is not None:
            raise InvalidRecordError(field, problem)
