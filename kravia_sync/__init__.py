"""kravia-sync: forward overdue invoices into Kravia debt collection, exactly once.

The public API, for writing a connector (see docs/writing-a-connector.md), is what this module
exports and lists in `__all__`; everything else is private to kravia-sync and may change. The
conformance kit for connector authors is `kravia_sync.testing`.

The names load when first used (`from kravia_sync import Connector` works as ever), so that
importing one part of the package, such as its command line, does not import the others.
"""

import typing

if typing.TYPE_CHECKING:
    from kravia_sync.connector import (
        Connector,
        ConnectorError,
        ConnectorSettings,
        PaymentRecord,
        RecordError,
        RecordStamp,
        SourceRecord,
        StampedRead,
    )
    from kravia_sync.documents import CallableDocument, Document, FileDocument
    from kravia_sync.errors import InvalidRecordError, KraviaSyncError
    from kravia_sync.logging import get_logger, register_secrets
    from kravia_sync.model import RECORD_FIELDS, REQUIRED_FIELDS, Invoice, parse_amount
    from kravia_sync.payments import (
        PAYMENT_FIELDS,
        REQUIRED_PAYMENT_FIELDS,
        Payment,
        is_payment_record,
    )

__version__ = "0.1.0"

__all__ = [
    "PAYMENT_FIELDS",
    "RECORD_FIELDS",
    "REQUIRED_FIELDS",
    "REQUIRED_PAYMENT_FIELDS",
    "CallableDocument",
    "Connector",
    "ConnectorError",
    "ConnectorSettings",
    "Document",
    "FileDocument",
    "InvalidRecordError",
    "Invoice",
    "KraviaSyncError",
    "Payment",
    "PaymentRecord",
    "RecordError",
    "RecordStamp",
    "SourceRecord",
    "StampedRead",
    "__version__",
    "get_logger",
    "is_payment_record",
    "parse_amount",
    "register_secrets",
]

# The module that defines each public name (the imports above, for when it is first used).
_DEFINED_IN = {
    "kravia_sync.connector": (
        "Connector",
        "ConnectorError",
        "ConnectorSettings",
        "PaymentRecord",
        "RecordError",
        "RecordStamp",
        "SourceRecord",
        "StampedRead",
    ),
    "kravia_sync.documents": ("CallableDocument", "Document", "FileDocument"),
    "kravia_sync.errors": ("InvalidRecordError", "KraviaSyncError"),
    "kravia_sync.logging": ("get_logger", "register_secrets"),
    "kravia_sync.model": ("RECORD_FIELDS", "REQUIRED_FIELDS", "Invoice", "parse_amount"),
    "kravia_sync.payments": (
        "PAYMENT_FIELDS",
        "REQUIRED_PAYMENT_FIELDS",
        "Payment",
        "is_payment_record",
    ),
}


# Only when running: to a type checker the names are the imports above, so a misspelt one is an
# error there rather than any name at all.
if not typing.TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        import importlib  # noqa: PLC0415 - only when a public name is first used

        for module, names in _DEFINED_IN.items():
            if name in names:
                value = getattr(importlib.import_module(module), name)
                globals()[name] = value  # looked up once
                return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
