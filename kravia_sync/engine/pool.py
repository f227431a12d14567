"""Drive every case of a pass's work through the case driver, with a fixed pool of workers.

Each case goes through `kravia_sync.engine.driver.CaseDriver`; this stage hands the cases
out, stops taking new ones when the pass is asked to stop, keeps one case's unexpected
failure from stopping the rest, and counts where each case ended in the run summary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Protocol

from kravia_sync.engine.diff import ATTENTION_PHASES
from kravia_sync.engine.driver import CaseDriver, PassStoppedError
from kravia_sync.engine.errors import PassFailedError
from kravia_sync.engine.summary import RunSummary
from kravia_sync.engine.worklist import WorkItem, WorkList, WorkListError
from kravia_sync.lifecycle import CaseState, Phase, Step, Timing, next_step
from kravia_sync.logging import get_logger, redact
from kravia_sync.settings import Settings
from kravia_sync.state.committer import StateWriteError
from kravia_sync.state.errors import LeaseLostError

__all__ = ["CasePool", "Progress"]

log = get_logger("kravia_sync.engine.pool")

# Kravia refusing every call (429s, overloads) for this long: the pass takes no new case, lets
# those under way finish, and fails saying so; the rest wait for the next pass.
GIVE_UP_AFTER_SECONDS = 300.0


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self) -> None: ...


class CasePool:
    """Drives a pass's cases, `max_in_flight * 2` at a time (so the next intents are
    committed while calls are out)."""

    def __init__(
        self,
        settings: Settings,
        driver: CaseDriver,
        *,
        timing: Timing,
        clock: Callable[[], datetime],
        stop: asyncio.Event,
        progress: Progress,
    ) -> None:
        self.settings = settings
        self.driver = driver
        self.timing = timing
        self.clock = clock
        self.stop = stop
        self.progress = progress

    async def drive(
        self,
        work: WorkList | list[WorkItem],
        summary: RunSummary,
        *,
        finals: list[CaseState] | None = None,
    ) -> None:
        """Drive every case with a fixed pool of workers (twice the calls allowed in flight, so
        the next intents are committed while calls are out), counting where each ends (kept
        in `finals` when given). Memory does not grow with the number of cases: the work
        list gives them out a chunk at a time."""
        driver = self.driver
        failed: list[WorkListError] = []
        pending = _given_out(work, failed)
        refused: list[float] = []  # how long Kravia had refused every call, when given up

        async def worker() -> None:
            for item in pending:
                if self.stop.is_set() or self._giving_up(refused):
                    return
                try:
                    final = await driver.drive(item)
                    self._tally(final, summary)
                    if finals is not None:
                        finals.append(final)
                except PassStoppedError as exc:
                    raise PassFailedError(str(exc)) from None
                except (PassFailedError, StateWriteError, LeaseLostError):
                    raise
                except Exception as exc:  # one case's unexpected failure never stops the rest
                    _case_failed(item, exc, summary)
                finally:
                    self.progress.advance()

        workers = [
            asyncio.create_task(worker())
            for _ in range(min(len(work), self.settings.kravia.max_in_flight * 2))
        ]
        try:
            await _all_of(workers)
        finally:
            driver.log.add_to(summary)
        if failed:
            raise _not_read_back(failed[0])
        if refused:
            raise PassFailedError(
                f"Kravia refused every call for {refused[0]:.0f} s (429 or overload answers): "
                "the pass stopped sending; the cases not yet sent wait for the next pass"
            )

    def _giving_up(self, refused: list[float]) -> bool:
        """Whether Kravia has refused every call for `GIVE_UP_AFTER_SECONDS`: then the pass
        stops (no case takes a next step, calls under way end) and how long goes in `refused`."""
        refusing = self.driver.client.refusing_for()
        if refusing < GIVE_UP_AFTER_SECONDS:
            return False
        refused.append(refusing)
        self.stop.set()
        return True

    def _tally(self, case: CaseState, summary: RunSummary) -> None:
        """Count where a case ended."""
        if case.phase is Phase.STARTED:
            return
        if case.phase in ATTENTION_PHASES:
            summary.counts[case.phase.value] += 1
            summary.problems.append(
                {
                    "source": case.source,
                    "record": case.record_key,
                    "field": "kravia",
                    "reason": case.last_error or case.phase.value,
                }
            )
            return
        decision = next_step(
            case, start=self.settings.policy.start, now=self.clock(), timing=self.timing
        )
        summary.counts["awaiting_approval" if decision.step is Step.NONE else "deferred"] += 1


def _given_out(work: Iterable[WorkItem], failed: list[WorkListError]) -> Iterator[WorkItem]:
    """The work's items, ending where its temporary file fails (the failure noted in
    `failed`): the workers then finish the cases they hold, calls under way get their answers
    recorded, and no more are taken."""
    try:
        yield from work
    except WorkListError as exc:
        failed.append(exc)


async def _all_of(workers: list[asyncio.Task[None]]) -> None:
    """Wait for every worker; when one fails, the others are cancelled, then it is raised."""
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise


def _not_read_back(error: WorkListError) -> PassFailedError:
    cause = error.__cause__ or error
    return PassFailedError(
        f"the work list's temporary file could not be read back ({cause}); is the disk of "
        "SQLITE_TMPDIR, TMPDIR or /tmp full? The cases given out before were driven; the "
        "rest were sent nothing in this pass, and the next pass takes them up"
    )


def _case_failed(item: WorkItem, exc: Exception, summary: RunSummary) -> None:
    """One case's unexpected failure: logged with its traceback, counted, and named among the
    run's problems."""
    log.error(
        "case failed unexpectedly",
        accounting_invoice_id=item.case.accounting_invoice_id,
        exc_info=exc,
    )
    summary.counts["errors"] += 1
    summary.problems.append(
        {
            "source": item.case.source,
            "record": item.case.record_key,
            "field": "engine",
            "reason": redact(f"{type(exc).__name__}: {exc}"),
        }
    )
