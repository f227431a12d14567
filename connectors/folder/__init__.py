"""The folder connector: invoices dropped as JSON, CSV or EHF (UBL XML) files into a directory
(`_connector`, which says how each kind of file is read). Beside it: the guarded reading of
every file (`_files`), the JSON and CSV formats (`_formats`) and the invoice copies
(`_documents`)."""

from connectors.folder._connector import FolderConnector, FolderSettings
from connectors.folder._documents import EmbeddedPdfDocument

__all__ = ["EmbeddedPdfDocument", "FolderConnector", "FolderSettings"]
