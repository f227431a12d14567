"""Tripletex's session tokens: created from the consumer and employee tokens, sent as HTTP Basic.

From Tripletex's published description (`openapi.json`, "Authentication") and its official
example (`Tripletex/tripletex-api2`, `examples/bash/authentication/example.sh`):

* `PUT /token/session/:create?consumerToken=…&employeeToken=…&expirationDate=YYYY-MM-DD`
  "requires a consumerToken and an employeeToken created with the same consumer token, but not
  an authentication header"; the session token is in the answer's `value.token`.
* Every other call: HTTP Basic, the username "what company to access" (`0`: the employee's
  own company; another id: a client of an accounting office), the password the session token.

How long a session may last is not documented, nor whether it ends at the start or the end of
its `expirationDate`. Here a session asks for `session_days` (1) beyond today and is taken to
end at the *start* of its expiration date (on `timezone`'s calendar), less a margin: it is
renewed before then, and at once after a 401 (then the call is repeated once).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Final

from pydantic import SecretStr

from connectors.rest._auth import Authenticator, TokenRequest
from kravia_sync import ConnectorError, register_secrets

__all__ = ["SESSION_CREATE_PATH", "SessionTokenAuth"]

SESSION_CREATE_PATH: Final = "token/session/:create"
RENEW_MARGIN: Final = timedelta(minutes=10)


class SessionTokenAuth(Authenticator):
    """A Tripletex session for one consumer and employee token, renewed before it ends."""

    def __init__(
        self,
        *,
        consumer_token: SecretStr,
        employee_token: SecretStr,
        company_id: int,
        timezone: Callable[[], tzinfo],
        session_days: int = 1,
        create_path: str = SESSION_CREATE_PATH,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._consumer = consumer_token
        self._employee = employee_token
        self.company_id = company_id
        self._timezone = timezone
        self.session_days = session_days
        self.create_path = create_path
        self.clock = clock
        self._header: SecretStr | None = None
        self._renew_at: datetime | None = None
        self._seen: list[str] = []
        self._lock = threading.Lock()
        self.sessions_created = 0

    def headers(self, request_token: TokenRequest) -> dict[str, str]:
        with self._lock:
            if self._header is None or self._renew_at is None or self.clock() >= self._renew_at:
                self._create(request_token)
            assert self._header is not None  # noqa: S101 - _create sets it or raises
            return {"Authorization": self._header.get_secret_value()}

    def refresh(self) -> bool:
        """After a 401: the session has ended (or was revoked); the next call creates one."""
        with self._lock:
            self._header = None
        return True

    def secrets(self) -> list[str]:
        return [self._consumer.get_secret_value(), self._employee.get_secret_value(), *self._seen]

    def _create(self, request_token: TokenRequest) -> None:
        now = self.clock()
        zone = self._timezone()
        expiration = now.astimezone(zone).date() + timedelta(days=self.session_days)
        ends = datetime.combine(expiration, time(), tzinfo=zone)
        if ends - now <= 2 * RENEW_MARGIN:  # just before midnight: ask for a day more
            expiration += timedelta(days=1)
            ends += timedelta(days=1)
        query = {
            "consumerToken": self._consumer.get_secret_value(),
            "employeeToken": self._employee.get_secret_value(),
            "expirationDate": expiration.isoformat(),
        }
        status, body = request_token(self.create_path, query, {}, method="PUT")
        try:
            token = _session_token(status, body)
        except ConnectorError as exc:  # the server's message could echo what it was sent
            text = str(exc)
            for secret in self.secrets():
                text = text.replace(secret, "***")
            raise ConnectorError(text) from None
        pair = f"{self.company_id}:{token}".encode()
        header = "Basic " + base64.b64encode(pair).decode("ascii")
        encoded = header.removeprefix("Basic ")
        register_secrets([token, encoded])
        self._seen.extend([token, encoded])
        self._header = SecretStr(header)
        self._renew_at = ends - RENEW_MARGIN
        self.sessions_created += 1

    def __repr__(self) -> str:
        return f"SessionTokenAuth(company_id={self.company_id})"


def _session_token(status: int, body: object) -> str:
    """The token of a session-create answer; `ConnectorError` (never with a token) if none."""
    where = "creating a Tripletex session (PUT token/session/:create)"
    if not 200 <= status < 300:
        detail = ""
        if isinstance(body, dict):
            message = body.get("message")
            if isinstance(message, str) and message.strip():
                detail = f": {message.strip()[:200]}"
        hint = ""
        if status in {401, 403, 404, 422}:
            hint = " (check the consumer and employee tokens: both must belong to one consumer)"
        raise ConnectorError(f"{where} was answered {status}{detail}{hint}")
    value = body.get("value") if isinstance(body, dict) else None
    token = value.get("token") if isinstance(value, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise ConnectorError(f"{where}: the answer has no value.token")
    return token.strip()
