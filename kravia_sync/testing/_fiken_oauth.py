"""Fiken's OAuth2 endpoints for the Fiken simulator: one registered app, consents, codes,
access tokens that expire and refresh tokens that rotate.

As Fiken's API description has them (fiken.no/oauth/…):

* `GET /oauth/authorize?response_type=code&client_id&redirect_uri&state` (all required):
  the person consents at once (no login page here) and is sent back (302) to `redirect_uri`
  with `code` and `state`; after `deny_next()`, with `error=access_denied`. An unknown client
  or a redirect URI the app has not registered is a 400 page (nowhere safe to send it).
* `POST /oauth/token`, form-encoded, with HTTP Basic client_id:client_secret (else 401
  `invalid_client`): `grant_type=authorization_code` (`code`, `redirect_uri`, `state`; a code
  is good once and for `code_lifetime_seconds`) or `grant_type=refresh_token`. Answers
  `access_token`, `refresh_token`, `token_type` "bearer" and `expires_in`; a refused grant is
  400 `invalid_grant`. With `rotate` (the default) each refresh answers a new refresh token
  and the one used is refused from then on; without, the same one is answered back.
* `POST /oauth/revoke` with a bearer access token: the consent, its refresh token and every
  access token of it stop working.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, unquote_plus, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = ["FikenOAuthServer"]

OAUTH_PREFIX: Final = "/oauth"


@dataclass
class _Code:
    grant: int
    redirect_uri: str
    state: str
    expires_at: float


@dataclass
class _Access:
    grant: int
    expires_at: float


class FikenOAuthServer:
    """The OAuth2 side of the Fiken simulator, for one app (client id and secret)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uris: Collection[str] | None = None,
        expires_in: int = 86157,
        rotate: bool = True,
        code_lifetime_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = None if redirect_uris is None else set(redirect_uris)
        self.expires_in = expires_in
        self.rotate = rotate
        self.code_lifetime_seconds = code_lifetime_seconds
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._grants = 0
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, int] = {}  # the valid refresh tokens, by grant
        self._access: dict[str, _Access] = {}
        self._deny = False
        self.issued: list[str] = []  # every code and token handed out, for leak checks

    # -- test controls ---

    def issue_code(self, redirect_uri: str, state: str) -> str:
        """A code as a consent in the browser would give (for tests that skip the browser)."""
        with self._lock:
            return self._new_code(redirect_uri, state)

    def issue_refresh_token(self) -> str:
        """A refresh token of a new consent, as if `auth fiken` had been run."""
        with self._lock:
            self._grants += 1
            return self._new_refresh(self._grants)

    def valid_refresh_tokens(self) -> set[str]:
        with self._lock:
            return set(self._refresh)

    def access_valid(self, token: str) -> bool:
        """Whether `token` is an access token that is neither expired nor revoked."""
        with self._lock:
            access = self._access.get(token)
            return access is not None and self.clock() < access.expires_at

    def expire_access_tokens(self) -> None:
        """Every access token given so far expires now (Fiken's answer to them: 401)."""
        with self._lock:
            for access in self._access.values():
                access.expires_at = 0.0

    def revoke_all(self) -> None:
        """Every consent withdrawn (as a person can under Rediger konto -> Sikkerhet)."""
        with self._lock:
            self._refresh.clear()
            self._access.clear()

    def deny_next(self) -> None:
        """The next consent is refused by the person (`error=access_denied`)."""
        with self._lock:
            self._deny = True

    def routes(self) -> list[Route]:
        return [
            Route(f"{OAUTH_PREFIX}/authorize", self._authorize, methods=["GET"]),
            Route(f"{OAUTH_PREFIX}/token", self._token, methods=["POST"]),
            Route(f"{OAUTH_PREFIX}/revoke", self._revoke, methods=["POST"]),
        ]

    # -- the endpoints ---

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        self.counts["authorize"] += 1
        redirect_uri = query.get("redirect_uri") or ""
        if query.get("client_id") != self.client_id:
            return Response("Unknown client", status_code=400)
        if not redirect_uri or (
            self.redirect_uris is not None and redirect_uri not in self.redirect_uris
        ):
            return Response("This redirect URI is not registered for the app", status_code=400)
        state = query.get("state")
        with self._lock:
            deny, self._deny = self._deny, False
            if query.get("response_type") != "code" or not state:
                answer = {"error": "invalid_request", "error_description": "missing parameters"}
            elif deny:
                answer = {"error": "access_denied", "error_description": "The user said no"}
            else:
                answer = {"code": self._new_code(redirect_uri, state)}
        answer["state"] = state or ""
        joiner = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(f"{redirect_uri}{joiner}{urlencode(answer)}", status_code=302)

    async def _token(self, request: Request) -> Response:
        if not self._client_ok(request.headers.get("authorization", "")):
            self.counts["token_refused"] += 1
            return _error(401, "invalid_client", "Bad client credentials")
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8")).items()}
        grant_type = form.get("grant_type")
        with self._lock:
            if grant_type == "authorization_code":
                self.counts["token_code"] += 1
                return self._code_grant(form)
            if grant_type == "refresh_token":
                self.counts["token_refresh"] += 1
                return self._refresh_grant(form)
        return _error(400, "unsupported_grant_type", f"grant_type {grant_type!r}")

    async def _revoke(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        with self._lock:
            access = self._access.get(header.removeprefix("Bearer "))
            if not header.startswith("Bearer ") or access is None:
                return _error(401, "invalid_token", "Unknown access token")
            self._refresh = {t: g for t, g in self._refresh.items() if g != access.grant}
            self._access = {t: a for t, a in self._access.items() if a.grant != access.grant}
        self.counts["revoke"] += 1
        return Response(status_code=200)

    # -- grants (under the lock) ---

    def _code_grant(self, form: dict[str, str]) -> Response:
        code = self._codes.pop(form.get("code", ""), None)
        if code is None or self.clock() >= code.expires_at:
            self.counts["refused_code"] += 1
            return _error(400, "invalid_grant", "The authorization code is invalid or expired.")
        if form.get("redirect_uri") != code.redirect_uri or form.get("state") != code.state:
            self.counts["refused_code"] += 1
            return _error(400, "invalid_grant", "redirect_uri or state does not match")
        return self._tokens(code.grant, self._new_refresh(code.grant))

    def _refresh_grant(self, form: dict[str, str]) -> Response:
        used = form.get("refresh_token", "")
        grant = self._refresh.get(used)
        if grant is None:
            self.counts["refused_refresh"] += 1
            return _error(400, "invalid_grant", "The refresh token is invalid or expired.")
        if not self.rotate:
            return self._tokens(grant, used)
        del self._refresh[used]
        return self._tokens(grant, self._new_refresh(grant))

    def _tokens(self, grant: int, refresh: str) -> Response:
        access = "sim-fiken-access-" + secrets.token_urlsafe(18)
        self.issued.append(access)
        self._access[access] = _Access(grant, self.clock() + self.expires_in)
        return JSONResponse(
            {
                "access_token": access,
                "refresh_token": refresh,
                "token_type": "bearer",
                "expires_in": self.expires_in,
            },
            headers={"Cache-Control": "no-store"},
        )

    def _new_code(self, redirect_uri: str, state: str) -> str:
        self._grants += 1
        code = "sim-fiken-code-" + secrets.token_urlsafe(12)
        self.issued.append(code)
        expires = self.clock() + self.code_lifetime_seconds
        self._codes[code] = _Code(self._grants, redirect_uri, state, expires)
        return code

    def _new_refresh(self, grant: int) -> str:
        token = "sim-fiken-refresh-" + secrets.token_urlsafe(18) + "="
        self.issued.append(token)
        self._refresh[token] = grant
        return token

    def _client_ok(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            pair = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
        except ValueError:
            return False
        client_id, _, secret = pair.partition(":")
        return (unquote_plus(client_id), unquote_plus(secret)) == (
            self.client_id,
            self.client_secret,
        )


def _error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)
