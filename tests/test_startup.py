"""What a start of kravia-sync leaves out stays out: the command line imports only what its pass
needs, and the package imports its public modules only when a name of theirs is used. (How long
a start takes is measured by `bench/startup.py`, not here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import Sim, cli_env, write_config, write_invoices

import kravia_sync


def python_prints(script: str, *args: str, cwd: Path | None = None) -> str:
    """What a fresh interpreter running `script` prints (a command line's own output goes to
    stdout too: the script prints its findings last, on one line)."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=cli_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


# Loaded by a pass over an empty folder, these would be start-up spent on nothing it does.
EXTRAS = ("rich", "pygments", "h11", "sqlalchemy", "sqlmodel", "sqlglot", "uvicorn", "starlette")

# `kravia-sync reconcile --json`, then which of the extras (its arguments) it loaded.
PASS = """
import json, sys
extras = set(sys.argv[1:])
sys.argv = ["kravia-sync", "reconcile", "--json"]
from kravia_sync.cli.app import main
try:
    main()
except SystemExit as stop:
    code = stop.code
import structlog.dev
loaded = sorted({name.split(".")[0] for name in sys.modules} & extras)
print(json.dumps({"exit": code, "loaded": loaded, "structlog_rich": structlog.dev.rich is not None,
                  "httpx_main": getattr(sys.modules["httpx._main"], "__file__", None)}))
"""


class TestTheCommandLine:
    def test_a_pass_with_nothing_to_do_loads_none_of_the_extras(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """rich (structlog's exception display and the console tables), h11 (the first
        connection), SQLAlchemy (a new state store), sqlglot (an SQL source) and the daemon's
        HTTP server stay out of a pass that has nothing to send."""
        (tmp_path / "invoices").mkdir()
        write_config(tmp_path, sim.base_url)
        # The first pass creates the state store (with SQLAlchemy); the second is the daily one.
        python_prints(PASS, *EXTRAS, cwd=tmp_path)
        report = json.loads(python_prints(PASS, *EXTRAS, cwd=tmp_path))
        assert report == {
            "exit": 0,
            "loaded": [],
            "structlog_rich": False,
            "httpx_main": None,
        }

    def test_a_pass_that_calls_kravia_loads_the_connection_it_needs(
        self, sim: Sim, tmp_path: Path
    ) -> None:
        """The connection's parser loads with the first call, and the call goes through."""
        write_config(tmp_path, sim.base_url)
        write_invoices(tmp_path / "invoices", [1001])
        report = json.loads(python_prints(PASS, *EXTRAS, cwd=tmp_path))
        assert "h11" in report["loaded"]
        assert len(sim.cases()) == 1

    def test_a_program_that_imports_kravia_sync_keeps_structlog_as_it_is(self) -> None:
        """Only the command line's own process hides rich from structlog."""
        script = "import kravia_sync.engine.reconcile, structlog.dev; print(structlog.dev.rich)"
        assert python_prints(script) != "None"


class TestThePackage:
    def test_importing_it_imports_none_of_its_modules(self) -> None:
        script = (
            "import sys, kravia_sync\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'kravia_sync', 'structlog', 'pydantic'}))"
        )
        assert python_prints(script) == "['kravia_sync']"

    def test_a_public_name_loads_its_module_when_first_used(self) -> None:
        script = (
            "import sys\n"
            "from kravia_sync import Invoice\n"
            "print(Invoice.__module__, 'kravia_sync.model' in sys.modules, "
            "'kravia_sync.payments' in sys.modules)"
        )
        assert python_prints(script) == "kravia_sync.model True False"

    def test_an_unknown_name_is_refused_as_python_refuses_one(self) -> None:
        with pytest.raises(AttributeError, match="has no attribute 'Reconciler'"):
            _ = kravia_sync.Reconciler  # type: ignore[attr-defined]
        with pytest.raises(ImportError, match="cannot import name 'nothing'"):
            from kravia_sync import nothing  # type: ignore[attr-defined] # noqa: F401, PLC0415

    def test_dir_lists_every_public_name_before_it_is_used(self) -> None:
        script = (
            "import kravia_sync\nprint(sorted(set(kravia_sync.__all__) - set(dir(kravia_sync))))"
        )
        assert python_prints(script) == "[]"
