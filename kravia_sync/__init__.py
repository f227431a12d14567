"""kravia-sync: forward overdue invoices into Kravia debt collection, exactly once."""

__version__ = "0.1.0"
