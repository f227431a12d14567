"""The public API is exactly what `__all__` lists, so it cannot drift by accident."""

from __future__ import annotations

import importlib
import inspect
import types
from importlib.metadata import version

import pytest

import kravia_sync
import kravia_sync.testing
import kravia_sync.testing.kit

PUBLIC_API = [
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
TESTING_API = [
    "ConformanceError",
    "ConformanceKit",
    "ConnectorConformance",
    "minimal_pdf",
    "sample_invoices",
]


def package_surface(package: types.ModuleType = kravia_sync) -> list[str]:
    """Names a user can import from `package`: not private, not a submodule (kravia_sync.cli and
    the others become attributes of the package once imported). `dir`, since kravia_sync's
    names load when first used."""
    return sorted(
        name
        for name in dir(package)
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(getattr(package, name), types.ModuleType)
    )


def defined_in(module: types.ModuleType) -> list[str]:
    """Public names of the classes and functions `module` defines itself."""
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    )


class TestPublicApi:
    def test_the_package_exports_exactly_all(self) -> None:
        """Every public name of kravia_sync is in __all__, and __all__ is the documented list."""
        assert sorted(kravia_sync.__all__) == sorted(PUBLIC_API)
        assert package_surface() == sorted(kravia_sync.__all__)

    def test_the_kit_exports_exactly_all(self) -> None:
        """kravia_sync.testing's public names are its __all__, all of them the kit's own."""
        assert sorted(kravia_sync.testing.__all__) == TESTING_API
        assert package_surface(kravia_sync.testing) == TESTING_API
        assert defined_in(kravia_sync.testing.kit) == TESTING_API

    @pytest.mark.parametrize("name", PUBLIC_API)
    def test_every_export_is_documented(self, name: str) -> None:
        """Each exported class and function has a docstring of its own."""
        value = getattr(kravia_sync, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"

    def test_exports_are_the_engines_own_objects(self) -> None:
        """Re-exported, not copied: the engine and a connector see the same classes."""
        connector = importlib.import_module("kravia_sync.connector")
        model = importlib.import_module("kravia_sync.model")
        assert kravia_sync.Connector is connector.Connector
        assert kravia_sync.Invoice is model.Invoice

    def test_the_version_is_the_distributions(self) -> None:
        """__version__ matches the installed package's metadata."""
        assert kravia_sync.__version__ == version("kravia-sync")


def test_every_error_raised_on_purpose_is_a_kravia_sync_error() -> None:
    """One `except KraviaSyncError` catches what kravia-sync raises on purpose (and each
    keeps the built-in base it had, so older `except` clauses still work)."""
    from kravia_sync.engine.canary import CanaryFailedError  # noqa: PLC0415
    from kravia_sync.engine.errors import PassFailedError  # noqa: PLC0415
    from kravia_sync.engine.resolve import ResolveError  # noqa: PLC0415
    from kravia_sync.engine.worklist import WorkListError  # noqa: PLC0415
    from kravia_sync.kravia.errors import Failure, KraviaAuthError, KraviaError  # noqa: PLC0415
    from kravia_sync.settings import ConfigError  # noqa: PLC0415
    from kravia_sync.state.committer import StateWriteError  # noqa: PLC0415
    from kravia_sync.state.errors import (  # noqa: PLC0415
        LeaseHeldError,
        LeaseLostError,
        SchemaError,
        StateConflictError,
        StateError,
    )

    for error in (
        kravia_sync.ConnectorError,
        kravia_sync.InvalidRecordError,
        CanaryFailedError,
        ConfigError,
        KraviaError,
        KraviaAuthError,
        LeaseHeldError,
        LeaseLostError,
        PassFailedError,
        ResolveError,
        SchemaError,
        StateConflictError,
        StateError,
        StateWriteError,
        WorkListError,
    ):
        assert issubclass(error, kravia_sync.KraviaSyncError), error
    assert issubclass(kravia_sync.InvalidRecordError, ValueError)
    assert issubclass(StateError, RuntimeError)
    assert issubclass(WorkListError, OSError)
    refused = KraviaAuthError("Kravia answered 401: no", status=401)
    assert refused.failure is Failure.AUTH
    assert str(refused) == "Kravia refused the token (401): Kravia answered 401: no"
    assert refused.stop_reason("search") == (
        "Kravia refused the token (search): Kravia answered 401: no"
    )
