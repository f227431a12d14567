"""Test doubles and the conformance kit; nothing in the runtime imports this package.

`kravia_sync.testing` itself is the conformance kit for connector authors (`kit`, re-exported
here, part of the public API). Beside it: the Kravia simulator (`simulator`), the Fiken
and Tripletex simulators (`fiken`, `tripletex`) and what they share. Their server
dependencies come with the `[simulator]` extra.
"""

from kravia_sync.testing.kit import (
    ConformanceError,
    ConformanceKit,
    ConnectorConformance,
    minimal_pdf,
    sample_invoices,
)

__all__ = [
    "ConformanceError",
    "ConformanceKit",
    "ConnectorConformance",
    "minimal_pdf",
    "sample_invoices",
]
