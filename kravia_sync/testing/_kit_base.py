"""What every group of the conformance kit's checks stands on: the connector, the sample
sources (written once per size) and a checked read of one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kravia_sync.connector import Connector, ConnectorError
from kravia_sync.testing._kit_helpers import (
    _fail,
    _FailingFactory,
    _Read,
    _SampleFactory,
    _validate_item,
)

__all__ = ["KitBase"]


class KitBase:
    """The connector and sample sources a `ConformanceKit` checks (set by its constructor)."""

    connector: type[Connector]
    directory: Path
    count: int
    stream_count: int
    _sample: _SampleFactory
    _failing: _FailingFactory
    _sources: dict[int, tuple[Mapping[str, Any], Path]]

    def _source(self, count: int) -> tuple[Mapping[str, Any], Path]:
        if count not in self._sources:
            directory = self.directory / f"sample-{count}"
            directory.mkdir(parents=True, exist_ok=True)
            self._sources[count] = (self._sample(directory, count), directory)
        return self._sources[count]

    def _build(self, raw: Mapping[str, Any], base_dir: Path, check: str) -> Connector:
        try:
            return self.connector.from_settings(raw, base_dir=base_dir)
        except Exception as exc:
            _fail(
                check,
                f"the sample's settings fail: {type(exc).__name__}: {exc}",
                "make sample() return settings the connector accepts",
            )

    def _read(self, count: int, check: str) -> _Read:
        raw, base_dir = self._source(count)
        connector = self._build(raw, base_dir, check)
        result = connector.read()
        if not isinstance(result, Iterator):
            _fail(
                check,
                f"read() returned a {type(result).__name__}, not an iterator",
                "write read() as a generator (`yield` each record)",
            )
        try:
            read = _Read(list(result))
        except ConnectorError as exc:
            _fail(check, f"the sample's read failed: {exc}", "check sample() and read()")
        for item in read.items:
            _validate_item(check, item, read)
        return read
