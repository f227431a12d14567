"""The error that ends a whole pass, raised by any of its stages."""

from kravia_sync.errors import KraviaSyncError

__all__ = ["PassFailedError"]


class PassFailedError(KraviaSyncError):
    """The whole pass must stop (a bad token, a state store that cannot be written)."""
