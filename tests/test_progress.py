"""The progress bar of a pass on a terminal: it shows how many cases are done and how fast,
the time taken and left, and the calls in flight; log lines written while it is shown print
above it on lines of their own, never into the bar's line."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from support import CREDITOR_ID, TOKEN, load, write_config, write_invoices

from kravia_sync.cli import summary as cli_summary
from kravia_sync.cli.progress import PaceNow, pace_text
from kravia_sync.logging import configure_logging
from kravia_sync.testing.simulator import Faults, RunningSimulator, Simulator

# Cursor movements a live display writes: carriage return, erase the line, one line up,
# hide and show the cursor.
CONTROL = re.compile(r"\r|\x1b\[2K|\x1b\[(\d*)A|\x1b\[\?25[lh]")
BAR = re.compile(r"applying .* \d+/\d+ ")


def screen(output: str) -> list[str]:
    """The lines a terminal shows after `output`: the control sequences a live display
    writes carried out (text overwrites from the cursor on; a line too long for the screen
    stays one line here)."""
    lines = [""]
    row = column = 0
    for text, control in _pieces(output):
        for index, part in enumerate(text.split("\n")):
            if index:
                row, column = row + 1, 0
                lines.extend([""] * (row + 1 - len(lines)))
            line = lines[row].ljust(column)
            lines[row] = line[:column] + part + line[column + len(part) :]
            column += len(part)
        if control == "\r":
            column = 0
        elif control == "\x1b[2K":
            lines[row] = ""
        elif control.endswith("A"):
            row = max(0, row - int(control[2:-1] or 1))
    return lines


def _pieces(output: str) -> Iterator[tuple[str, str]]:
    """The text between control sequences, each with the sequence after it ("" at the end)."""
    start = 0
    for match in CONTROL.finditer(output):
        yield output[start : match.start()], match.group(0)
        start = match.end()
    yield output[start:], ""


@pytest.fixture(scope="module")
def terminal(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What a terminal was sent during a pass with the bar shown and log lines written to the
    same terminal (some calls fail, so the pass logs while the bar is up)."""
    tmp_path: Path = tmp_path_factory.mktemp("progress")
    shared = io.StringIO()
    console = Console(file=shared, force_terminal=True, color_system=None, width=120)
    simulator = Simulator(token=TOKEN, creditor_id=CREDITOR_ID)
    simulator.faults = Faults(latency_ms=20, error_5xx=0.25, seed=7)
    with RunningSimulator(simulator) as running, pytest.MonkeyPatch.context() as patch:
        write_invoices(tmp_path / "invoices", range(1, 41), pdf_every=0)
        config = write_config(tmp_path, running.base_url)
        text = config.read_text(encoding="utf-8").replace("max_in_flight = 8", "max_in_flight = 2")
        config.write_text(text, encoding="utf-8")
        settings = load(config)
        configure_logging(level="info", fmt="json", stream=shared)
        patch.setattr(cli_summary, "err", console)
        summary = asyncio.run(cli_summary.run_pass(settings, show_progress=True))
    configure_logging()
    assert summary.counts["read"] == 40
    return shared.getvalue()


def _log_lines(output: str) -> list[str]:
    """The JSON log lines written (each is one JSON object ending with its timestamp)."""
    return re.findall(r'\{"[^\n]*?"timestamp": "[^"]+"\}', output)


class TestLogLinesAndTheBar:
    def test_every_log_line_is_on_a_line_of_its_own(self, terminal: str) -> None:
        """Each log line the pass wrote stays on the screen, whole and alone on its line."""
        logged = _log_lines(terminal)
        shown = set(screen(terminal))

        assert len(logged) >= 3, terminal[-2000:]
        assert [line for line in logged if line not in shown] == []
        assert all(json.loads(line)["event"] for line in logged)

    def test_the_bar_is_gone_when_the_pass_ends(self, terminal: str) -> None:
        """The bar is drawn while the pass runs and erased at its end: no screen line is left
        holding it."""
        assert BAR.search(terminal)
        assert [line for line in screen(terminal) if BAR.search(line)] == []


class TestWhatTheBarShows:
    def test_rate_time_taken_and_left_and_calls_in_flight(self, terminal: str) -> None:
        """The bar shows cases done of all, cases per second, the time taken and the time
        left, calls answered per second, and the calls in flight of those allowed."""
        drawn = [match.group(0) for match in re.finditer(r"applying [^\r\n]*", terminal)]
        shape = re.compile(
            r"applying .*? (\d+)/40 (\d+\.\d|-) cases/s "
            r"\d+:\d\d:\d\d elapsed, (\d+:\d\d:\d\d|-:--:--) left; "
            r"\d+ calls/s, (\d+)/(\d+) in flight"
        )
        matched = [shape.search(line) for line in drawn]

        assert drawn
        assert all(matched), [line for line, m in zip(drawn, matched, strict=True) if not m]
        assert any(m.group(3) != "-:--:--" for m in matched if m)  # an estimate came
        assert all(int(m.group(4)) <= int(m.group(5)) <= 2 for m in matched if m)

    def test_pace_text_names_the_calls_in_flight_and_the_limit(self) -> None:
        """The pace in words: answered per second, in flight of allowed, and any rate."""
        assert pace_text(PaceNow(answered=23.4, in_flight=3, limit=16, rate=12.5)) == (
            "23 calls/s, 3/16 in flight, limit 12.5/s"
        )
        assert pace_text(PaceNow(answered=0, in_flight=0, limit=2, rate=None)) == (
            "0 calls/s, 0/2 in flight"
        )
