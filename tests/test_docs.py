"""The code in docs/writing-a-connector.md runs as written, so the tutorial cannot rot.

Blocks whose first line is `# file: PATH` are the files of the tutorial's package; they are
written into a fresh directory, and the package's own tests (the conformance kit) are run there.
Other Python blocks run as scripts in that directory, and print what the `text` block after
them shows.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "writing-a-connector.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FILE_HEADER = re.compile(r"^# file: (\S+)\n")


@dataclass(frozen=True)
class Block:
    language: str
    code: str

    @property
    def file(self) -> str | None:
        match = FILE_HEADER.match(self.code)
        return match.group(1) if match else None


def blocks() -> list[Block]:
    text = TUTORIAL.read_text(encoding="utf-8")
    return [Block(match.group(1), match.group(2)) for match in FENCE.finditer(text)]


def run_python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd / "src"), str(cwd)])}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial's package, written from its `# file:` blocks."""
    root = tmp_path_factory.mktemp("tutorial") / "kravia-sync-my-erp"
    for block in blocks():
        if block.file is not None:
            path = root / block.file
            assert not path.exists(), f"{block.file} is written twice"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code, encoding="utf-8")
    return root


class TestWritingAConnector:
    def test_the_tutorial_has_its_files(self, project: Path) -> None:
        """pyproject, settings, connector, package and tests are all in the tutorial."""
        written = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
        assert written == [
            "pyproject.toml",
            "src/kravia_sync_my_erp/__init__.py",
            "src/kravia_sync_my_erp/connector.py",
            "src/kravia_sync_my_erp/settings.py",
            "tests/test_conformance.py",
        ]

    def test_the_entry_point_names_the_connector_class(self, project: Path) -> None:
        """The pyproject's entry point loads a Connector subclass."""
        pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
        target = pyproject["project"]["entry-points"]["kravia_sync.connectors"]["my-erp"]
        module, name = target.split(":")
        check = (
            f"import importlib, kravia_sync; cls = getattr(importlib.import_module({module!r}), "
            f"{name!r}); assert issubclass(cls, kravia_sync.Connector), cls"
        )
        result = run_python("-c", check, cwd=project)
        assert result.returncode == 0, result.stderr

    def test_the_tutorial_connector_passes_the_conformance_kit(self, project: Path) -> None:
        """The tutorial's tests, the whole conformance kit, pass."""
        result = run_python("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "8 passed" in result.stdout

    def test_the_snippets_print_what_the_tutorial_shows(self, project: Path) -> None:
        """Each Python snippet runs, and prints the output shown after it."""
        found = blocks()
        snippets = 0
        for index, block in enumerate(found):
            if block.language != "python" or block.file is not None:
                continue
            snippets += 1
            script = project / f"snippet_{index}.py"
            script.write_text(block.code, encoding="utf-8")
            result = run_python(str(script), cwd=project)
            assert result.returncode == 0, result.stderr
            shown = found[index + 1] if index + 1 < len(found) else None
            if shown is not None and shown.language == "text":
                assert result.stdout == shown.code
        assert snippets >= 1

    def test_the_scaffold_command_in_the_tutorial_works(self, tmp_path: Path) -> None:
        """`kravia-sync new-connector my-erp`, as the tutorial says, makes the package."""
        command = next(
            line
            for block in blocks()
            if block.language == "sh"
            for line in block.code.splitlines()
            if line.startswith("kravia-sync new-connector")
        )
        result = run_python("-m", "kravia_sync", *command.split()[1:], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "kravia-sync-my-erp" / "pyproject.toml").is_file()
