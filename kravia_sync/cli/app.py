"""The `kravia-sync` command line: the Typer app with every command registered (the commands are
in `passes`, `reports`, `operator`, `payouts`, `checks`, `auth` and `setup`; what they share is
in `common`).

Typer reads the annotations of every command at every start, and an annotation kept as a string
(`from __future__ import annotations`) is compiled anew each time: the modules whose commands
are run daily (`passes`, `reports`, `operator`, `checks`, `setup`) keep real annotations."""

from kravia_sync.cli import _startup  # noqa: F401 - before anything imports httpx (see the module)

# isort: split
from kravia_sync.cli import auth, checks, operator, passes, payouts, reports, setup  # noqa: F401 - they register
from kravia_sync.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
