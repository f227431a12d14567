"""Reading Kravia's answers tolerantly where they may vary, strictly where money or identity
depends on them (`kravia_sync.kravia.client`, the module of assumptions)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kravia_sync.kravia.answers import (
    available_actions,
    can_start,
    case_progress,
    has_invoice_document,
    parse_dotnet_time,
    parse_http_date,
    parse_register_id,
)
from kravia_sync.kravia.errors import Failure, KraviaError, start_already_done
from kravia_sync.lifecycle import Details


class TestRegisterAnswer:
    @pytest.mark.parametrize(
        "body",
        [41, {"id": 41}, {"invoiceId": 41}, {"Id": "41"}, {"id": 41, "invoiceId": 41, "x": 1}],
    )
    def test_plausible_shapes_give_the_id(self, body):
        """A bare integer, `id` or `invoiceId` (any case, digit text too) is the new id."""
        assert parse_register_id(body) == 41

    @pytest.mark.parametrize(
        "body", [{"id": 41, "invoiceId": 42}, {"Id": 1, "InvoiceId": "2"}, {"id": "x"}, {}, "41"]
    )
    def test_disagreeing_or_missing_ids_are_refused(self, body):
        """Two different ids, an unreadable one, or none: ValueError, never a guess (the
        engine then looks the case up)."""
        with pytest.raises(ValueError, match="register answer"):
            parse_register_id(body)


class TestAvailableActions:
    @pytest.mark.parametrize(
        ("actions", "startable"),
        [
            (["Start", "Pause"], True),
            (["Pause"], False),
            ([], False),
            ([{"name": "Start"}], True),
            ([{"action": "Pause"}], False),
            ([{"actionName": "start"}], True),
            ({"Start": True, "Pause": False}, True),
            ({"Start": False, "Resume": True}, False),
        ],
    )
    def test_each_plausible_shape_is_read(self, actions, startable):
        """Names, objects naming the action, or an object of booleans: Start is read."""
        assert can_start({"availableActions": actions}) is startable

    @pytest.mark.parametrize(
        "actions",
        [None, "Start", [{"id": 3}], [7], {"Start": "yes"}, {"Pause": True}],
    )
    def test_anything_else_says_nothing(self, actions):
        """Missing, a string, entries without a name, non-boolean flags, or an object that
        does not mention Start: unknown (None), never "not startable"."""
        details = {} if actions is None else {"availableActions": actions}
        assert can_start(details) is None

    def test_names_are_lower_cased(self):
        """The set of actions is compared case-insensitively."""
        assert available_actions({"availableactions": ["Start", "PAUSE"]}) == {"start", "pause"}


class TestDocuments:
    @pytest.mark.parametrize(
        ("documents", "documented"),
        [
            ([{"type": "Invoice"}], True),
            ([{"documentType": "invoice"}], True),
            ([{"type": "Reminder"}], False),
            ([], False),
            ([{"type": "Reminder"}, {"id": 4}], None),  # one whose type we cannot read
            (None, None),  # no list at all
        ],
    )
    def test_an_invoice_copy_is_seen_or_unknown(self, documents, documented):
        """A copy of type Invoice is seen in either key; no list, or an entry we cannot read
        (which could be it), says nothing."""
        details = {} if documents is None else {"documents": documents}
        assert has_invoice_document(details) is documented


class TestCaseProgress:
    @pytest.mark.parametrize("status", ["CollectionStarted", "Paused", "Closed"])
    def test_a_status_after_the_start_means_started(self, status):
        """Whatever the actions say, these statuses mean collection was started."""
        assert case_progress({"status": status}).started is True

    def test_both_facts_read_together(self):
        """Copy and start are read from one answer."""
        details = {"status": "Registered", "documents": [], "availableActions": ["Start"]}

        assert case_progress(details) == Details(documented=False, started=False)


class TestAlreadyStarted:
    @pytest.mark.parametrize(
        ("status", "text", "done"),
        [
            (400, "Action Start is not available for this invoice.", True),
            (409, "Collection already started", True),
            (400, "Debtor address is missing", False),
            (500, "not available", False),
        ],
    )
    def test_only_a_refusal_that_says_so_counts(self, status, text, done):
        """A 4xx saying Start is not available (or already done) reads as started; other
        refusals do not."""
        failure = Failure.TERMINAL if status < 500 else Failure.AMBIGUOUS
        error = KraviaError(failure, f"Kravia answered {status}: {text}", status=status)

        assert start_already_done(error) is done


class TestKraviasClock:
    def test_the_date_header_is_read_as_utc(self):
        """An HTTP Date header becomes an aware UTC time; garbage or none is None."""
        assert parse_http_date("Sat, 05 Dec 2026 01:33:54 GMT") == datetime(
            2026, 12, 5, 1, 33, 54, tzinfo=UTC
        )
        assert parse_http_date("yesterday") is None
        assert parse_http_date(None) is None

    def test_dotnet_times_are_read_to_the_microsecond(self):
        """Kravia's lastUpdatedTime (7 fraction digits, no zone: UTC) is read exactly enough."""
        assert parse_dotnet_time("2026-12-05T01:33:54.9180160") == datetime(
            2026, 12, 5, 1, 33, 54, 918016, tzinfo=UTC
        )
        assert parse_dotnet_time("2026-12-05T01:33:54") == datetime(
            2026, 12, 5, 1, 33, 54, tzinfo=UTC
        )
        assert parse_dotnet_time("soon") is None

    @pytest.mark.parametrize(
        "text",
        [
            "2026-12-05T02:33:54.5+01:00",
            "2026-12-05T01:33:54.5000000Z",
            "2026-12-05T00:33:54.5-01:00",
            "2026-12-05T01:33:54.5",
        ],
    )
    def test_a_dotnet_time_is_read_in_the_zone_it_names(self, text):
        """A time naming its zone is read in it (never taken as UTC as written)."""
        assert parse_dotnet_time(text) == datetime(2026, 12, 5, 1, 33, 54, 500000, tzinfo=UTC)

    @pytest.mark.parametrize(
        "text", ["2026-12-05T01:33:54.5x", "2026-12-05T01:33:54+25:00", "2026-12-05T01:33:54+"]
    )
    def test_a_dotnet_time_that_cannot_be_read_is_none(self, text):
        assert parse_dotnet_time(text) is None
