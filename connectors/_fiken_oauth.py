"""Fiken's OAuth2 authorization-code flow: the settings, the token endpoint's answers, and the
authenticator that keeps an access token fresh from a stored refresh token.

From Fiken's API description (the "Authorization with OAuth2" part):

* Consent: `GET https://fiken.no/oauth/authorize?response_type=code&client_id=…&
  redirect_uri=…&state=…`; Fiken sends the person back to `redirect_uri` with `code` and the
  same `state` (or `error` and `error_description`, `access_denied` when they refuse).
* Tokens: `POST https://fiken.no/oauth/token`, form-encoded, "protected with Http Basic
  Authentication" with the client id and secret: `grant_type=authorization_code` with `code`,
  `redirect_uri` and `state`, or `grant_type=refresh_token` with `refresh_token`. The answer
  holds `access_token`, `refresh_token`, `token_type` ("bearer") and `expires_in` (86157 in
  the example: about a day); a refresh returns "a fresh access token along with a possibly
  updated refresh token". Errors are `{"error": "invalid_grant", "error_description": …}`.
* Revoke: `POST https://fiken.no/oauth/revoke` with the access token as a bearer token.

The authenticator refreshes when it has no access token, shortly before the one it has
expires, and after a 401. When Fiken answers with a new refresh token, that one is written to
the refresh token file (durably, see `_fiken_tokens`) before the access token is used; when it
cannot be written, the access token is not used and the read fails saying so.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote_plus, urlencode

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors._fiken_tokens import RefreshTokenFile
from connectors.rest._auth import Authenticator, TokenRequest, access_token_from, read_secret
from kravia_sync import ConnectorError, register_secrets

__all__ = [
    "DEFAULT_REDIRECT_URI",
    "FIKEN_OAUTH",
    "FikenOAuth",
    "FikenOAuthSettings",
    "TokenAnswer",
    "authorize_url",
    "basic_credentials",
    "hide",
    "secret_forms",
    "token_answer",
]

FIKEN_OAUTH: Final = "https://fiken.no/oauth/"
DEFAULT_REDIRECT_URI: Final = "http://127.0.0.1:8765/callback"
# Refresh this long before the access token expires (and never keep one past half its life).
_EXPIRY_MARGIN_S: Final = 300.0
_AGAIN: Final = "run `kravia-sync auth fiken` to give kravia-sync access again"


class FikenOAuthSettings(BaseModel):
    """`[sources.settings.oauth]` of a `fiken` source: the app registered with Fiken and where
    the refresh token is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(min_length=1, max_length=500)
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    redirect_uri: str = DEFAULT_REDIRECT_URI
    """One of the app's redirect URLs at Fiken; a local one lets `auth fiken` take the answer
    itself, any other one is pasted back."""
    refresh_token_file: Path
    """Where the refresh token is kept (relative to the configuration file), mode 0600."""
    url: str = FIKEN_OAUTH
    """Fiken's OAuth2 endpoints (`authorize`, `token`, `revoke` below it); another URL only for
    a test server."""

    @model_validator(mode="after")
    def _one_secret(self) -> FikenOAuthSettings:
        if (self.client_secret_env is None) == (self.client_secret_file is None):
            raise ValueError(
                "give client_secret_env (an environment variable) or client_secret_file, "
                "exactly one"
            )
        return self

    @field_validator("redirect_uri", "url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("url")
    @classmethod
    def _slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @property
    def authorize_endpoint(self) -> str:
        return self.url + "authorize"

    @property
    def token_endpoint(self) -> str:
        return self.url + "token"

    @property
    def revoke_endpoint(self) -> str:
        return self.url + "revoke"

    def client_secret(self, base_dir: Path) -> SecretStr:
        """The client secret (registered for redaction); `ConnectorError` when it is unset."""
        secret = read_secret(
            self.client_secret_env, self.client_secret_file, base_dir, "Fiken client secret"
        )
        register_secrets([secret.get_secret_value()])
        return secret

    def token_file(self, base_dir: Path) -> RefreshTokenFile:
        return RefreshTokenFile(base_dir / self.refresh_token_file.expanduser())


def authorize_url(settings: FikenOAuthSettings, state: str) -> str:
    """Where the person gives consent (the client id and state are not secrets)."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.client_id,
            "redirect_uri": settings.redirect_uri,
            "state": state,
        }
    )
    return f"{settings.authorize_endpoint}?{query}"


def basic_credentials(client_id: str, secret: SecretStr) -> dict[str, str]:
    """The token endpoint's `Authorization: Basic` header (RFC 6749 §2.3.1: each part
    form-encoded first)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret.get_secret_value())}"
    encoded = base64.b64encode(pair.encode()).decode("ascii")
    register_secrets([encoded])
    return {"Authorization": f"Basic {encoded}", "Accept": "application/json"}


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """A 2xx answer of the token endpoint. Its repr shows no token."""

    access_token: SecretStr
    refresh_token: SecretStr | None
    expires_in: float | None


def hide(text: str, secrets: Iterable[str]) -> str:
    """`text` with each of `secrets` replaced (the engine redacts registered secrets too; this
    is for messages made before they reach it)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def secret_forms(secret: str) -> list[str]:
    """A secret as it is, and as a form body carries it (Fiken's tokens end in "=")."""
    quoted = quote_plus(secret)
    return [secret] if quoted == secret else [secret, quoted]


def token_answer(
    status: int, body: object, url: str, *, grant: str, secrets: Iterable[str] = ()
) -> TokenAnswer:
    """The tokens in the token endpoint's answer (registered for redaction at once), or a
    `ConnectorError` saying what Fiken refused and what to do (without any of `secrets`)."""
    if isinstance(body, dict):
        register_secrets(
            form
            for name in ("access_token", "refresh_token")
            if body.get(name)
            for form in secret_forms(str(body[name]))
        )
    if not 200 <= status < 300:
        raise ConnectorError(hide(_refusal(status, body, url, grant), secrets))
    access, expires_in = access_token_from(status, body, url)
    refresh = body.get("refresh_token") if isinstance(body, dict) else None
    return TokenAnswer(
        access_token=SecretStr(access),
        refresh_token=SecretStr(refresh) if isinstance(refresh, str) and refresh else None,
        expires_in=expires_in,
    )


def _refusal(status: int, body: object, url: str, grant: str) -> str:
    error = description = ""
    if isinstance(body, dict):
        error = str(body.get("error") or "")
        description = str(body.get("error_description") or "")
    said = " ".join(part for part in (error, description) if part)
    detail = f" ({said})" if said else ""
    if error == "invalid_grant" and grant == "refresh_token":
        return (
            f"Fiken refused the stored refresh token{detail}: the consent was withdrawn or "
            f"has lapsed, or the token was replaced; {_AGAIN}"
        )
    if error == "invalid_grant":
        return f"Fiken refused the authorization code{detail}: it is used or expired; try again"
    if status == 401 or error == "invalid_client":
        return (
            f"Fiken refused the client id and secret{detail} (the token endpoint answered "
            f"{status}): check oauth.client_id and the client secret"
        )
    return f"the Fiken token endpoint {url} answered {status}{detail}"


class FikenOAuth(Authenticator):
    """Bearer access tokens from Fiken's token endpoint, refreshed from the stored refresh
    token (see the module)."""

    def __init__(
        self,
        settings: FikenOAuthSettings,
        base_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._secret = settings.client_secret(base_dir)
        self._seen: list[str] = []
        self._remember(self._secret)
        self.tokens = settings.token_file(base_dir)
        self._clock = clock
        self._access: SecretStr | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FikenOAuth(client_id={self.settings.client_id!r}, tokens={self.tokens!r})"

    def headers(self, request_token: TokenRequest) -> dict[str, str]:
        with self._lock:
            if self._access is None or self._clock() >= self._expires_at:
                self._renew(request_token)
            assert self._access is not None  # noqa: S101 - _renew sets it or raises
            return {"Authorization": f"Bearer {self._access.get_secret_value()}"}

    def refresh(self) -> bool:
        with self._lock:
            self._access = None
        return True

    def secrets(self) -> list[str]:
        return list(self._seen)  # the client secret first

    def _remember(self, *values: SecretStr | str | None) -> None:
        for value in values:
            if value is None:
                continue
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            for form in secret_forms(text):
                if form not in self._seen:
                    self._seen.append(form)
        register_secrets(self._seen)

    def _renew(self, request_token: TokenRequest) -> None:
        """A new access token from the stored refresh token; a rotated refresh token is
        stored before the access token is kept (see the module)."""
        s = self.settings
        with self.tokens.locked():
            refresh = self.tokens.load()  # the latest: another process may have rotated it
            self._remember(refresh)
            form = {"grant_type": "refresh_token", "refresh_token": refresh}
            headers = basic_credentials(s.client_id, self._secret)
            self._remember(headers["Authorization"].removeprefix("Basic "))
            status, body = request_token(s.token_endpoint, form, headers)
            answer = token_answer(
                status, body, s.token_endpoint, grant="refresh_token", secrets=self.secrets()
            )
            self._remember(answer.access_token, answer.refresh_token)
            new = answer.refresh_token
            if new is not None and new.get_secret_value() != refresh:
                try:
                    self.tokens.save(new.get_secret_value())
                except OSError as exc:
                    raise ConnectorError(
                        f"Fiken issued a new refresh token, which could not be written to "
                        f"{self.tokens.path} ({exc.strerror or type(exc).__name__}); nothing "
                        f"was read with it. Make the file writable; if Fiken then refuses the "
                        f"stored one, {_AGAIN}"
                    ) from None
        lifetime = answer.expires_in if answer.expires_in is not None else 3600.0
        self._access = answer.access_token
        self._expires_at = self._clock() + max(lifetime / 2, lifetime - _EXPIRY_MARGIN_S)
