"""Fiken with OAuth2: the connector renews its access from the stored refresh token, stores
each rotated one before using what came with it, and tells a person what to do when Fiken
refuses; `check` asks Fiken with the credentials; nothing secret is ever shown.

Fiken's API description: a refresh returns "a fresh access token along with a possibly updated
refresh token"; a refused grant is `{"error": "invalid_grant", …}`; access tokens expire
(`expires_in`, about a day in its example).
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from fiken_oauth_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    SLUG,
    Fiken,
    config_for,
    connector,
    oauth_source,
    running_fiken,
    seed,
    stored,
    token_path,
)
from pydantic import SecretStr
from support import Sim, cli_env, run_cli, run_pass

from connectors._fiken_consent import exchange_code
from connectors._fiken_oauth import FikenOAuthSettings
from connectors._fiken_tokens import RefreshTokenFile
from connectors.fiken import FikenSettings
from kravia_sync.connector import ConnectorError, SourceRecord
from kravia_sync.testing.fiken import FikenCompany, demo_company


@pytest.fixture(autouse=True)
def client_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FIKEN_CLIENT_SECRET", CLIENT_SECRET)
    return CLIENT_SECRET


@pytest.fixture
def company() -> FikenCompany:
    return demo_company(invoices=60, customers=12, slug=SLUG)


@pytest.fixture
def fiken(company: FikenCompany) -> Iterator[Fiken]:
    with running_fiken(company) as served:
        yield served


def oslo_today() -> date:
    return datetime.now(ZoneInfo("Europe/Oslo")).date()


def records(items: list[object]) -> list[SourceRecord]:
    return [item for item in items if isinstance(item, SourceRecord)]


class TestSettings:
    def test_a_personal_token_or_oauth_exactly_one(self) -> None:
        """Neither, or both, is refused with what to give."""
        oauth = {
            "client_id": "app",
            "client_secret_env": "FIKEN_CLIENT_SECRET",
            "refresh_token_file": "token",
        }
        with pytest.raises(ValueError, match="exactly one"):
            FikenSettings.model_validate({"company_slug": SLUG})
        with pytest.raises(ValueError, match=r"personal API token .* or OAuth2"):
            FikenSettings.model_validate(
                {"company_slug": SLUG, "token_env": "FIKEN_TOKEN", "oauth": oauth}
            )
        with pytest.raises(ValueError, match="client_secret_env"):
            FikenSettings.model_validate(
                {"company_slug": SLUG, "oauth": {**oauth, "client_secret_env": None}}
            )
        parsed = FikenSettings.model_validate(
            {"company_slug": SLUG, "oauth": oauth, "credit_notes_since": "2000-01-01"}
        )
        assert parsed.oauth is not None
        assert parsed.oauth.token_endpoint == "https://fiken.no/oauth/token"
        assert parsed.oauth.authorize_endpoint == "https://fiken.no/oauth/authorize"


class TestRefresh:
    def test_a_read_renews_access_and_stores_the_rotated_refresh_token(
        self, fiken: Fiken, company: FikenCompany, tmp_path: Path
    ) -> None:
        """One refresh for the whole read; the file then holds the new token, 0600, and the
        one it held before is refused by Fiken."""
        old = seed(fiken, tmp_path)
        items = list(connector(fiken, tmp_path).read())

        unsettled = [i for i in company.invoices if not i["sale"]["settled"]]
        assert len(records(items)) == len(unsettled)
        new = stored(tmp_path)
        assert new != old
        assert fiken.oauth.valid_refresh_tokens() == {new}
        assert fiken.oauth.counts["token_refresh"] == 1
        assert stat.S_IMODE(token_path(tmp_path).stat().st_mode) == 0o600

        again = list(connector(fiken, tmp_path).read())  # a new process: a new refresh

        assert len(records(again)) == len(unsettled)
        assert stored(tmp_path) not in {old, new}
        assert fiken.oauth.counts["refused_refresh"] == 0

    def test_without_rotation_the_file_is_left_as_it_is(self, fiken: Fiken, tmp_path: Path) -> None:
        """Fiken may answer the same refresh token back: nothing to write."""
        fiken.oauth.rotate = False
        old = seed(fiken, tmp_path)
        before = token_path(tmp_path).stat().st_mtime_ns

        assert records(list(connector(fiken, tmp_path).read()))

        assert stored(tmp_path) == old
        assert token_path(tmp_path).stat().st_mtime_ns == before

    def test_an_access_token_expiring_mid_read_is_renewed_and_the_read_completes(
        self, fiken: Fiken, company: FikenCompany, tmp_path: Path
    ) -> None:
        """Fiken answers 401 to the expired token; the connector refreshes once and goes on."""
        seed(fiken, tmp_path)
        reading = connector(fiken, tmp_path).read()
        first = [next(reading) for _ in range(30)]  # past the first page of 25
        fiken.oauth.expire_access_tokens()
        rest = list(reading)

        unsettled = [i for i in company.invoices if not i["sale"]["settled"]]
        assert len(records([*first, *rest])) == len(unsettled)
        assert fiken.oauth.counts["token_refresh"] == 2
        assert fiken.simulator.calls()["statuses"][401] == 1
        assert fiken.oauth.valid_refresh_tokens() == {stored(tmp_path)}

    def test_the_token_is_renewed_before_it_expires_without_a_401(
        self, fiken: Fiken, tmp_path: Path
    ) -> None:
        """Cached until shortly before expires_in, then refreshed ahead of the API call."""
        seed(fiken, tmp_path)
        source = connector(fiken, tmp_path)
        now = [1000.0]
        source._authenticator._clock = lambda: now[0]  # type: ignore[attr-defined]
        assert source.check() == []
        now[0] += 3600 - 400  # before the margin: the cached token
        assert source.check() == []
        assert fiken.oauth.counts["token_refresh"] == 1
        now[0] += 200  # within five minutes of expiry: renewed first
        assert source.check() == []

        assert fiken.oauth.counts["token_refresh"] == 2
        assert 401 not in fiken.simulator.calls()["statuses"]

    def test_a_refused_refresh_token_says_to_run_auth_again(
        self, fiken: Fiken, tmp_path: Path
    ) -> None:
        """invalid_grant (the consent withdrawn): a failed read naming the command."""
        token = seed(fiken, tmp_path)
        fiken.oauth.revoke_all()

        with pytest.raises(ConnectorError) as failure:
            list(connector(fiken, tmp_path).read())

        message = str(failure.value)
        assert "invalid_grant" in message
        assert "kravia-sync auth fiken" in message
        assert token not in message
        assert stored(tmp_path) == token  # left for a person to see; never deleted

    def test_no_refresh_token_yet_says_to_run_auth(self, fiken: Fiken, tmp_path: Path) -> None:
        with pytest.raises(ConnectorError, match="run `kravia-sync auth fiken` once"):
            list(connector(fiken, tmp_path).read())

    def test_bad_client_credentials_are_named(
        self, fiken: Fiken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seed(fiken, tmp_path)
        monkeypatch.setenv("FIKEN_CLIENT_SECRET", "not-the-secret-Xw4")

        with pytest.raises(ConnectorError) as failure:
            list(connector(fiken, tmp_path).read())

        assert "refused the client id and secret" in str(failure.value)
        assert "not-the-secret-Xw4" not in str(failure.value)


class TestSecrets:
    def test_an_http_error_carrying_the_whole_request_shows_no_secret(
        self, fiken: Fiken, tmp_path: Path
    ) -> None:
        """A transport error whose message holds the token request's body and headers (as
        encoded on the wire): neither the refresh token, the client secret nor the Basic
        credentials survive into the error or its repr."""
        token = seed(fiken, tmp_path)
        source = connector(fiken, tmp_path, retry={"attempts": 1})

        def explode(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError(
                f"failed sending {request.content.decode()} {dict(request.headers)}"
            )

        source.http.transport = httpx.MockTransport(explode)
        with pytest.raises(ConnectorError) as failure:
            list(source.read())

        text = str(failure.value) + repr(failure.value)
        assert "failed sending grant_type=refresh_token" in text
        assert token.rstrip("=") not in text
        assert CLIENT_SECRET not in text
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        assert basic not in text
        assert "Basic ***" in text

    def test_the_code_exchange_shows_no_secret_in_its_errors(self, tmp_path: Path) -> None:
        settings = FikenOAuthSettings.model_validate(
            {
                "client_id": CLIENT_ID,
                "client_secret_env": "FIKEN_CLIENT_SECRET",
                "refresh_token_file": "token",
            }
        )
        code = SecretStr("auth-code-Jq8=")

        def explode(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError(f"{request.content.decode()} {dict(request.headers)}")

        with pytest.raises(ConnectorError) as failure:
            exchange_code(
                settings,
                settings.client_secret(tmp_path),
                code,
                "state-1",
                transport=httpx.MockTransport(explode),
            )

        text = str(failure.value) + repr(failure.value)
        assert "grant_type=authorization_code" in text
        assert "auth-code-Jq8" not in text
        assert CLIENT_SECRET not in text
        assert repr(code) == "SecretStr('**********')"


class TestRotationIsStoredFirst:
    def test_the_new_refresh_token_is_stored_before_any_api_call_uses_its_access_token(
        self, fiken: Fiken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At the moment the new token is written, Fiken's API has not been called yet."""
        seed(fiken, tmp_path)
        seen_at_save: list[int] = []
        save = RefreshTokenFile.save

        def watching(self: RefreshTokenFile, token: str) -> None:
            seen_at_save.append(fiken.simulator.calls()["total"])
            save(self, token)

        monkeypatch.setattr(RefreshTokenFile, "save", watching)
        assert records(list(connector(fiken, tmp_path).read()))

        assert seen_at_save == [0]

    def test_a_failed_write_uses_nothing_and_leaves_the_old_file_whole(
        self, fiken: Fiken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The disk refuses the new token: no API call is made with the access token that came
        with it, the read fails saying why, and the file still holds the old token, whole."""
        old = seed(fiken, tmp_path)

        def refuse(*_: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", refuse)

        with pytest.raises(ConnectorError) as failure:
            list(connector(fiken, tmp_path).read())

        assert "could not be written" in str(failure.value)
        assert "No space left on device" in str(failure.value)
        assert fiken.simulator.calls()["total"] == 0  # the access token was never used
        assert stored(tmp_path) == old
        assert sorted(p.name for p in token_path(tmp_path).parent.iterdir()) == [
            "fiken-refresh-token",
            "fiken-refresh-token.lock",
        ]
        for issued in fiken.oauth.issued:
            assert issued not in str(failure.value)

    def test_a_crash_at_the_rename_leaves_the_old_token_and_no_stray_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Written beside, flushed, then renamed over: the rename failing keeps the old."""
        tokens = RefreshTokenFile(tmp_path / "token")
        tokens.save("first-token")

        def crash(self: Path, target: Path) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(Path, "replace", crash)
        with pytest.raises(OSError, match="Input/output"):
            tokens.save("second-token")

        assert tokens.load() == "first-token"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]


class TestCheck:
    def test_check_asks_for_the_company_with_the_credentials(
        self, fiken: Fiken, tmp_path: Path
    ) -> None:
        seed(fiken, tmp_path)
        assert connector(fiken, tmp_path).check() == []
        assert fiken.simulator.calls()["company"] == 1

    def test_check_names_a_company_the_consent_does_not_cover(
        self, fiken: Fiken, tmp_path: Path
    ) -> None:
        seed(fiken, tmp_path)
        problems = connector(fiken, tmp_path, company_slug="another-company").check()

        assert problems is not None
        assert any("403" in problem for problem in problems)
        assert any("Apper du har gitt tilgang til" in problem for problem in problems)

    def test_the_cli_check_passes_with_good_credentials_and_names_the_source_with_bad(
        self, sim: Sim, fiken: Fiken, tmp_path: Path
    ) -> None:
        """`kravia-sync check`: ok for the source; after the consent is withdrawn, a failure
        naming the source and what to run."""
        config_for(tmp_path, sim.base_url, oauth_source(fiken))
        seed(fiken, tmp_path)
        env = cli_env(FIKEN_CLIENT_SECRET=CLIENT_SECRET)

        good = run_cli("check", cwd=tmp_path, env=env)
        fiken.oauth.revoke_all()
        bad = run_cli("check", cwd=tmp_path, env=env)

        assert good.returncode == 0, good.stdout + good.stderr
        assert "source fiken answers with its credentials" in good.stdout
        assert bad.returncode == 1
        assert "source fiken: Fiken refused the stored refresh token" in bad.stderr
        assert "kravia-sync auth fiken" in bad.stderr
        assert "credentials check failed for source fiken" in bad.stderr
        for result in (good, bad):
            for secret in (CLIENT_SECRET, *fiken.oauth.issued):
                assert secret not in result.stdout + result.stderr


class TestIntoKravia:
    def test_a_pass_with_oauth_registers_the_overdue_invoices(
        self, sim: Sim, fiken: Fiken, company: FikenCompany, tmp_path: Path
    ) -> None:
        """End to end: the same cases as with a personal token, and the rotated token kept."""
        config = config_for(tmp_path, sim.base_url, oauth_source(fiken))
        first_token = seed(fiken, tmp_path)

        summary = run_pass(config)

        assert summary.status == "done", summary.as_dict()
        expected = sorted(str(i["invoiceId"]) for i in company.unpaid_overdue(oslo_today()))
        assert sorted(c["accountingInvoiceId"] for c in sim.cases()) == expected
        assert len(expected) == 42
        assert stored(tmp_path) != first_token
        assert fiken.oauth.valid_refresh_tokens() == {stored(tmp_path)}

    def test_no_secret_in_the_output_of_a_pass_with_debug_logs(
        self, sim: Sim, fiken: Fiken, tmp_path: Path
    ) -> None:
        """reconcile at debug level, a failed read (503s), and a refused refresh: no client
        secret, code, refresh or access token anywhere."""
        config = config_for(tmp_path, sim.base_url, oauth_source(fiken))
        text = config.read_text(encoding="utf-8").replace('level = "info"', 'level = "debug"')
        config.write_text(text, encoding="utf-8")
        seed(fiken, tmp_path)
        env = cli_env(FIKEN_CLIENT_SECRET=CLIENT_SECRET)

        done = run_cli("reconcile", cwd=tmp_path, env=env)
        fiken.simulator.fail("invoices", page=0, faults=["503", "503"])
        failed = run_cli("reconcile", "--json", cwd=tmp_path, env=env)
        fiken.oauth.revoke_all()
        refused = run_cli("reconcile", cwd=tmp_path, env=env)

        assert done.returncode == 0, done.stdout + done.stderr
        assert failed.returncode != 0
        assert "invoices page 1" in failed.stdout + failed.stderr
        assert refused.returncode != 0
        assert "kravia-sync auth fiken" in refused.stdout + refused.stderr
        assert len(fiken.oauth.issued) >= 5
        for result in (done, failed, refused):
            for secret in (CLIENT_SECRET, *fiken.oauth.issued):
                assert secret not in result.stdout + result.stderr
