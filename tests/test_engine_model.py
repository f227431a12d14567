"""The whole engine on seeded bad days (`engine_model`): every invariant after every step.

`KRAVIA_SYNC_MODEL_SEEDS` sets how many schedules run (400 by default); `bench/soak_engine_model.py`
runs 10,000. A failing seed replays alone: `engine_model.run_schedule(seed, directory)`.

The last tests break the engine on purpose and check that the model notices: a model that
could not fail would prove nothing.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from engine_model import InvariantError, run_schedule, run_seeds

from kravia_sync.engine import payment_sizing, settling
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.identity import Absent
from kravia_sync.logging import configure_logging

SEEDS = int(os.environ.get("KRAVIA_SYNC_MODEL_SEEDS", "400"))
WORKERS = max(1, min(2, os.cpu_count() or 1))
# The schedules run in four tests of a quarter each, so the suite's own workers share them.
PARTS = 4


def _part(index: int) -> range:
    size = -(-SEEDS // PARTS)
    return range(index * size, min(SEEDS, (index + 1) * size))


@pytest.fixture
def quiet_logs(tmp_path: Path) -> Iterator[None]:
    """Thousands of passes log at critical only (the engine's log setup is global)."""
    saved = structlog.get_config()
    with (tmp_path / "log").open("w") as stream:
        configure_logging(level="critical", fmt="json", stream=stream)
        try:
            yield
        finally:
            structlog.configure(**saved)


@pytest.mark.parametrize("part", range(PARTS), ids=lambda part: f"part{part + 1}of{PARTS}")
def test_every_schedule_keeps_every_invariant(part: int) -> None:
    """SEEDS schedules of source edits, holds, restores, shapes, clock skew, 429/503, lost
    answers and kills: no invariant breaks, and each schedule settles once faults stop."""
    seeds = _part(part)
    results = run_seeds(seeds, workers=WORKERS)

    broken = [result.violation for result in results if result.violation]
    assert not broken, f"{len(broken)} of {len(seeds)} schedules broke an invariant:\n" + (
        "\n".join(broken[:3])
    )
    totals: Counter[str] = Counter()
    for result in results:
        totals.update(result.counts)
    parked = sum(len(result.parked) for result in results)
    print(
        f"seeds {seeds.start}-{seeds.stop - 1}: {sum(r.passes for r in results)} passes, "
        f"{dict(totals)}, {parked} parked"
    )
    # The schedules did meet what they are meant to meet (a model that never kills proves
    # nothing about kills).
    for fault in ("kills", "lost", "429", "503", "restores", "prefix_refused"):
        assert totals[fault] >= len(seeds) // 50, (
            f"only {totals[fault]} {fault} in {len(seeds)} schedules"
        )


def _first_violation(seeds: range, tmp_path: Path) -> str | None:
    for seed in seeds:
        try:
            run_schedule(seed, tmp_path / str(seed))
        except InvariantError as violation:
            return str(violation)
    return None


@pytest.mark.usefixtures("quiet_logs")
class TestTheModelCatchesABrokenEngine:
    @staticmethod
    def _break(
        monkeypatch: pytest.MonkeyPatch, target: Any, name: str, fake: Callable[..., Any]
    ) -> None:
        monkeypatch.setattr(target, name, fake)

    def test_registering_without_asking_kravia_is_caught(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An engine whose look at Kravia always answers "absent" registers again after a
        lost answer or a restored state store."""
        self._break(monkeypatch, KraviaMirror, "verdict", lambda *_args, **_kwargs: Absent())

        violation = _first_violation(range(40), tmp_path)

        assert violation is not None
        assert "registered again" in violation

    def test_a_drop_sent_whole_after_a_restore_is_caught(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An engine that forwards a drop without limiting it to what is still owed pays a
        drop twice once its state store forgot the first."""
        self._break(monkeypatch, payment_sizing, "limit_to_owed", lambda lines, *_args: (lines, []))

        violation = _first_violation(range(90), tmp_path)

        assert violation is not None
        assert "below what the source says is owed" in violation

    def test_a_refused_start_parked_without_a_look_is_caught(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An engine that parks a Start Kravia refuses as already done (the state store was
        restored) leaves a case for a person where nothing is ambiguous."""

        async def never(*_args: object) -> bool:
            return False

        self._break(monkeypatch, settling.CaseSettler, "refused_start_was_done", never)

        violation = _first_violation(range(40), tmp_path)

        assert violation is not None
        assert "parked without a possible second case" in violation
