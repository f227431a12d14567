"""The `kravia-sync` command line: the Typer app with every command registered (the commands are
in `passes`, `reports`, `operator`, `payouts`, `checks`, `auth` and `setup`; what they share is
in `common`)."""

from kravia_sync.cli import _startup  # noqa: F401 - before anything imports httpx (see the module)

# isort: split
from kravia_sync.cli import auth, checks, operator, passes, payouts, reports, setup  # noqa: F401 - they register
from kravia_sync.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
