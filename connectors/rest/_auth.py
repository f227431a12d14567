"""Authentication: the settings of each scheme, and the authenticators that add credentials.

Every credential is a secret read from an environment variable (`…_env`) or a file
(`…_file`, relative to the configuration file; one trailing newline dropped), never written
in the TOML file. The values are held as `SecretStr` and reported by `secrets()` so that the
engine redacts them (and an OAuth2 access token, as soon as it is fetched) from every log line,
error and output.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from kravia_sync import ConnectorError, register_secrets

__all__ = [
    "ApiKeyAuth",
    "Auth",
    "Authenticator",
    "BasicAuth",
    "BearerAuth",
    "NoAuth",
    "OAuth2ClientCredentials",
    "TokenRequest",
    "TokenResponse",
    "read_secret",
]

# Refresh an OAuth2 token this long before it expires (and never keep one past half its life).
_EXPIRY_MARGIN_S: Final = 60.0

# (status, JSON body or None) of a token request, sent by the caller's HTTP session.
TokenResponse = tuple[int, object]


class TokenRequest(Protocol):
    """Sends one token request with the caller's HTTP session: `form` is the form body of a
    POST, or the query string of a PUT (Tripletex's `PUT /token/session/:create?…`)."""

    def __call__(
        self,
        url: str,
        form: Mapping[str, str],
        headers: Mapping[str, str],
        /,
        *,
        method: Literal["POST", "PUT"] = "POST",
    ) -> TokenResponse: ...


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_secret(model: BaseModel, name: str) -> None:
    env = getattr(model, f"{name}_env")
    file = getattr(model, f"{name}_file")
    if (env is None) == (file is None):
        raise ValueError(
            f"give {name}_env (an environment variable) or {name}_file (a file), exactly one"
        )
    if env is not None and not str(env).strip():
        raise ValueError(f"{name}_env is empty: give the name of an environment variable")


def read_secret(env: str | None, file: Path | None, base_dir: Path, what: str) -> SecretStr:
    """The secret named by `env` or `file`; `ConnectorError` (without the value) if unset."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ConnectorError(f"the environment variable {env} ({what}) is not set")
        return SecretStr(value)
    if file is None:  # pragma: no cover - the settings validators guarantee one of them
        raise ConnectorError(f"no {what} configured")
    path = base_dir / file.expanduser()
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConnectorError(f"cannot read the {what} file {path}: {reason}") from None
    value = content.removesuffix("\n").removesuffix("\r")
    if not value:
        raise ConnectorError(f"the {what} file {path} is empty")
    return SecretStr(value)


# -- settings ------------------------------------------------------------------------------


class NoAuth(_Model):
    """No credentials (a public API, or one behind a network boundary)."""

    type: Literal["none"] = "none"

    def authenticator(self, _base_dir: Path) -> Authenticator:
        return _Static({})


class BearerAuth(_Model):
    """`Authorization: Bearer <token>` (personal API tokens, OAuth2 access tokens)."""

    type: Literal["bearer"]
    token_env: str | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _secret(self) -> BearerAuth:
        _one_secret(self, "token")
        return self

    def authenticator(self, base_dir: Path) -> Authenticator:
        token = read_secret(self.token_env, self.token_file, base_dir, "token")
        return _Static({"Authorization": f"Bearer {token.get_secret_value()}"}, [token])


class BasicAuth(_Model):
    """HTTP Basic: `username` in the file, the password a secret."""

    type: Literal["basic"]
    username: str
    password_env: str | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _secret(self) -> BasicAuth:
        _one_secret(self, "password")
        if ":" in self.username:
            raise ValueError("a Basic username cannot contain ':'")
        return self

    def authenticator(self, base_dir: Path) -> Authenticator:
        password = read_secret(self.password_env, self.password_file, base_dir, "password")
        pair = f"{self.username}:{password.get_secret_value()}".encode()
        encoded = SecretStr(base64.b64encode(pair).decode("ascii"))
        return _Static(
            {"Authorization": f"Basic {encoded.get_secret_value()}"}, [password, encoded]
        )


class ApiKeyAuth(_Model):
    """An API key in a header of your choice (`X-API-Key: <key>`, or with a `prefix`)."""

    type: Literal["api_key"]
    header: str = "X-API-Key"
    prefix: str = ""
    key_env: str | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _secret(self) -> ApiKeyAuth:
        _one_secret(self, "key")
        return self

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not value.strip() or any(char in value for char in " :\r\n"):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value

    def authenticator(self, base_dir: Path) -> Authenticator:
        key = read_secret(self.key_env, self.key_file, base_dir, "API key")
        return _Static({self.header: f"{self.prefix}{key.get_secret_value()}"}, [key])


class OAuth2ClientCredentials(_Model):
    """OAuth2 client credentials: a token is fetched from `token_url` when first needed, used
    as a bearer token, and fetched again shortly before it expires or after a 401."""

    type: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: str
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    scope: str | None = None
    client_auth: Literal["basic", "body"] = "basic"
    """How the client authenticates: HTTP Basic (RFC 6749's default) or in the form body."""
    token_params: dict[str, str] = Field(default_factory=dict)
    """Extra form fields of the token request (e.g. `audience`); not secrets."""
    key_header: str | None = None
    """A key header sent with the token request and with every call, its value a secret
    (`key_env` or `key_file`): PowerOffice Go's `Ocp-Apim-Subscription-Key`, for one."""
    key_env: str | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _secret(self) -> OAuth2ClientCredentials:
        _one_secret(self, "client_secret")
        if not self.token_url.startswith(("https://", "http://")):
            raise ValueError("token_url must be an http(s) URL")
        if self.key_header is not None:
            name = self.key_header
            if not name.strip() or any(char in name for char in " :\r\n"):
                raise ValueError(f"key_header {name!r} is not an HTTP header name")
            if name.lower() in {"authorization", "host", "content-length"}:
                raise ValueError(f"key_header {name!r} cannot be set here")
            _one_secret(self, "key")
        elif self.key_env is not None or self.key_file is not None:
            raise ValueError("key_env and key_file need key_header: the header to send it in")
        return self

    def authenticator(self, base_dir: Path) -> Authenticator:
        secret = read_secret(
            self.client_secret_env, self.client_secret_file, base_dir, "client secret"
        )
        key = None
        if self.key_header is not None:
            key = read_secret(self.key_env, self.key_file, base_dir, f"{self.key_header} key")
        return _OAuth2(self, secret, key)


Auth = Annotated[
    NoAuth | BearerAuth | BasicAuth | ApiKeyAuth | OAuth2ClientCredentials,
    Field(discriminator="type"),
]


# -- authenticators --------------------------------------------------------------------------


class Authenticator(ABC):
    """Adds credentials to requests to the API's own origin."""

    @abstractmethod
    def headers(self, request_token: TokenRequest) -> dict[str, str]:
        """The credential headers (fetching a token with `request_token` when needed)."""

    def refresh(self) -> bool:
        """After a 401: forget what may be stale; True when asking again can help."""
        return False

    @abstractmethod
    def secrets(self) -> list[str]:
        """Every secret value held, for redaction."""


class _Static(Authenticator):
    def __init__(self, headers: dict[str, str], secrets: list[SecretStr] | None = None) -> None:
        self._headers = headers
        self._secrets = secrets or []

    def headers(self, request_token: TokenRequest) -> dict[str, str]:  # noqa: ARG002
        return dict(self._headers)

    def secrets(self) -> list[str]:
        return [secret.get_secret_value() for secret in self._secrets]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(headers={sorted(self._headers)})"


class _OAuth2(Authenticator):
    def __init__(
        self, settings: OAuth2ClientCredentials, secret: SecretStr, key: SecretStr | None = None
    ) -> None:
        self.settings = settings
        self._secret = secret
        self._key = key
        self._token: SecretStr | None = None
        self._expires_at = 0.0
        self._seen: list[str] = []
        self._lock = threading.Lock()

    def headers(self, request_token: TokenRequest) -> dict[str, str]:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                self._fetch(request_token)
            assert self._token is not None  # noqa: S101 - _fetch sets it or raises
            return {"Authorization": f"Bearer {self._token.get_secret_value()}", **self._keyed()}

    def _keyed(self) -> dict[str, str]:
        if self._key is None or self.settings.key_header is None:
            return {}
        return {self.settings.key_header: self._key.get_secret_value()}

    def refresh(self) -> bool:
        with self._lock:
            self._token = None
        return True

    def secrets(self) -> list[str]:
        key = [] if self._key is None else [self._key.get_secret_value()]
        basic = [self._basic_credentials()] if self.settings.client_auth == "basic" else []
        return [self._secret.get_secret_value(), *key, *basic, *self._seen]

    def _basic_credentials(self) -> str:
        """The client's id and secret as HTTP Basic sends them (a token endpoint may echo
        them back in an error)."""
        pair = (
            f"{_form_quote(self.settings.client_id)}:{_form_quote(self._secret.get_secret_value())}"
        )
        return base64.b64encode(pair.encode()).decode()

    def _fetch(self, request_token: TokenRequest) -> None:
        s = self.settings
        form = {"grant_type": "client_credentials", **s.token_params}
        if s.scope:
            form["scope"] = s.scope
        headers = {"Accept": "application/json", **self._keyed()}
        if s.client_auth == "basic":
            headers["Authorization"] = "Basic " + self._basic_credentials()
        else:
            form["client_id"] = s.client_id
            form["client_secret"] = self._secret.get_secret_value()
        status, body = request_token(s.token_url, form, headers)
        token, expires_in = access_token_from(status, body, s.token_url)
        register_secrets([token])
        self._seen.append(token)
        self._token = SecretStr(token)
        lifetime = expires_in if expires_in is not None else 3600.0
        self._expires_at = time.monotonic() + max(lifetime / 2, lifetime - _EXPIRY_MARGIN_S)

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials(token_url={self.settings.token_url!r})"


def _form_quote(value: str) -> str:
    """RFC 6749 §2.3.1: client id and secret are form-encoded before Basic encoding."""
    from urllib.parse import quote_plus  # noqa: PLC0415 - only OAuth2 needs it

    return quote_plus(value)


def access_token_from(status: int, body: object, url: str) -> tuple[str, float | None]:
    """The bearer access token of an OAuth2 token endpoint's answer and its `expires_in` in
    seconds (None: not given, or not a positive number); `ConnectorError` saying what is wrong
    with any other answer."""
    if not 200 <= status < 300:
        detail = ""
        if isinstance(body, dict):
            error = body.get("error")
            description = body.get("error_description")
            detail = ": " + " ".join(str(part) for part in (error, description) if part)
        raise ConnectorError(f"the OAuth2 token endpoint {url} answered {status}{detail}")
    if not isinstance(body, dict):
        raise ConnectorError(f"the OAuth2 token endpoint {url} did not answer a JSON object")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise ConnectorError(f"the OAuth2 token endpoint {url} answered no access_token")
    token_type = body.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise ConnectorError(f"the OAuth2 token endpoint {url} answered a {token_type!r} token")
    expires: Any = body.get("expires_in")
    if isinstance(expires, bool) or not isinstance(expires, int | float | Decimal | str):
        return token, None
    try:
        seconds = float(expires)
    except ValueError:
        return token, None
    return token, seconds if seconds > 0 else None
