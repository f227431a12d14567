"""The connector interface: how a source hands its overdue invoices to the engine.

A connector reads one source and yields, lazily, one item per record: a `SourceRecord` (a flat
mapping of the canonical field names, see `kravia_sync.model.RECORD_FIELDS`, plus an optional
lazily loaded document) or a `RecordError` for something it could not even parse (a broken
file, a CSV without a required column). It never talks to Kravia and never touches the state
store. A failure of the source as a whole (unreadable folder, lost connection) is raised as
`ConnectorError`: the engine then treats the read as failed, never as "no invoices".

Built-in and third-party connectors are found the same way, through the entry-point group
`kravia_sync.connectors`.

A connector whose source can compute digests where the data lives (a database) may also offer
a *stamped read* (`Connector.stamped_read`): first a `RecordStamp` per record (its ids and
digest, without the record), then full records only for the stamps the engine asks for, both
from one consistent snapshot. A pass with little to do then never builds most records.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from kravia_sync.documents import Document
from kravia_sync.errors import KraviaSyncError

ENTRY_POINT_GROUP = "kravia_sync.connectors"
DEFAULT_TIMEZONE = "Europe/Oslo"

__all__ = [
    "DEFAULT_TIMEZONE",
    "ENTRY_POINT_GROUP",
    "Connector",
    "ConnectorError",
    "ConnectorSettings",
    "PaymentRecord",
    "RecordError",
    "RecordStamp",
    "SourceRecord",
    "StampedRead",
    "available_connectors",
    "load_connector",
]


class ConnectorError(KraviaSyncError):
    """The source could not be read completely. Nothing from this read is taken as gone."""


class ConnectorSettings(BaseModel):
    """Base for a connector's typed settings (the `[sources.settings]` table). Unknown keys fail."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One invoice as the source has it, in the flat canonical record format.

    `key` names the record for people and must be stable across reads: a file and line, or
    the source's own id. `fields` uses the canonical record field names; values may be text
    (as read from a file) or typed (`date`, `Decimal`, `int`); blank text and None both mean
    "not given".

    `digest` is optional: a text that changes whenever anything the record carries changes
    (e.g. a hash of the raw row, with the column layout), for a connector that can compute one
    more cheaply than the engine can hash `fields`. The engine skips revalidating a record whose
    case is finished and whose digest is the one stored, so a digest that stays the same across
    a change would hide that change. Leave it None unless reads are too slow.
    """

    key: str
    fields: Mapping[str, object]
    document: Document | None = None
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """One payment or credit note as the source has it: the flat payment fields
    (`kravia_sync.payments.PAYMENT_FIELDS`) covering one invoice. A payment spread over several
    invoices is one record per invoice, all with the same `payment_id`."""

    key: str
    fields: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class RecordError:
    """Something in the source that could not be parsed into a record at all."""

    key: str
    field: str
    reason: str


class RecordStamp(NamedTuple):
    """One invoice record without its content: the first phase of a `StampedRead`.

    `key` is the key the full record will have. `fields` holds only the record's id fields
    (`accounting_invoice_id` and/or `invoice_number`), with the values the full record will
    carry. `digest` is the digest the full record will carry (see `SourceRecord.digest`), and
    `has_document` whether it will come with a document. (A named tuple: a read makes one per
    row of the source, so it is made as cheaply as Python allows.)
    """

    key: str
    fields: Mapping[str, object]
    digest: str
    has_document: bool


class StampedRead(ABC):
    """A read in two phases over one consistent snapshot of the source (a context manager).

    `stamps()` yields a `RecordStamp` per invoice record, in read order, and the source's
    `PaymentRecord`s and `RecordError`s as a plain read would. Then `records(stamps)` yields
    the full `SourceRecord` of every record with the digest of one of the given stamps (the
    engine asks only for what it must look at), in any order. Both raise `ConnectorError` when
    the source fails.
    """

    @abstractmethod
    def stamps(self) -> Iterator[RecordStamp | PaymentRecord | RecordError]:
        """Every invoice record's stamp, and the payments and errors of a plain read."""

    @abstractmethod
    def records(self, stamps: Sequence[RecordStamp]) -> Iterator[SourceRecord]:
        """The full records whose digests are among those of `stamps`."""

    def close(self) -> None:  # noqa: B027 - nothing to release unless a subclass holds something
        """Release what the read holds (a connection, a snapshot)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Connector(ABC):
    """Base class of every connector.

    Subclasses set `settings_model` to their `ConnectorSettings` subclass and implement
    `read()`. `base_dir` is the directory of the configuration file, for resolving relative
    paths in settings.
    """

    settings_model: ClassVar[type[ConnectorSettings]] = ConnectorSettings
    # How this kind of source tells of money paid, unless a source sets `payments`:
    # `amount_drops` (outstanding amounts drop) or `records` (it yields `PaymentRecord`s).
    payments_default: ClassVar[Literal["amount_drops", "records"]] = "amount_drops"
    # A commented `[[sources]]` block for `kravia-sync init --source NAME`.
    example_config: ClassVar[str] = ""

    # Whose calendar `today()` is on: the engine sets `policy.timezone` on every connector it
    # builds; a connector made by hand keeps Kravia's own (Europe/Oslo).
    timezone: tzinfo = ZoneInfo(DEFAULT_TIMEZONE)

    def __init__(self, settings: ConnectorSettings, *, base_dir: Path) -> None:
        self.settings = settings
        self.base_dir = base_dir

    def today(self) -> date:
        """Today's date on the creditor's calendar (`timezone`): what a source asks for as
        "today" (an SQL `:today`, a REST `{today}`)."""
        return datetime.now(self.timezone).date()

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any], *, base_dir: Path) -> Connector:
        """Validate `raw` with `settings_model`; pydantic's errors name the key."""
        return cls(cls.settings_model.model_validate(dict(raw)), base_dir=base_dir)

    @abstractmethod
    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        """Yield every overdue invoice of the source, one at a time, and the payments and
        credit notes the source knows for them."""

    def stamped_read(self) -> StampedRead | None:
        """A two-phase read of this source (see `StampedRead`), or None when it has none (the
        default): the engine then uses `read()`. Its records and stamps must carry the same
        digests as those of `read()`."""
        return None

    def payments_source(self) -> Literal["amount_drops", "records"]:
        """How this source tells of money paid when its `payments` setting is unset: the
        class's `payments_default`, or what this instance's settings say."""
        return self.payments_default

    def secret_values(self) -> list[str]:
        """Secret values this connector holds (passwords, tokens): the engine redacts each of
        them from every log line, error and output. Override when the settings hold any."""
        return []

    def check(self) -> list[str] | None:
        """Whether the source answers with its credentials, by one cheap call (a login, one
        small request): the problems found, each a sentence for a person (an empty list:
        none), or None when the connector has no such check (the default).

        `kravia-sync check` calls it for every source once the configuration, the state store
        and Kravia's token are fine. It must not raise for a source that refuses or cannot be
        reached (that is a problem to return), must not change the source, and its messages
        must carry no secret (they are redacted all the same)."""
        return None

    def check_warnings(self) -> list[str]:
        """What works but a person should know, each a sentence (an SQL source's database user
        that could write, say); empty by default. `kravia-sync check` prints them as warnings
        after `check` found no problem; they do not change its exit code. The same rules as
        for `check`: no raising, no change to the source, no secret."""
        return []


# The connectors kravia-sync ships, as its own entry points name them (a test holds the two
# together). Their names are kravia-sync's: they load without a look at every installed
# package's metadata, which takes longer than a pass over an empty folder.
BUILT_IN_CONNECTORS = {
    "fiken": "connectors.fiken:FikenConnector",
    "folder": "connectors.folder:FolderConnector",
    "rest": "connectors.rest:RestConnector",
    "sql": "connectors.sql:SqlConnector",
    "tripletex": "connectors.tripletex:TripletexConnector",
}


def available_connectors() -> dict[str, str]:
    """Installed connectors: name → the entry point's value (module:Class)."""
    from importlib.metadata import entry_points  # noqa: PLC0415 - see BUILT_IN_CONNECTORS

    installed = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return installed | BUILT_IN_CONNECTORS


def load_connector(name: str) -> type[Connector]:
    """The connector class registered under `name`: a built-in one, or one another package
    registers in the entry-point group."""
    value = BUILT_IN_CONNECTORS.get(name) or available_connectors().get(name)
    if value is None:
        known = ", ".join(sorted(available_connectors()))
        raise LookupError(f"no connector named {name!r} is installed (installed: {known})")
    module_name, _, attribute = value.partition(":")
    loaded = getattr(importlib.import_module(module_name), attribute)
    if not (isinstance(loaded, type) and issubclass(loaded, Connector)):
        raise TypeError(f"entry point {name!r} ({value}) is not a Connector")
    return loaded
