"""A kravia-sync connector for excel."""

from kravia_sync_excel.connector import ExcelConnector, ExcelSettings

__all__ = ["ExcelConnector", "ExcelSettings"]
