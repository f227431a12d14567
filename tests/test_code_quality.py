"""The code stays ruff-clean and passes mypy --strict (configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: install the dev extra (pip install -e '.[dev]')")
    return [found]


class TestCodeQuality:
    def test_ruff_finds_nothing(self) -> None:
        """ruff check passes on the whole project."""
        result = subprocess.run(
            [*_tool("ruff"), "check", "--no-cache", "."],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_mypy_strict_passes(self) -> None:
        """mypy --strict passes on kravia_sync/ and connectors/."""
        result = subprocess.run(
            [*_tool("mypy")], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
