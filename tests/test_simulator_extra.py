"""The bundled simulators are not part of a production install: their extra dependencies come
with `kravia-sync[simulator]`, and the two commands that need them say so when they are
missing."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest

SIMULATOR_ONLY = {"python-multipart", "httptools", "uvloop"}

# Runs the command line with python-multipart made impossible to import, as on an install
# without the extra.
WITHOUT_MULTIPART = (
    "import sys\n"
    "sys.modules['python_multipart'] = None\n"
    "sys.modules['multipart'] = None\n"
    "from kravia_sync.cli.app import main\n"
    "sys.argv = ['kravia-sync', *sys.argv[1:]]\n"
    "main()\n"
)


def _name(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.strip().lower()


def test_a_production_install_requires_no_simulator_dependency() -> None:
    declared = requires("kravia-sync") or []
    runtime = {_name(r) for r in declared if "extra ==" not in r}
    simulator = {_name(r) for r in declared if 'extra == "simulator"' in r}
    assert simulator == SIMULATOR_ONLY
    assert not runtime & SIMULATOR_ONLY
    assert {"starlette", "uvicorn"} <= runtime  # the daemon's own listeners


@pytest.mark.parametrize(
    "arguments",
    [["demo", "--dir", "{dir}"], ["simulate", "--port", "0"]],
    ids=["demo", "simulate"],
)
def test_demo_and_simulate_name_the_missing_extra(tmp_path: Path, arguments: list[str]) -> None:
    directory = tmp_path / "demo"
    command = [part.replace("{dir}", str(directory)) for part in arguments]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_MULTIPART, *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "needs the [simulator] extra: pip install 'kravia-sync[simulator]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not directory.exists()  # nothing started, nothing written
