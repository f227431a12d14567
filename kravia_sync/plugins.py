"""The installed connectors, built-in and third-party, for `kravia-sync connectors`."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from kravia_sync.connector import ENTRY_POINT_GROUP, Connector

__all__ = ["ConnectorInfo", "installed_connectors"]


@dataclass(frozen=True)
class ConnectorInfo:
    """One entry point of the `kravia_sync.connectors` group, and what it loads."""

    name: str
    target: str  # module:Class
    package: str  # the distribution that declares it
    version: str
    settings_schema: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why it could not be loaded

    def settings_keys(self) -> list[str]:
        """Top-level settings keys, required ones marked with `*`."""
        required = set(self.settings_schema.get("required", []))
        properties = self.settings_schema.get("properties", {})
        return [f"{key}*" if key in required else key for key in properties]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "package": self.package,
            "version": self.version,
            "settings_schema": self.settings_schema,
            "error": self.error,
        }


def installed_connectors() -> list[ConnectorInfo]:
    """Every installed connector by name; one that fails to load is listed with the error."""
    found = []
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        dist = entry_point.dist
        package = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        schema: dict[str, Any] = {}
        error = None
        try:
            schema = _load(entry_point).settings_model.model_json_schema()
        except Exception as exc:  # a broken plugin must not hide the others
            error = f"{type(exc).__name__}: {exc}"
        found.append(
            ConnectorInfo(
                name=entry_point.name,
                target=entry_point.value,
                package=package,
                version=version,
                settings_schema=schema,
                error=error,
            )
        )
    return found


def _load(entry_point: EntryPoint) -> type[Connector]:
    loaded = entry_point.load()
    if not (isinstance(loaded, type) and issubclass(loaded, Connector)):
        raise TypeError(f"{entry_point.value} is not a kravia_sync.Connector")
    return loaded
