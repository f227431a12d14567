"""The root of kravia-sync's errors.

Every error kravia-sync raises on purpose derives from `KraviaSyncError`, so a program using it
as a library can tell them from its own bugs with one `except`. Each module keeps its own
errors beside the code that raises them (`ConfigError` in `settings`, `ConnectorError` in
`connector`, `KraviaError` and `KraviaAuthError` in `kravia`, `StateError` and the lease's in
`store`, ...); this module only roots them.
"""

__all__ = ["KraviaSyncError"]


class KraviaSyncError(Exception):
    """An error kravia-sync raises on purpose: bad configuration or input, a source, Kravia or
    the state store that cannot be used. Its message says what happened and what to do."""
