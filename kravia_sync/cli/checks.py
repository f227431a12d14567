"""The commands that check a set-up against the world: `check` (with `--probe`) and
`webhook configure`."""

import asyncio
import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

import typer

from kravia_sync.cli.common import (
    EXIT_PENDING,
    ConfigOption,
    FailedError,
    SecretsOption,
    app,
    err,
    escape_markup,
    kravia_client,
    new_table,
    out,
    settings_from,
    styled_text,
    user_errors,
    webhook_app,
)
from kravia_sync.connector import Connector
from kravia_sync.engine.canary import probe as probe_kravia
from kravia_sync.engine.canary import stored_contract
from kravia_sync.engine.reconcile import (
    build_connector,
)
from kravia_sync.kravia.contract import Contract
from kravia_sync.kravia.errors import KraviaAuthError, KraviaError
from kravia_sync.kravia.probe import Finding, Verdict, differing
from kravia_sync.logging import redact
from kravia_sync.settings import (
    DEFAULT_CONFIG,
    WEBHOOK_SECRET_ENV,
    WEBHOOK_SECRET_FILE,
    Settings,
    SourceConfig,
)
from kravia_sync.state.store import StateStore

__all__ = ["check", "webhook_configure", "webhook_url_problem"]


@app.command()
def check(
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Also read Kravia's answers (read-only) and check their shapes against what "
            "kravia-sync assumes; shows the contract the first-contact canary recorded.",
        ),
    ] = False,
) -> None:
    """Validate the configuration, each source's settings, the state store, Kravia's token, and
    each source's credentials and queries where it can tell (sql, fiken, tripletex, rest)."""
    with user_errors():
        settings = settings_from(config, secrets_dir)
        out.print(f"[green]ok[/] {config}: valid configuration", highlight=False)
        connectors: list[tuple[SourceConfig, Connector]] = []
        for source in settings.sources:
            connectors.append((source, build_connector(settings, source)))
            out.print(f"[green]ok[/] source {source.name} ({source.connector})", highlight=False)
        with StateStore(settings.state_path) as store:
            version = store.schema_version()
            known_id = store.latest_kravia_id()
            contract = stored_contract(store, settings.kravia.base_url)
        out.print(
            f"[green]ok[/] state store {settings.state_path} (schema {version})", highlight=False
        )

        async def try_token() -> list[Finding]:
            async with kravia_client(settings) as client:
                await client.check_token()
                return await probe_kravia(client, kravia_id=known_id) if probe else []

        # Kravia's token and each source's credentials are tried whatever the other answers,
        # so that one `check` names every problem.
        failed: list[str] = []
        findings: list[Finding] = []
        try:
            findings = asyncio.run(try_token())
            out.print(f"[green]ok[/] Kravia at {settings.kravia.base_url} accepts the token")
        except FailedError as exc:  # no token
            failed.append(str(exc))
        except KraviaAuthError as exc:
            failed.append(str(exc))
        except KraviaError as exc:
            failed.append(f"could not reach Kravia at {settings.kravia.base_url}: {exc}")
        failed.extend(_check_sources(connectors))
        if failed:
            raise FailedError("; ".join(failed))
    if probe:
        _print_findings(findings)
        _print_contract(contract, settings)
        if differing(findings):
            raise typer.Exit(EXIT_PENDING)


def _check_sources(connectors: list[tuple[SourceConfig, Connector]]) -> list[str]:
    """Each source asked with its credentials (`Connector.check`), every one of them even
    when one fails: what failed, one line for each source (its problems printed). A source
    without problems is then asked for its warnings (`Connector.check_warnings`), which are
    printed and fail nothing."""
    failed: list[str] = []
    for source, connector in connectors:
        problems = connector.check()
        if problems:
            failed.append(f"the credentials check failed for source {source.name}")
            for problem in problems:
                err.print(
                    f"[bold red]error:[/] source {source.name}: {escape_markup(redact(problem))}",
                    highlight=False,
                    markup=True,
                )
            continue
        if problems is not None:
            out.print(
                f"[green]ok[/] source {source.name} answers with its credentials",
                highlight=False,
            )
        for warning in connector.check_warnings():
            err.print(
                f"[bold yellow]warning:[/] source {source.name}: {escape_markup(redact(warning))}",
                highlight=False,
            )
    return failed


_VERDICT_STYLE = {Verdict.HOLDS: "green", Verdict.DIFFERS: "bold red", Verdict.NOT_SEEN: "yellow"}


def _print_findings(findings: list[Finding]) -> None:
    table = new_table(title="Kravia's answers against what kravia-sync assumes (shapes only)")
    table.add_column("assumption", overflow="fold")
    table.add_column("what came back", overflow="fold")
    table.add_column("", no_wrap=True)
    table.add_column("note", overflow="fold")
    for finding in findings:
        style = _VERDICT_STYLE[finding.verdict]
        table.add_row(
            styled_text(finding.assumption),
            styled_text(finding.seen),
            styled_text(finding.verdict.value, style=style),
            styled_text(finding.note),
        )
    out.print(table)


def _print_contract(contract: Contract | None, settings: Settings) -> None:
    base_url = settings.kravia.base_url
    if settings.policy.canary == "off":
        out.print('first-contact canary: off (policy.canary = "off")')
    if contract is None:
        out.print(
            f"contract with {base_url}: none recorded yet; the first pass with a new invoice "
            "sends that one case first and checks it (the canary)",
            highlight=False,
        )
        return
    when = f"{contract.checked_at:%Y-%m-%d %H:%M} UTC"
    case = contract.accounting_invoice_id or "?"
    if contract.confirmed:
        out.print(
            f"contract with {base_url}: [green]confirmed[/] {when} on case {case} "
            f"(Kravia id {contract.kravia_id})",
            highlight=False,
        )
        return
    out.print(
        f"contract with {base_url}: [bold red]differs[/] (checked {when} on case {case}); "
        "passes send nothing until it is read right:",
        highlight=False,
    )
    _print_findings(differing(contract.findings))


@webhook_app.command("configure")
def webhook_configure(
    url: Annotated[
        str, typer.Option("--url", help="Where Kravia sends webhooks: https://…/kravia/webhook.")
    ],
    disable: Annotated[
        bool, typer.Option("--disable", help="Keep the URL, but have Kravia send nothing.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    secrets_dir: SecretsOption = None,
) -> None:
    """Set the creditor's webhook at Kravia: the URL, the secret it signs with (from the
    secrets directory or the environment) and whether it is enabled."""
    with user_errors():
        settings = settings_from(config, secrets_dir)
        problem = webhook_url_problem(url)
        if problem is not None:
            raise FailedError(f"--url {url}: {problem}")
        if settings.kravia_webhook_secret is None:
            raise FailedError(
                f"no webhook secret: set the environment variable {WEBHOOK_SECRET_ENV}, or put "
                f"it in a file named {WEBHOOK_SECRET_FILE} in the secrets directory "
                "(--secrets-dir); the daemon checks signatures with the same secret"
            )
        secret = settings.kravia_webhook_secret.get_secret_value()

        async def configure() -> None:
            async with kravia_client(settings) as client:
                await client.configure_webhook(
                    creditor_id=settings.kravia.creditor_id,
                    url=url,
                    secret=secret,
                    enabled=not disable,
                )

        try:
            asyncio.run(configure())
        except KraviaAuthError as exc:
            raise FailedError(str(exc)) from None
        except KraviaError as exc:
            raise FailedError(f"Kravia did not set the webhook: {exc}") from None
    state = "disabled" if disable else "enabled"
    out.print(f"webhook at Kravia {state}: {url}", highlight=False)


def webhook_url_problem(url: str) -> str | None:
    """Why Kravia cannot be sent `url` as its webhook, or None. Webhooks carry a signature,
    not encryption: plain http is only for this machine (tests, the simulator)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "not an http(s) URL such as https://sync.example.no/kravia/webhook"
    if parts.scheme == "http" and not _is_local_host(parts.hostname):
        return "webhooks must go over https:// (plain http only to localhost)"
    return None


def _is_local_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
