"""The `kravia-sync` command line."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from typer.core import TyperGroup

from kravia_sync.engine.resolve import ResolveError
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.pacing import Pacing
from kravia_sync.logging import configure_logging, redact, register_secrets
from kravia_sync.settings import (
    TOKEN_ENV,
    TOKEN_SECRET_FILE,
    ConfigError,
    Settings,
    load_settings,
)
from kravia_sync.state.errors import LeaseHeldError, SchemaError, StateError
from kravia_sync.state.store import StateStore

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

# The order `--help` lists the commands in: the daily ones first, then a person's decisions,
# then setting up (the commands are defined in several modules, in no such order).
COMMAND_ORDER = (
    "reconcile",
    "plan",
    "status",
    "cases",
    "refresh",
    "hold",
    "release",
    "start",
    "check",
    "unlock",
    "resolve",
    "payouts",
    "daemon",
    "webhook",
    "init",
    "auth",
    "connectors",
    "new-connector",
    "simulate",
    "demo",
)


def one_line_paragraphs(text: str | None) -> str | None:
    """Help text as the terminal should wrap it: each paragraph on one line. Docstrings break
    their lines for the source file's width, and rich keeps those breaks in the list of
    commands, so help broke mid-sentence however wide the terminal."""
    if text is None:
        return None
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in part.splitlines()) for part in paragraphs)


def _unwrap_help(command: Any) -> None:  # noqa: ANN401 - typer's own click Command
    """`one_line_paragraphs` for a command's help, its parameters' and its subcommands'."""
    command.help = one_line_paragraphs(command.help)
    for param in command.params:
        if getattr(param, "help", None):
            param.help = one_line_paragraphs(param.help)
    for sub in getattr(command, "commands", {}).values():
        _unwrap_help(sub)


class _Commands(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - typer's own
        super().__init__(*args, **kwargs)
        _unwrap_help(self)

    def list_commands(self, ctx: Any) -> list[str]:  # noqa: ANN401 - typer's own click Context
        names = super().list_commands(ctx)
        rank = {name: index for index, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


app = typer.Typer(
    name="kravia-sync",
    cls=_Commands,
    help="Forward overdue invoices from your sources into Kravia debt collection, exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
webhook_app = typer.Typer(help="Kravia's webhook for your creditor.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")


class _LazyConsole:
    """A rich console made on first use: a run that prints only JSON never loads rich."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the console's own attributes
        return getattr(self.real(), name)

    def real(self) -> Console:
        """The console itself, made now if it was not yet."""
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415

            self._console = Console(stderr=self._stderr)
        return self._console


out = cast("Console", _LazyConsole(stderr=False))
err = cast("Console", _LazyConsole(stderr=True))


def real_console(console: Console) -> Console:
    """The rich console behind `out` or `err` (a live display needs the console itself: it
    enters it as a context manager, which a stand-in cannot pass on)."""
    lazy: object = console
    return lazy.real() if isinstance(lazy, _LazyConsole) else console


def new_table(*headers: str, **options: Any) -> Table:  # noqa: ANN401 - rich's own options
    from rich.table import Table  # noqa: PLC0415

    return Table(*headers, **options)


def styled_text(text: str, **options: Any) -> Text:  # noqa: ANN401 - rich's own options
    from rich.text import Text  # noqa: PLC0415

    return Text(text, **options)


def escape_markup(text: str) -> str:
    """`text` with its square brackets made literal, to print inside rich markup."""
    from rich.markup import escape  # noqa: PLC0415

    return escape(text)


EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_PENDING = 2  # plan: changes pending
EXIT_ATTENTION = 3  # reconcile: done, with work pending (kravia_sync.engine.outcome)
# What `plan` shows as work a pass would do (exit 2): calls (a case's, the pause of a held
# case, a payment's), and decisions it would write. Waits, holds, policy refusals and
# approvals are not: a pass would do nothing about them.
PENDING_STEPS = frozenset(
    {
        "register",
        "upload",
        "start",
        "lookup",
        "verify_upload",
        "verify_start",
        "verify_adopted",
        "adopt",
        "identify",
        "needs_review",
        "hold_action",
        "send_payment",
        "verify_payment",
    }
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The configuration file.", show_default=True)
]
SecretsOption = Annotated[
    Path | None,
    typer.Option(
        "--secrets-dir",
        help="Directory of secret files (kravia_token, …). Default: $CREDENTIALS_DIRECTORY, "
        "else /run/secrets when it exists.",
    ),
]


class FailedError(Exception):
    """A command failure with a message for the user (already redacted)."""


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except (ConfigError, SchemaError, StateError, LeaseHeldError, FailedError, ResolveError) as exc:
        err.print(f"[bold red]error:[/] {redact(str(exc))}", highlight=False, markup=True)
        raise typer.Exit(EXIT_FAILED) from None


def settings_from(config: Path, secrets_dir: Path | None) -> Settings:
    settings = load_settings(config, secrets_dir=secrets_dir)
    register_secrets(settings.secret_values())
    configure_logging(level=settings.log.level, fmt=settings.log.format)
    return settings


def kravia_client(settings: Settings, pacing: Pacing | None = None) -> KraviaClient:
    if settings.kravia_token is None:
        raise FailedError(
            f"no Kravia token: set the environment variable {TOKEN_ENV}, or put it in a file "
            f"named {TOKEN_SECRET_FILE} in the secrets directory (--secrets-dir)"
        )
    kravia = settings.kravia
    return KraviaClient(
        base_url=kravia.base_url,
        token=settings.kravia_token.get_secret_value(),
        timeout=kravia.timeout_seconds,
        max_in_flight=kravia.max_in_flight,
        requests_per_second=kravia.requests_per_second,
        pacing=pacing,
    )


@contextlib.asynccontextmanager
async def store_and_client(settings: Settings) -> AsyncIterator[tuple[StateStore, KraviaClient]]:
    """The state store and a Kravia client for a command that runs a pass (the client says
    where the token goes when there is none); both are closed when the block ends."""
    with StateStore(settings.state_path) as store:
        async with kravia_client(settings) as client:
            yield store, client


def daemon_clients() -> Callable[[Settings], KraviaClient]:
    """Clients for a daemon's passes, sharing one pace, so what a pass learned of Kravia's
    limits holds for the next (a changed max_in_flight or requests_per_second starts anew)."""
    paces: dict[tuple[int, float | None], Pacing] = {}

    def client_for(settings: Settings) -> KraviaClient:
        kravia = settings.kravia
        key = (kravia.max_in_flight, kravia.requests_per_second)
        if key not in paces:
            paces.clear()
            paces[key] = Pacing(max_in_flight=key[0], ceiling=key[1])
        return kravia_client(settings, pacing=paces[key])

    return client_for
