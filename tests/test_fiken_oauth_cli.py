"""`kravia-sync auth fiken` as a person runs it, against the Fiken simulator: the consent
address printed, Fiken's answer taken on the local redirect URI or pasted, its state checked,
the code exchanged and the refresh token stored; nothing secret printed."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fiken_oauth_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    Fiken,
    config_for,
    free_port,
    oauth_source,
    running_fiken,
    stored,
    token_path,
)
from support import cli_command, cli_env, run_cli


@pytest.fixture
def fiken() -> Iterator[Fiken]:
    with running_fiken() as served:
        yield served


def start_auth(
    directory: Path, fiken: Fiken, *args: str, redirect_uri: str
) -> tuple[subprocess.Popen[str], str]:
    """`kravia-sync auth fiken ARGS` running, and the consent address it printed."""
    config_for(directory, "http://127.0.0.1:9/", oauth_source(fiken, redirect_uri=redirect_uri))
    env = cli_env(FIKEN_CLIENT_SECRET=CLIENT_SECRET, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        cli_command("auth", "fiken", *args),
        cwd=directory,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(fiken.oauth_url + "authorize?"):
            return process, line.strip()
    process.wait(30)
    stderr = process.stderr.read() if process.stderr else ""
    raise AssertionError("no consent address printed:\n" + "".join(seen) + stderr)


def finish(process: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str]:
    out, err = process.communicate(stdin, timeout=60)
    return process.returncode, out + err


def no_secrets(fiken: Fiken, text: str) -> None:
    for secret in (CLIENT_SECRET, *fiken.oauth.issued):
        assert secret not in text


class TestConsent:
    def test_the_answer_on_the_local_redirect_uri_is_exchanged_and_stored(
        self, fiken: Fiken, tmp_path: Path
    ) -> None:
        """The browser follows Fiken's redirect to the listener; the refresh token Fiken issued
        is in the file (0600)."""
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        process, url = start_auth(tmp_path, fiken, redirect_uri=redirect_uri)

        query = httpx.URL(url).params
        assert (query["response_type"], query["client_id"]) == ("code", CLIENT_ID)
        assert query["redirect_uri"] == redirect_uri
        assert len(query["state"]) >= 20
        page = httpx.get(url, follow_redirects=True, timeout=10)  # the browser
        code, output = finish(process)

        assert page.status_code == 200
        assert code == 0, output
        assert "consent is stored in" in output
        assert "the consent covers the company" in output
        assert fiken.oauth.valid_refresh_tokens() == {stored(tmp_path)}
        assert stat.S_IMODE(token_path(tmp_path).stat().st_mode) == 0o600
        no_secrets(fiken, output + page.text)

    def test_a_pasted_address_is_exchanged_and_stored(self, fiken: Fiken, tmp_path: Path) -> None:
        """--paste: the person copies the address the browser was sent to."""
        process, url = start_auth(
            tmp_path, fiken, "--paste", redirect_uri="https://example.com/fiken/callback"
        )
        sent_to = httpx.get(url, timeout=10).headers["location"]
        code, output = finish(process, sent_to + "\n")

        assert code == 0, output
        assert fiken.oauth.valid_refresh_tokens() == {stored(tmp_path)}
        no_secrets(fiken, output)

    def test_an_answer_with_another_state_is_refused_and_nothing_stored(
        self, fiken: Fiken, tmp_path: Path
    ) -> None:
        """A code with a state this consent did not start (a forged redirect): refused, no
        exchange, no file."""
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        process, _url = start_auth(tmp_path, fiken, redirect_uri=redirect_uri)
        forged = fiken.oauth.issue_code(redirect_uri, "attackers-state")
        page = httpx.get(
            redirect_uri, params={"code": forged, "state": "attackers-state"}, timeout=10
        )
        code, output = finish(process)

        assert page.status_code == 400
        assert code == 1
        assert "state is not the one this consent was started with" in output
        assert fiken.oauth.counts["token_code"] == 0
        assert not token_path(tmp_path).exists()
        no_secrets(fiken, output + page.text)

    def test_a_pasted_address_with_another_state_is_refused(
        self, fiken: Fiken, tmp_path: Path
    ) -> None:
        process, _url = start_auth(
            tmp_path, fiken, "--paste", redirect_uri="https://example.com/fiken/callback"
        )
        forged = fiken.oauth.issue_code("https://example.com/fiken/callback", "other")
        code, output = finish(
            process, f"https://example.com/fiken/callback?code={forged}&state=other\n"
        )

        assert code == 1
        assert "state is not the one" in output
        assert not token_path(tmp_path).exists()
        no_secrets(fiken, output)

    def test_a_refused_consent_says_so(self, fiken: Fiken, tmp_path: Path) -> None:
        fiken.oauth.deny_next()
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        process, url = start_auth(tmp_path, fiken, redirect_uri=redirect_uri)
        httpx.get(url, follow_redirects=True, timeout=10)
        code, output = finish(process)

        assert code == 1
        assert "the consent was refused at Fiken (access_denied" in output
        assert not token_path(tmp_path).exists()

    def test_code_and_state_on_the_command_line(self, fiken: Fiken, tmp_path: Path) -> None:
        """--code with the address and --state; the same code twice is refused by Fiken."""
        redirect_uri = "https://example.com/fiken/callback"
        config_for(tmp_path, "http://127.0.0.1:9/", oauth_source(fiken, redirect_uri=redirect_uri))
        env = cli_env(FIKEN_CLIENT_SECRET=CLIENT_SECRET)
        given = fiken.oauth.issue_code(redirect_uri, "my-state-123")
        address = f"{redirect_uri}?code={given}&state=my-state-123"

        wrong = run_cli("auth", "fiken", "--code", address, "--state", "x", cwd=tmp_path, env=env)
        done = run_cli(
            "auth", "fiken", "--code", address, "--state", "my-state-123", cwd=tmp_path, env=env
        )
        again = run_cli(
            "auth", "fiken", "--code", address, "--state", "my-state-123", cwd=tmp_path, env=env
        )

        assert wrong.returncode == 1
        assert "state is not the one" in wrong.stderr
        assert done.returncode == 0, done.stdout + done.stderr
        assert fiken.oauth.valid_refresh_tokens() == {stored(tmp_path)}
        assert again.returncode == 1
        assert "Fiken refused the authorization code" in again.stderr
        for result in (wrong, done, again):
            no_secrets(fiken, result.stdout + result.stderr)

    def test_a_personal_token_source_is_not_for_auth(self, fiken: Fiken, tmp_path: Path) -> None:
        source = (
            oauth_source(fiken)
            .split("[sources.settings.oauth]")[0]
            .replace("[sources.settings]\n", '[sources.settings]\ntoken_env = "FIKEN_TOKEN"\n', 1)
        )
        config_for(tmp_path, "http://127.0.0.1:9/", source)

        result = run_cli("auth", "fiken", cwd=tmp_path, env=cli_env())

        assert result.returncode == 1
        assert "uses a personal API token" in result.stderr
