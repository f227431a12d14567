"""kravia-sync: forward overdue invoices into Kravia debt collection, exactly once.

The public API, for writing a connector (see docs/writing-a-connector.md), is what this module
exports and lists in `__all__`; everything else is private to kravia-sync and may change. The
conformance kit for connector authors is `kravia_sync.testing`.
"""

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
