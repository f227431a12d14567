"""A person's consent, once: the answer Fiken sends the browser back with, and the code's
exchange for the first refresh token (`kravia-sync auth fiken` drives these).

The answer comes back either to a listener on this machine (`CallbackListener`, when the
redirect URI is `http://127.0.0.1:PORT/…` or `http://localhost:PORT/…`) or as the address the
browser was sent to, pasted (`code_from`). Either way its `state` must be the one the consent
was started with (Fiken: "An unguessable random string, used to protect against CSRF attacks"):
a different one is refused and nothing is exchanged.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar, Final
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import SecretStr

from connectors._fiken_oauth import (
    FikenOAuthSettings,
    TokenAnswer,
    basic_credentials,
    hide,
    secret_forms,
    token_answer,
)
from kravia_sync import ConnectorError, register_secrets

__all__ = ["CallbackListener", "ConsentError", "code_from", "exchange_code", "is_local"]

_LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost"})
_PAGE: Final = (
    "<!doctype html><meta charset=utf-8><title>kravia-sync</title>"
    "<p>{message}</p><p>You can close this window.</p>"
)


class ConsentError(ConnectorError):
    """The consent did not come back usable (refused, another state, no code)."""


def is_local(redirect_uri: str) -> bool:
    """Whether `auth fiken` can take the answer itself: plain http to this machine, a port."""
    parts = urlsplit(redirect_uri)
    return parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS and parts.port is not None


def code_from(answer: str, state: str | None) -> SecretStr:
    """The code in what Fiken sent back: the whole redirect address (its `state` must be
    `state`), or the bare code as the person copied it."""
    text = answer.strip()
    if not text:
        raise ConsentError("nothing was given: paste the address the browser was sent to")
    if "://" in text:
        query = urlsplit(text).query
    elif text.startswith("?") or "code=" in text or "error=" in text:
        query = text.removeprefix("?")
    else:  # a bare code (Fiken's tokens end in "=": base64)
        register_secrets([text])
        return SecretStr(text)
    return _code(parse_qs(query), state)


def _code(query: dict[str, list[str]], state: str | None) -> SecretStr:
    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    code = one("code")
    if code:
        register_secrets([code])
    error = one("error")
    if error is not None:
        described = one("error_description")
        said = f"{error}: {described}" if described else error
        if error == "access_denied":
            raise ConsentError(f"the consent was refused at Fiken ({said}); nothing is stored")
        raise ConsentError(f"Fiken answered the consent with an error ({said})")
    if one("state") != state:
        raise ConsentError(
            "the answer's state is not the one this consent was started with: it does not "
            "come from this consent, so it is refused and nothing is stored; start again"
        )
    if not code:
        raise ConsentError("the answer has no code")
    return SecretStr(code)


@dataclass
class _Outcome:
    code: SecretStr | None = None
    error: ConsentError | None = None


class CallbackListener:
    """An HTTP server on the redirect URI's port that waits for Fiken's answer (bound when
    made, so the port is known to be free before the person is sent to Fiken)."""

    def __init__(self, redirect_uri: str, state: str) -> None:
        parts = urlsplit(redirect_uri)
        if not is_local(redirect_uri):  # pragma: no cover - the caller checks
            raise ValueError(f"{redirect_uri} is not a local http address")
        self.path = parts.path or "/"
        self.state = state
        self.outcome = _Outcome()
        self._done = threading.Event()
        listener = self

        class Handler(_CallbackHandler):
            owner: ClassVar[CallbackListener] = listener

        try:
            self.server = HTTPServer(("127.0.0.1", parts.port or 80), Handler)
        except OSError as exc:
            raise ConsentError(
                f"cannot listen on {parts.netloc} for Fiken's answer ({exc.strerror or exc}); "
                "free the port, or use --paste"
            ) from None
        self.server.timeout = 0.2

    def wait(self, timeout_seconds: float) -> SecretStr:
        """The code, once Fiken's answer has come; `ConsentError` if it is refused or none
        comes in time."""
        deadline = time.monotonic() + timeout_seconds
        try:
            while not self._done.is_set():
                if time.monotonic() >= deadline:
                    raise ConsentError(
                        f"no answer from Fiken within {timeout_seconds:g} seconds; start again"
                    )
                self.server.handle_request()
        finally:
            self.close()
        if self.outcome.error is not None:
            raise self.outcome.error
        assert self.outcome.code is not None  # noqa: S101 - set with _done
        return self.outcome.code

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.server_close()

    def answered(self, query: dict[str, list[str]]) -> tuple[int, str]:
        try:
            self.outcome.code = _code(query, self.state)
        except ConsentError as exc:
            self.outcome.error = exc
            self._done.set()
            return 400, str(exc)
        self._done.set()
        return 200, "kravia-sync has Fiken's answer and finishes in the terminal."


class _CallbackHandler(BaseHTTPRequestHandler):
    owner: ClassVar[CallbackListener]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != self.owner.path:
            self._send(404, "Not the address kravia-sync waits on.")
            return
        status, message = self.owner.answered(parse_qs(parts.query))
        self._send(status, message)

    def _send(self, status: int, message: str) -> None:
        body = _PAGE.format(message=message).encode("utf-8")  # never holds the code
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        """Silent: the request line carries the code."""


def exchange_code(
    settings: FikenOAuthSettings,
    secret: SecretStr,
    code: SecretStr,
    state: str,
    *,
    timeout_seconds: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> TokenAnswer:
    """The tokens for `code` (grant_type=authorization_code, with the redirect URI and state
    as Fiken's description lists them). A refusal or failure is a `ConnectorError` without
    secrets; an answer without a refresh token is one too (it could not be renewed)."""
    url = settings.token_endpoint
    known = [*secret_forms(code.get_secret_value()), *secret_forms(secret.get_secret_value())]
    register_secrets(known)
    form = {
        "grant_type": "authorization_code",
        "code": code.get_secret_value(),
        "redirect_uri": settings.redirect_uri,
        "state": state,
    }
    try:
        with httpx.Client(timeout=timeout_seconds, transport=transport) as client:
            response = client.post(
                url, data=form, headers=basic_credentials(settings.client_id, secret)
            )
    except httpx.HTTPError as exc:
        failure = f"{type(exc).__name__}: {exc}"
        message = f"the Fiken token endpoint {url} could not be reached ({failure})"
        raise ConnectorError(hide(message, known)) from None
    try:
        body: object = response.json()
    except ValueError:
        body = None
    status = response.status_code
    answer = token_answer(status, body, url, grant="authorization_code", secrets=known)
    if answer.refresh_token is None:
        raise ConnectorError(
            f"the Fiken token endpoint {url} answered no refresh_token: without one the "
            "access could not be renewed, so nothing is stored"
        )
    return answer
