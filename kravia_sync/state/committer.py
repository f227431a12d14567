"""Group commit: many concurrent case updates and journal entries, few transactions.

Every remote call needs its intent to be durable before it is sent. With 16 calls in flight,
committing each intent on its own would cost 16 fsyncs where one does: callers submit their
writes (`CaseWrite`), and one writer commits whatever has queued up since its last
transaction, in order, on a single database thread; each caller learns its write's result
(written, or refused: a conflict, a hold, a lost lease). Outcomes need not be waited for: the
next intent of the same case is queued behind its outcome, so it can only be durable once the
outcome is.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Self

from kravia_sync.errors import KraviaSyncError
from kravia_sync.state.records import CaseWrite, WriteResult
from kravia_sync.state.store import StateStore

__all__ = ["GroupCommitter", "StateWriteError"]


class StateWriteError(KraviaSyncError, RuntimeError):
    """A journal or case write failed: the pass must stop before sending anything more."""


@dataclass(slots=True)
class _Pending:
    write: CaseWrite
    done: asyncio.Future[WriteResult]


class GroupCommitter:
    """Use as `async with GroupCommitter(store) as committer:`; leaving flushes everything."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-writer")
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="group-commit")
        return self

    async def __aexit__(self, *_: object) -> None:
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def submit(self, write: CaseWrite) -> asyncio.Future[WriteResult]:
        """Queue a write; the future completes with its result once it is committed."""
        if self._closing:
            raise StateWriteError("the state store is closed after a failed write")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._queue.append(_Pending(write, future))
        self._wakeup.set()
        return future

    async def commit(self, write: CaseWrite) -> WriteResult:
        """Queue a write and wait until it is durable; its result."""
        return await self.submit(write)

    async def flush(self) -> None:
        """Wait until everything queued so far is durable."""
        await self.submit(CaseWrite())

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if batch and not await self._commit(batch):
                return
            if self._closing and not self._queue:
                return

    async def _commit(self, batch: list[_Pending]) -> bool:
        """Commit one batch; on failure, fail it and everything queued behind it."""
        writes = [item.write for item in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self._executor, self._store.commit_case_writes, writes
            )
        except Exception as exc:
            failure = StateWriteError(f"the state store could not be written: {exc}")
            # Nothing queued after a failed write may be sent: fail it all.
            self._closing = True
            for item in [*batch, *self._queue]:
                if not item.done.done():
                    item.done.set_exception(failure)
            self._queue = []
            return False
        self.transactions += 1
        for item, result in zip(batch, results, strict=True):
            if not item.done.done():
                item.done.set_result(result)
        return True


def _retrieve(future: asyncio.Future[WriteResult]) -> None:
    """Mark an outcome's failure as seen; the next intent (awaited) reports it."""
    if not future.cancelled():
        future.exception()
