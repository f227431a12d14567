"""What the accounting-system presets of the REST source (Fiken, Tripletex) ask of an invoice
alike, in their `review`."""

from __future__ import annotations

from collections.abc import Mapping

from kravia_sync import RecordError

__all__ = ["not_in_nok"]


def not_in_nok(key: str, fields: Mapping[str, object], *, amount: str) -> RecordError | None:
    """A `RecordError` (field `currency`) for an invoice in another currency than NOK, whose
    outstanding amount `amount` (the API's field) the API's description does not say the
    currency of; None for an invoice in NOK, or with no currency given."""
    currency = fields.get("currency")
    if not isinstance(currency, str) or currency.strip().upper() in {"", "NOK"}:
        return None
    return RecordError(
        key,
        "currency",
        f"the invoice is in {currency}: the API's description does not settle whether {amount} "
        "is then in NOK or in the invoice's currency, so it is not sent; register it by hand",
    )
