"""`kravia-sync auth fiken`: a person gives kravia-sync access to a Fiken company, once.

It prints Fiken's consent address (with a random `state`), takes Fiken's answer (on a local
redirect URI it listens for it; otherwise, or with `--paste`, the person pastes the address the
browser was sent to; `--code` gives it on the command line), checks the state, exchanges the
code for tokens and stores the refresh token in the source's `oauth.refresh_token_file`. Then
it asks Fiken for the company with the new access token, to show the consent covers it. No
code, token or secret is ever printed.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Annotated

import typer

from kravia_sync.cli.common import (
    ConfigOption,
    FailedError,
    SecretsOption,
    app,
    err,
    out,
    settings_from,
    user_errors,
)
from kravia_sync.connector import ConnectorError
from kravia_sync.logging import redact
from kravia_sync.settings import DEFAULT_CONFIG, Settings, SourceConfig

if TYPE_CHECKING:
    from pydantic import SecretStr

    from connectors._fiken_oauth import FikenOAuthSettings, TokenAnswer
    from connectors.fiken import FikenSettings

# The connectors' modules (httpx, pydantic) load only when this command runs: every other
# command starts without them.

__all__ = ["auth_app", "auth_fiken"]

auth_app = typer.Typer(
    help="Give kravia-sync access to a source that asks a person's consent (Fiken's OAuth2).",
    no_args_is_help=True,
)
app.add_typer(auth_app, name="auth")


@auth_app.command("fiken")
def auth_fiken(
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="The fiken source (needed when there are several)."),
    ] = None,
    paste: Annotated[
        bool,
        typer.Option(
            "--paste",
            help="Paste the address the browser was sent to, instead of listening for it on "
            "a local redirect URI.",
        ),
    ] = False,
    code: Annotated[
        str | None,
        typer.Option(
            "--code",
            help="Fiken's answer (the address the browser was sent to, or the bare code) from "
            "a consent already given; an address's state must match --state.",
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="The state the consent was started with (with --code)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for Fiken's answer.", min=1)
    ] = 300.0,
) -> None:
    """Consent once to kravia-sync reading a Fiken company (OAuth2), and store the refresh
    token: from then on the connector renews its access itself."""
    from connectors._fiken_consent import code_from, exchange_code  # noqa: PLC0415

    with user_errors():
        settings = settings_from(config, secrets_dir)
        name, fiken = _fiken_source(settings, source)
        oauth = fiken.oauth
        assert oauth is not None  # noqa: S101 - _fiken_source picks only OAuth2 sources
        try:
            secret = oauth.client_secret(settings.base_dir)
            tokens = oauth.token_file(settings.base_dir)
            if code is not None:
                given = code_from(code, state)
                answer = exchange_code(oauth, secret, given, state or "")
            else:
                answer = _consent(oauth, secret, paste=paste, timeout=timeout)
            assert answer.refresh_token is not None  # noqa: S101 - exchange_code insists
            with tokens.locked():
                tokens.save(answer.refresh_token.get_secret_value())
        except ConnectorError as exc:
            raise FailedError(f"source {name}: {exc}") from None
        except OSError as exc:
            raise FailedError(
                f"source {name}: the refresh token could not be written to {tokens.path} "
                f"({exc.strerror or exc}); nothing is stored, run this again"
            ) from None
        out.print(
            f"[green]ok[/] source {name}: Fiken's consent is stored in {tokens.path} "
            "(readable by you only); kravia-sync renews its access from it",
            highlight=False,
        )
        _show_company(fiken, answer)


def _fiken_source(settings: Settings, wanted: str | None) -> tuple[str, FikenSettings]:
    """The fiken source with OAuth2 that `--source` names (or the only one)."""
    fiken = [s for s in settings.sources if s.connector == "fiken"]
    if wanted is not None:
        named = [s for s in settings.sources if s.name == wanted]
        if not named:
            known = ", ".join(s.name for s in settings.sources) or "none"
            raise FailedError(f"--source {wanted}: no such source (sources: {known})")
        if named[0].connector != "fiken":
            raise FailedError(f"--source {wanted}: a {named[0].connector} source, not fiken")
        fiken = named
    if not fiken:
        raise FailedError('no fiken source in the configuration (connector = "fiken")')
    if len(fiken) > 1:
        names = ", ".join(s.name for s in fiken)
        raise FailedError(f"several fiken sources ({names}): say which with --source")
    return fiken[0].name, _oauth_settings(fiken[0])


def _oauth_settings(source: SourceConfig) -> FikenSettings:
    from pydantic import ValidationError  # noqa: PLC0415

    from connectors.fiken import FikenSettings  # noqa: PLC0415

    try:
        parsed = FikenSettings.model_validate(source.settings)
    except ValidationError as exc:
        details = "; ".join(
            f"sources.{source.name}.settings.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise FailedError(details) from None
    if parsed.oauth is None:
        raise FailedError(
            f"source {source.name} uses a personal API token: add an [oauth] table "
            f"(client_id, client_secret_env, refresh_token_file) to consent with OAuth2"
        )
    return parsed


def _consent(
    oauth: FikenOAuthSettings, secret: SecretStr, *, paste: bool, timeout: float
) -> TokenAnswer:
    from connectors._fiken_consent import (  # noqa: PLC0415
        CallbackListener,
        code_from,
        exchange_code,
        is_local,
    )
    from connectors._fiken_oauth import authorize_url  # noqa: PLC0415

    state = secrets.token_urlsafe(24)
    url = authorize_url(oauth, state)
    listener = None
    if not paste and is_local(oauth.redirect_uri):
        listener = CallbackListener(oauth.redirect_uri, state)  # bound before Fiken is asked
    out.print("Open this address in a browser, log in to Fiken and accept:", highlight=False)
    typer.echo(url)  # unwrapped, whatever the terminal's width
    try:
        if listener is not None:
            out.print(f"Waiting for Fiken's answer on {oauth.redirect_uri} …", highlight=False)
            code = listener.wait(timeout)
        else:
            answer = typer.prompt(
                "Paste the address the browser was sent to", hide_input=True, err=True
            )
            code = code_from(answer, state)
    finally:
        if listener is not None:
            listener.close()
    return exchange_code(oauth, secret, code, state)


def _show_company(fiken: FikenSettings, answer: TokenAnswer) -> None:
    """`GET /companies/{slug}` with the new access token: whether the consent covers it."""
    import httpx  # noqa: PLC0415

    slug = fiken.company_slug
    headers = {"Authorization": f"Bearer {answer.access_token.get_secret_value()}"}
    try:
        with httpx.Client(base_url=fiken.base_url, timeout=fiken.timeout_seconds) as client:
            response = client.get(f"companies/{slug}", headers=headers)
    except httpx.HTTPError as exc:
        err.print(
            f"[yellow]warning:[/] could not ask Fiken for the company {slug}: "
            f"{redact(type(exc).__name__)}",
            highlight=False,
        )
        return
    if response.status_code == 200:
        out.print(f"[green]ok[/] the consent covers the company {slug}", highlight=False)
        return
    err.print(
        f"[yellow]warning:[/] Fiken answered {response.status_code} for the company {slug}: "
        "check company_slug, and that the consent covers that company (Fiken: Rediger konto "
        "-> Sikkerhet -> Apper du har gitt tilgang til)",
        highlight=False,
    )
