"""The conformance kit's check of a connector's two-phase read (`stamped_read()`)."""

from __future__ import annotations

from kravia_sync.connector import ConnectorError, PaymentRecord, RecordStamp, SourceRecord
from kravia_sync.model import record_accounting_id
from kravia_sync.testing._kit_base import KitBase
from kravia_sync.testing._kit_helpers import _fail

__all__ = ["StampedReadCheck"]


class StampedReadCheck(KitBase):
    """The stamped read against the plain read."""

    # -- the two-phase read -------------------------------------------------------------

    def check_stamped_read(self) -> bool:
        """Where the connector offers `stamped_read()`: its stamps are those of the plain
        read's records (keys in order, ids, digests, documents), its payments the same, and
        `records(stamps)` gives back exactly the records of those stamps. Returns whether
        there was a stamped read to check."""
        check = "stamped read"
        plain = self._read(self.count, check)
        raw, base_dir = self._source(self.count)
        try:
            stamped = self._build(raw, base_dir, check).stamped_read()
        except ConnectorError as exc:
            _fail(check, f"stamped_read() failed on the sample: {exc}", "check stamped_read()")
        if stamped is None:
            return False
        fix = "stamps must describe the records read() yields: same key, ids, digest"
        try:
            with stamped:
                items = list(stamped.stamps())
                stamps = [item for item in items if isinstance(item, RecordStamp)]
                asked = stamps[::2]
                again = list(stamped.records(asked))
        except ConnectorError as exc:
            _fail(check, f"the sample's stamped read failed: {exc}", "check stamped_read()")
        records = plain.records
        _compare_stamps(check, stamps, records, fix)
        payments = [item.key for item in items if isinstance(item, PaymentRecord)]
        if payments != [item.key for item in plain.items if isinstance(item, PaymentRecord)]:
            _fail(check, "the stamps phase yields other payments than read()", fix)
        wanted = {stamp.digest for stamp in asked}
        expected = sorted(
            (record.key, record.digest or "") for record in records if record.digest in wanted
        )
        got = sorted((record.key, record.digest or "") for record in again)
        if got != expected:
            _fail(
                check,
                f"records() of {len(asked)} stamps gave {len(got)} records, not the "
                f"{len(expected)} with their digests",
                "yield every record whose digest is one of the stamps' (and no other)",
            )
        return True


def _compare_stamps(
    check: str, stamps: list[RecordStamp], records: list[SourceRecord], fix: str
) -> None:
    """Each stamp describes the plain read's record at its place."""
    if [stamp.key for stamp in stamps] != [record.key for record in records]:
        _fail(check, "the stamps' keys are not the plain read's record keys, in order", fix)
    for stamp, record in zip(stamps, records, strict=True):
        if stamp.digest != record.digest or not stamp.digest:
            _fail(
                check,
                f"record {record.key}: the stamp's digest {stamp.digest!r} is not the "
                f"record's {record.digest!r}",
                f"{fix}; a stamped read needs digests on its records",
            )
        if stamp.has_document != (record.document is not None):
            _fail(check, f"record {record.key}: has_document is {stamp.has_document}", fix)
        if record_accounting_id(stamp.fields) != record_accounting_id(record.fields):
            _fail(check, f"record {record.key}: the stamp carries other ids", fix)
