"""The conformance kit's checks of the settings model, the records and their ids."""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import ValidationError

from kravia_sync.connector import ConnectorSettings
from kravia_sync.testing._kit_base import KitBase
from kravia_sync.testing._kit_helpers import _difference, _fail

__all__ = ["RecordChecks"]

_UNKNOWN_KEY = "no_such_setting"
# A value no ordinary setting accepts: the error must still name the key.
_WRONG_VALUE: Final = {"kravia_sync_conformance": [["not a setting"]]}


class RecordChecks(KitBase):
    """Settings, records and stable ids."""

    # -- settings ------------------------------------------------------------------------

    def check_settings_model(self) -> None:
        """`settings_model` is a `ConnectorSettings` and has a JSON Schema."""
        check = "settings model"
        model = self.connector.settings_model
        if not (isinstance(model, type) and issubclass(model, ConnectorSettings)):
            _fail(
                check,
                f"{self.connector.__name__}.settings_model is {model!r}",
                "set settings_model to a subclass of kravia_sync.ConnectorSettings",
            )
        if model is ConnectorSettings:
            _fail(
                check,
                f"{self.connector.__name__}.settings_model is the bare ConnectorSettings",
                "declare a settings model of your own, even a small one",
            )
        try:
            json.dumps(model.model_json_schema())
        except Exception as exc:
            _fail(
                check,
                f"no JSON Schema for {model.__name__}: {exc}",
                "use field types pydantic can describe (kravia-sync connectors shows it)",
            )

    def check_settings_errors(self) -> None:
        """An unknown key, each required key left out and each key given a value of the wrong
        type fail validation with an error that names the key."""
        check = "settings errors"
        raw, base_dir = self._source(self.count)
        self._build(raw, base_dir, check)
        cases: list[tuple[str, str, dict[str, Any]]] = [
            (_UNKNOWN_KEY, "an unknown key", {**raw, _UNKNOWN_KEY: "x"})
        ]
        for name, info in self.connector.settings_model.model_fields.items():
            key = info.alias or name
            if info.is_required() and key in raw:
                left_out = {k: v for k, v in raw.items() if k != key}
                cases.append((key, f"without the required {key!r}", left_out))
        cases += [(key, f"a wrong value for {key!r}", {**raw, key: _WRONG_VALUE}) for key in raw]
        for key, what, settings in cases:
            try:
                self.connector.from_settings(settings, base_dir=base_dir)
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_input=False)
                named = {str(part) for error in errors for part in error["loc"]}
                if key not in named and not any(key in str(e["msg"]) for e in errors):
                    _fail(
                        check,
                        f"settings with {what} failed, but the error does not name {key!r}: "
                        + "; ".join(str(e["msg"]) for e in errors),
                        "let pydantic validate each key in its own field, or name the key in "
                        "the message of a model validator",
                    )
            except Exception as exc:
                _fail(
                    check,
                    f"settings with {what} raised {type(exc).__name__}: {exc}",
                    "validate settings in settings_model so that a bad one is a pydantic "
                    "ValidationError naming the key (validators raise ValueError, and do not "
                    "assume a key is there or has the right type)",
                )
            else:
                if key == _UNKNOWN_KEY:
                    _fail(
                        check,
                        f"settings with {what} were accepted",
                        "keep ConnectorSettings' model_config (extra='forbid'), so that a "
                        "misspelt key is an error rather than silently ignored",
                    )
                if what.startswith("without"):
                    _fail(check, f"settings {what} were accepted", f"check {key!r}")

    # -- records -------------------------------------------------------------------------

    def check_records(self) -> None:
        """Every item of the sample is a valid invoice or payment; the count is right; ids are
        unique."""
        read = self._read(self.count, "records")
        found = len(read.invoices)
        if found != self.count:
            _fail(
                "records",
                f"a sample of {self.count} invoices yielded {found}",
                "yield one SourceRecord per invoice of the source (and check sample())",
            )

    def check_stable_ids(self) -> None:
        """Two reads of one source yield the same ids, and each invoice says the same."""
        check = "stable ids"
        first = self._read(self.count, check)
        second = self._read(self.count, check)
        fix = (
            "derive `key` and the accounting id from the source's own identity (the invoice "
            "number, a primary key, a file name and line), never from a counter, a clock or "
            "a random value"
        )
        keys = (sorted(r.key for r in first.records), sorted(r.key for r in second.records))
        if keys[0] != keys[1]:
            changed = sorted(set(keys[0]) ^ set(keys[1]))[:3]
            _fail(check, f"record keys differ between two reads (e.g. {changed})", fix)
        if set(first.invoices) != set(second.invoices):
            changed = sorted(set(first.invoices) ^ set(second.invoices))[:3]
            _fail(check, f"accounting invoice ids differ between two reads (e.g. {changed})", fix)
        for invoice_id, invoice in first.invoices.items():
            if invoice.fingerprint() != second.invoices[invoice_id].fingerprint():
                _fail(
                    check,
                    f"invoice {invoice_id} says something else on a second read of an unchanged "
                    f"source ({_difference(invoice, second.invoices[invoice_id])})",
                    "yield only what the source holds: no read times or counters in fields",
                )
        digests = (
            {r.key: r.digest for r in first.records},
            {r.key: r.digest for r in second.records},
        )
        if digests[0] != digests[1]:
            _fail(
                check,
                "record digests differ between two reads of an unchanged source",
                "compute `digest` from the record's content only (or leave it None)",
            )
