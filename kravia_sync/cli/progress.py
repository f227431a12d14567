"""A pass's progress on a terminal: how many of its cases are done and how fast, the time
taken and the time left, the calls out at Kravia and the pace it allows. Log lines written
while the bar is shown are printed above it, never into its line. Loaded only when there is
a terminal to show it on (a run that prints JSON never loads rich)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from kravia_sync.kravia.client import KraviaClient
from kravia_sync.logging import log_lines_to

__all__ = ["PaceNow", "PassProgress", "pace_text", "progress_columns", "shown_on"]

# How often the pace shown is read again between cases (a case may wait on slow answers).
SAMPLE_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class PaceNow:
    """The pace of calls to Kravia at one moment, as the bar shows it."""

    answered: float  # calls answered in the last second
    in_flight: int  # calls out at Kravia now
    limit: int  # calls allowed in flight now
    rate: float | None  # calls per second allowed now (None: no rate applies)

    @classmethod
    def of(cls, client: KraviaClient) -> PaceNow:
        pace = client.pacing()
        return cls(pace.achieved, client.calls_in_flight(), pace.limit, pace.rate)


def pace_text(pace: PaceNow) -> str:
    """The pace in a few words: calls answered per second, calls in flight of those allowed,
    and the rate limit when one applies."""
    text = f"{pace.answered:.0f} calls/s, {pace.in_flight}/{pace.limit} in flight"
    if pace.rate is not None:
        text += f", limit {pace.rate:.1f}/s"
    return text


class CaseRateColumn(ProgressColumn):
    """Cases done per second (rich's estimate over the last half minute)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        shown = "- cases/s" if speed is None else f"{speed:.1f} cases/s"
        return Text(shown, style="progress.data.speed")


def progress_columns() -> tuple[ProgressColumn, ...]:
    """What the bar shows, in order: cases done of all, how fast, time taken and left, and
    the pace of the calls (`pace_text`)."""
    return (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        CaseRateColumn(),
        TimeElapsedColumn(),
        TextColumn("elapsed,"),
        TimeRemainingColumn(),
        TextColumn("left;"),
        TextColumn("{task.fields[pace]}"),
    )


class PassProgress:
    """The engine's `Progress` on a rich progress bar, the pace read on the pass's own event
    loop (the pace is not to be read from rich's refresh thread)."""

    def __init__(self, progress: Progress, pace: Callable[[], PaceNow]) -> None:
        self._progress = progress
        self._pace = pace
        self._task: TaskID | None = None

    def start(self, total: int) -> None:
        self._task = self._progress.add_task("applying", total=total, pace=pace_text(self._pace()))

    def advance(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1, pace=pace_text(self._pace()))

    def sample(self) -> None:
        """Show the pace as it is now."""
        if self._task is not None:
            self._progress.update(self._task, pace=pace_text(self._pace()))

    async def keep_pace(self) -> None:
        """`sample` every `SAMPLE_SECONDS`, until cancelled."""
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            self.sample()


@contextlib.asynccontextmanager
async def shown_on(console: Console, client: KraviaClient) -> AsyncIterator[PassProgress]:
    """A live progress bar on `console` for the pass run inside the block, with the pace of
    `client`'s calls; while it is shown, log lines are printed above it."""

    with Progress(*progress_columns(), console=console, transient=True) as progress:

        def print_above(line: str) -> None:
            progress.console.print(Text.from_ansi(line), soft_wrap=True)

        with log_lines_to(print_above):
            shown = PassProgress(progress, lambda: PaceNow.of(client))
            sampler = asyncio.create_task(shown.keep_pace())
            try:
                yield shown
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
