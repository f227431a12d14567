"""Secrets never reach output, in any spelling of them, and redaction garbles nothing else."""

from __future__ import annotations

import io
import json
import sys
import threading
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from support import Sim, cli_env, run_cli, write_config

import kravia_sync.logging as logging_module
from kravia_sync.logging import (
    REDACTED,
    configure_logging,
    get_logger,
    redact,
    redact_structure,
    register_secrets,
)

# Quote, backslash, slash, percent, space, non-ASCII: every way output re-spells a string.
AWKWARD = 'pw "Blåbær"\\7%/æ'


@pytest.fixture(autouse=True)
def own_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test registers its secrets in a redactor of its own (others in this process keep
    theirs), so that a short one such as `x` is not redacted from other tests' output."""
    monkeypatch.setattr(logging_module, "_redactor", logging_module._Redactor())


class TestEverySpelling:
    @pytest.mark.parametrize(
        "spelled",
        [
            pytest.param(AWKWARD, id="as it is"),
            pytest.param(json.dumps(AWKWARD), id="json"),
            pytest.param(json.dumps(AWKWARD, ensure_ascii=False), id="json-unicode"),
            pytest.param(repr(AWKWARD), id="repr"),
            pytest.param(quote(AWKWARD, safe=""), id="url-path"),
            pytest.param(quote_plus(AWKWARD), id="url-query"),
        ],
    )
    def test_a_secret_is_found_however_it_is_written(self, spelled: str) -> None:
        register_secrets([AWKWARD])
        text = f"connect failed for {spelled} at db:5432"
        redacted = redact(text)
        assert redacted.startswith("connect failed for ")
        assert redacted.endswith(" at db:5432")
        for fragment in ("Blåbær", "Bl\\u00e5b\\u00e6r", "Bl%C3%A5b%C3%A6r"):
            assert fragment not in redacted

    def test_json_output_stays_json(self) -> None:
        register_secrets([AWKWARD])
        rendered = redact(json.dumps({"error": f"refused {AWKWARD}", "max_in_flight": 16}))
        assert json.loads(rendered) == {"error": f"refused {REDACTED}", "max_in_flight": 16}

    def test_a_log_line_of_an_object_holding_the_secret(self) -> None:
        """JSON log lines render objects by their repr and escape it: the escaped secret is
        found in the finished line."""

        class Connection:
            def __repr__(self) -> str:
                return f"Connection(password={AWKWARD!r})"

        register_secrets([AWKWARD])
        stream = io.StringIO()
        configure_logging(level="info", fmt="json", stream=stream)
        get_logger("test").info("connecting", connection=Connection())
        line = json.loads(stream.getvalue())
        assert line["connection"] == f"Connection(password='{REDACTED}')"


class TestShortSecrets:
    def test_a_tiny_secret_inside_other_words_is_left_alone(self) -> None:
        register_secrets(["x", "pw"])
        text = "max_in_flight=16 pwd pw-run"
        assert redact(text) == f"max_in_flight=16 pwd {REDACTED}-run"

    def test_a_tiny_secret_on_its_own_is_redacted(self) -> None:
        register_secrets(["x", "-ab"])
        assert redact('{"token": "x"}') == f'{{"token": "{REDACTED}"}}'
        assert redact("Bearer x") == f"Bearer {REDACTED}"
        # Its edge is punctuation: what stands next to that edge does not matter.
        assert redact("key-ab") == f"key{REDACTED}"

    @pytest.mark.parametrize(
        "text",
        [
            "password=abc123_old",
            "PGPASSWORD_abc123",
            repr("password:\nabc123"),
            json.dumps("pw\tabc123"),
            json.dumps("æabc123"),
            "?dsn=" + quote_plus("postgresql://kravia:abc123@db/erp"),
            "Passabc123word",
        ],
    )
    def test_a_secret_of_four_characters_or_more_is_redacted_wherever_it_is(
        self, text: str
    ) -> None:
        register_secrets(["abc123"])
        assert "abc123" not in redact(text)
        assert REDACTED in redact(text)

    def test_a_long_secret_is_redacted_inside_other_text(self) -> None:
        register_secrets(["s3cr3t-Token"])
        assert redact("ids3cr3t-Token42") == f"id{REDACTED}42"

    @pytest.mark.parametrize("token", ["x", "1", "true"])
    def test_a_tiny_token_leaves_the_json_summary_whole(
        self, sim: Sim, tmp_path: Path, token: str
    ) -> None:
        """`KRAVIA_TOKEN=x` (a quick try against the simulator) gives a summary that is JSON
        with all its keys and numbers: before, every `x` in it was redacted, `max_in_flight`
        included, and a token `1` took the place of every 1 in it."""
        (tmp_path / "invoices").mkdir()
        write_config(tmp_path, sim.base_url)
        result = run_cli("reconcile", "--json", cwd=tmp_path, env=cli_env(KRAVIA_TOKEN=token))
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert isinstance(summary["pacing"]["max_in_flight"], int)
        assert summary["run_id"] == 1
        assert summary["error"] is None
        assert REDACTED not in result.stdout


class TestStructures:
    def test_strings_are_redacted_and_numbers_kept(self) -> None:
        register_secrets(["1", "hemmelig-pw"])
        payload = {"run_id": 1, "errors": ["token 1 refused", ("hemmelig-pw",)], "hemmelig-pw": 1}
        assert redact_structure(payload) == {
            "run_id": 1,
            "errors": [f"token {REDACTED} refused", [REDACTED]],
            REDACTED: 1,
        }


class TestRegisteringWhileRedacting:
    def test_every_secret_registered_is_found_after_a_storm_of_both(self) -> None:
        """Sources register tokens from worker threads (an OAuth2 token fetched in a read)
        while the loop logs: no secret may be left out of what redaction looks for."""
        secrets = [f"token-{n:04d}-Qz" for n in range(200)]
        stop = threading.Event()

        def keep_redacting() -> None:
            while not stop.is_set():
                redact(" ".join(secrets[:50]))

        def register_some(part: list[str]) -> None:
            for secret in part:
                register_secrets([secret])

        old_interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            readers = [threading.Thread(target=keep_redacting) for _ in range(2)]
            writers = [
                threading.Thread(target=register_some, args=(secrets[n::4],)) for n in range(4)
            ]
            for thread in readers + writers:
                thread.start()
            for thread in writers:
                thread.join()
            stop.set()
            for thread in readers:
                thread.join()
        finally:
            sys.setswitchinterval(old_interval)
        assert redact(" ".join(secrets)) == " ".join([REDACTED] * len(secrets))
