"""The root of kravia-sync's errors, and the one raised by more than one module.

Every error kravia-sync raises on purpose derives from `KraviaSyncError`, so a program using it
as a library can tell them from its own bugs with one `except`. Each module keeps its own
errors beside the code that raises them (`ConfigError` in `settings`, `ConnectorError` in
`connector`, `KraviaError` and `KraviaAuthError` in `kravia.errors`, `StateError` and the
lease's in `state.errors`, ...); this module roots them and holds `InvalidRecordError`, which
the model and the invoice's copy (`documents`) both raise.
"""

__all__ = ["InvalidRecordError", "KraviaSyncError"]


class KraviaSyncError(Exception):
    """An error kravia-sync raises on purpose: bad configuration or input, a source, Kravia or
    the state store that cannot be used. Its message says what happened and what to do."""


class InvalidRecordError(KraviaSyncError, ValueError):
    """A source record that cannot become a canonical invoice: names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
