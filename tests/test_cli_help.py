"""`kravia-sync --help` lists every command, in the order a user meets them (the commands are
defined in several modules; the order is `COMMAND_ORDER`, not the order they were imported)."""

from __future__ import annotations

import re

from typer.main import get_command
from typer.testing import CliRunner

from kravia_sync.cli.app import app
from kravia_sync.cli.common import COMMAND_ORDER


def test_every_command_has_its_place_in_the_order() -> None:
    registered = set(get_command(app).commands)
    assert registered == set(COMMAND_ORDER)


def test_help_lists_the_commands_in_that_order() -> None:
    shown = CliRunner().invoke(app, ["--help"], terminal_width=100)
    assert shown.exit_code == 0, shown.output
    listed = re.findall(r"^│ ([a-z][a-z-]*) ", shown.output, flags=re.MULTILINE)
    assert listed == list(COMMAND_ORDER)
