"""How the state store writes a time: UTC ISO 8601 text with microseconds, so that text order
is time order; and the store's now, in UTC. The schema's column type and the store's SQL both
use this one definition; it lives apart from both because the store must not load the schema
(SQLAlchemy) on a pass, and the schema must not import the store."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utc_now", "utc_text"]


def utc_text(value: datetime) -> str:
    """A time as the state stores it: UTC ISO 8601 text with microseconds (sortable)."""
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored: time is timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def utc_now() -> datetime:
    """Now, as a timezone-aware UTC time."""
    return datetime.now(UTC)
