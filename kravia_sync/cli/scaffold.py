"""`kravia-sync new-connector NAME`: a connector package that installs and passes its tests.

The templates are package data (`kravia_sync/templates/connector/`, files ending `.tmpl`) with
`__NAME__`-style placeholders; the directory `__module__` becomes the package's module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from kravia_sync import __version__

__all__ = ["ConnectorNames", "scaffold"]

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_SUFFIX = ".tmpl"


@dataclass(frozen=True)
class ConnectorNames:
    """Every name a connector package derives from its connector name (`my-erp`)."""

    name: str  # the entry point: `connector = "my-erp"` in a source
    dist: str  # the distribution: kravia-sync-my-erp
    module: str  # the import package: kravia_sync_my_erp
    class_prefix: str  # MyErp → MyErpConnector, MyErpSettings
    title: str  # for prose: "my-erp"

    @classmethod
    def of(cls, name: str) -> ConnectorNames:
        """The names for `name`; `ValueError` unless it is lower case letters and digits,
        words joined by `-` or `_`, starting with a letter."""
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a connector name: use lower case letters and digits, words "
                "joined by - or _, starting with a letter (e.g. my-erp)"
            )
        words = re.split(r"[-_]", name)
        return cls(
            name=name,
            dist=f"kravia-sync-{'-'.join(words)}",
            module=f"kravia_sync_{'_'.join(words)}",
            class_prefix="".join(word.capitalize() for word in words),
            title=name,
        )

    def replacements(self) -> dict[str, str]:
        return {
            "__DIST__": self.dist,
            "__MODULE__": self.module,
            "__CLASS__": self.class_prefix,
            "__NAME__": self.name,
            "__TITLE__": self.title,
            "__KRAVIA_VERSION__": __version__,
        }


def scaffold(name: str, parent: Path) -> Path:
    """Write the package for connector `name` into a new directory under `parent` and return
    it. `FileExistsError` when that directory exists; `ValueError` for a bad name."""
    names = ConnectorNames.of(name)
    target = parent / names.dist
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another name or directory")
    replacements = names.replacements()
    written: list[tuple[Path, str]] = []
    _collect(files("kravia_sync") / "templates" / "connector", Path(), replacements, written)
    for relative, text in written:
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def _collect(
    source: Traversable,
    relative: Path,
    replacements: dict[str, str],
    written: list[tuple[Path, str]],
) -> None:
    for entry in sorted(source.iterdir(), key=lambda item: item.name):
        if entry.name == "__pycache__":
            continue
        name = replacements["__MODULE__"] if entry.name == "__module__" else entry.name
        if entry.is_dir():
            _collect(entry, relative / name, replacements, written)
        elif name.endswith(_SUFFIX):
            text = entry.read_text(encoding="utf-8")
            for placeholder, value in replacements.items():
                text = text.replace(placeholder, value)
            written.append((relative / name.removesuffix(_SUFFIX), text))
