"""What the Fiken OAuth2 tests share: one app registered with the Fiken simulator, and
configurations and connectors that use it."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import write_config

from connectors.fiken import FikenConnector
from kravia_sync.testing.fiken import (
    FikenCompany,
    FikenOAuthServer,
    FikenSimulator,
    RunningFiken,
    demo_company,
)

# The fixtures each test module defines with these: the client secret in the environment, a
# company of 60 invoices (42 to collect), and the simulator serving it.

CLIENT_ID = "kravia-sync-test-app"
CLIENT_SECRET = "client-secret-Vb7Qk2Lz9Rt"
SLUG = "fiken-demo-as"
FAST = 200.0


@dataclass
class Fiken:
    """The running Fiken simulator and its OAuth2 side."""

    simulator: FikenSimulator
    running: RunningFiken
    oauth: FikenOAuthServer

    @property
    def base_url(self) -> str:
        return self.running.base_url

    @property
    def oauth_url(self) -> str:
        return self.running.oauth_url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_fiken(company: FikenCompany | None = None) -> Iterator[Fiken]:
    """The Fiken simulator with the test app registered, serving."""
    oauth = FikenOAuthServer(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, expires_in=3600)
    company = company or demo_company(invoices=60, customers=12, slug=SLUG)
    simulator = FikenSimulator(company, oauth=oauth, requests_per_second=FAST, burst=20)
    with RunningFiken(simulator) as running:
        yield Fiken(simulator, running, oauth)


def oauth_settings(
    fiken: Fiken, *, redirect_uri: str = "http://127.0.0.1:8765/callback"
) -> dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "client_secret_env": "FIKEN_CLIENT_SECRET",
        "redirect_uri": redirect_uri,
        "refresh_token_file": "secrets/fiken-refresh-token",
        "url": fiken.oauth_url,
    }


def connector(fiken: Fiken, base_dir: Path, **extra: Any) -> FikenConnector:
    built = FikenConnector.from_settings(
        {
            "company_slug": SLUG,
            "credit_notes_since": "2000-01-01",
            "oauth": oauth_settings(fiken),
            "base_url": fiken.base_url,
            "page_size": 25,
            "requests_per_second": FAST,
            **extra,
        },
        base_dir=base_dir,
    )
    assert isinstance(built, FikenConnector)
    return built


def token_path(base_dir: Path) -> Path:
    return base_dir / "secrets" / "fiken-refresh-token"


def stored(base_dir: Path) -> str:
    return token_path(base_dir).read_text(encoding="utf-8").strip()


def seed(fiken: Fiken, base_dir: Path) -> str:
    """A consent given before (as `auth fiken` leaves it): its refresh token in the file."""
    token = fiken.oauth.issue_refresh_token()
    path = token_path(base_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n", encoding="utf-8")
    return token


def oauth_source(fiken: Fiken, *, redirect_uri: str = "http://127.0.0.1:8765/callback") -> str:
    settings = oauth_settings(fiken, redirect_uri=redirect_uri)
    lines = "\n".join(f'{key} = "{value}"' for key, value in settings.items())
    return f"""
[[sources]]
name = "fiken"
connector = "fiken"
[sources.settings]
company_slug = "{SLUG}"
credit_notes_since = 2000-01-01
base_url = "{fiken.base_url}"
page_size = 50
requests_per_second = {FAST}
[sources.settings.retry]
attempts = 2
backoff_seconds = 0.01
[sources.settings.oauth]
{lines}
"""


def config_for(directory: Path, kravia_url: str, source: str) -> Path:
    config = write_config(directory, kravia_url)
    head = config.read_text(encoding="utf-8").split("[[sources]]")[0]
    config.write_text(head + source, encoding="utf-8")
    return config
