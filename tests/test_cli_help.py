"""`kravia-sync --help` lists every command, in the order a user meets them (the commands are
defined in several modules; the order is `COMMAND_ORDER`, not the order they were imported)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
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


def _command_paths() -> list[list[str]]:
    """Every command and group, as the words that name it (the top-level help is `[]`)."""
    found: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


def _help(path: list[str], width: int) -> str:
    shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(width)})
    assert shown.exit_code == 0, shown.output
    return shown.output


BORDER = "│"
ROW_INDENT = (
    6  # a row starts this near the border at most ("│ *    name"); its cell goes on further in
)


def _early_breaks(output: str, width: int) -> list[str]:
    """Lines of prose that end although the next line's first word would have fit after them:
    a break the help text made, not the terminal. Inside a panel the line is bounded by its
    right border (less one space of padding), outside by the terminal's width."""
    lines = output.splitlines()
    breaks: list[str] = []
    for line, following in itertools.pairwise(lines):
        if not line.strip() or not following.strip():
            continue
        if line.startswith(BORDER) and following.startswith(BORDER):
            indent = len(following) - len(following[1:].lstrip()) - 1
            if indent <= ROW_INDENT:
                continue  # a new row (a command, an option), not the same cell going on
            right = line.rfind(BORDER)
            text_end = len(line[:right].rstrip())
            continued = following[: following.rfind(BORDER)].strip(BORDER + " ")
            if "  " in continued:
                continue  # several columns wrapped at once (a long metavar): not one cell
            limit = right - 1
        elif not line.startswith((BORDER, "╭", "╰")) and not following.startswith(
            (BORDER, "╭", "╰")
        ):
            if line.lstrip().startswith("Usage:"):
                continue
            text_end = len(line.rstrip())
            continued = following.strip()
            limit = width - 1  # the help's own padding
        else:
            continue
        if line[:text_end].endswith(".") or continued.startswith("["):
            continue  # a sentence ended, or typer's own `[default: …]` item starts
        if text_end + 1 + len(continued.split()[0]) <= limit:
            breaks.append(f"{line.rstrip()!r} / {following.rstrip()!r}")
    return breaks


@pytest.mark.parametrize("width", [60, 200])
def test_help_is_wrapped_by_the_terminal_not_by_the_source(width: int) -> None:
    """No help line ends where the next line's first word would still have fit: paragraphs
    reach the terminal whole, and only its width breaks them."""
    breaks = {
        " ".join(path) or "(top)": found
        for path in _command_paths()
        if (found := _early_breaks(_help(path, width), width))
    }
    assert breaks == {}


def test_every_help_paragraph_is_one_line() -> None:
    """Each command's help and each option's help keep no line break inside a paragraph
    (rich keeps such breaks in the list of commands)."""
    broken: list[str] = []

    def walk(command: Any, path: str) -> None:
        texts = [("", command.help or "")]
        texts += [
            (param.name or "", getattr(param, "help", None) or "") for param in command.params
        ]
        for name, text in texts:
            if any("\n" in paragraph for paragraph in text.split("\n\n")):
                broken.append(f"{path} {name}".strip())
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {sub_name}")

    walk(get_command(app), "kravia-sync")
    assert broken == []
