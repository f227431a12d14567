"""Which Kravia a state store belongs to, and which id prefix each of its sources uses.

Both are fixed once cases exist: a store used against another Kravia would take every case
as known there, and a source whose prefix changed would register every open invoice again.
Checked before a pass reads or sends anything.
"""

from __future__ import annotations

from kravia_sync.engine.errors import PassFailedError
from kravia_sync.settings import ConfigError, Settings, SourceConfig
from kravia_sync.state.store import StateStore

__all__ = ["KRAVIA_TARGET", "StoreTarget", "kravia_target"]

KRAVIA_TARGET = "kravia_target"  # meta key: the Kravia (base URL, creditor) of this store


def kravia_target(settings: Settings) -> str:
    """Which Kravia (base URL and creditor) a state store's cases belong to."""
    return f"{settings.kravia.base_url} creditor {settings.kravia.creditor_id}"


class StoreTarget:
    """The checks of one configuration against one state store."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store

    def check_target(self, *, dry_run: bool) -> None:
        """A state store keeps one Kravia's cases (its ids, its mirror): used against another
        Kravia or creditor, every case would look known there, and payments would reach the
        wrong cases. The first pass that reached Kravia records which; any other is
        refused."""
        target = self._target()
        stored = self.store.meta(KRAVIA_TARGET)
        if stored == target or (stored is None and dry_run):
            return
        if stored is not None:
            raise PassFailedError(
                f"this state store belongs to Kravia at {stored}, but the configuration names "
                f"{target}. A state store holds one Kravia's cases: give this Kravia a state "
                "store of its own (state.path), or put kravia.base_url and kravia.creditor_id "
                "back"
            )

    def _target(self) -> str:
        return kravia_target(self.settings)

    def record_target(self) -> None:
        """Once a case of this store is in Kravia, the store is that Kravia's (a refused
        configuration, a wrong creditor, leaves nothing to protect yet)."""
        if self.store.meta(KRAVIA_TARGET) is None and self.store.has_kravia_cases():
            self.store.set_meta(KRAVIA_TARGET, self._target())

    def check_prefix(self, source: SourceConfig, *, dry_run: bool) -> None:
        """A source's accountingInvoiceIds are its id_prefix and its own ids, and Kravia keeps
        them for good: the prefix may not change while the source has cases (every open
        invoice would look new and be registered again)."""
        stored = self.store.source_prefix(source.name)
        if stored == source.id_prefix:
            return
        cases = self.store.source_case_count(source.name)
        if stored is None and not self.store.cases_outside_prefix(source.name, source.id_prefix):
            stored = source.id_prefix  # an older state store: its cases agree with the file
        elif stored is None:
            stored = "(another prefix)"
        elif cases == 0:
            stored = source.id_prefix  # nothing sent under the old one yet
        if stored != source.id_prefix:
            raise ConfigError(
                f"sources.{source.name}.id_prefix: changed to {source.id_prefix!r} while "
                f"{cases} case(s) of this source are known under {stored!r}; Kravia keeps the "
                "accountingInvoiceIds it was sent, so every open invoice would look new. Put "
                f"the prefix back to {stored!r}. (To keep several sources apart, give the new "
                "source a prefix of its own; to start this source afresh under a new prefix, "
                "use a new source name and a new state store, knowing Kravia's cases are "
                "matched by accountingInvoiceId only.)"
            )
        if not dry_run:
            self.store.set_meta(f"id_prefix:{source.name}", source.id_prefix)
