"""The commands that set things up or try them out: `init`, `connectors`, `new-connector`,
`simulate` and `demo`."""

import json
import secrets
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from kravia_sync.cli.common import (
    EXIT_DONE,
    EXIT_FAILED,
    ConfigOption,
    app,
    err,
    new_table,
    out,
    styled_text,
    user_errors,
)
from kravia_sync.cli.summary import print_summary
from kravia_sync.engine.summary import RunStatus
from kravia_sync.settings import (
    DEFAULT_CONFIG,
)

__all__ = ["connectors_command", "demo", "init", "new_connector", "simulate"]


@app.command()
def init(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[
        str, typer.Option("--source", help="The connector of the example source: folder, sql, …")
    ] = "folder",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example configuration."""
    from kravia_sync.cli.example import EXAMPLE_CONFIG  # noqa: PLC0415
    from kravia_sync.connector import load_connector  # noqa: PLC0415

    if config.exists() and not force:
        err.print(f"[red]error:[/] {config} exists; use --force to overwrite it")
        raise typer.Exit(EXIT_FAILED)
    try:
        example = load_connector(source).example_config
    except (LookupError, TypeError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    if not example:
        example = f'[[sources]]\nname = "{source}"\nconnector = "{source}"\n[sources.settings]\n'
    config.write_text(EXAMPLE_CONFIG + "\n" + example, encoding="utf-8")
    out.print(f"wrote {config}: edit creditor_id and the source, then run `kravia-sync check`")


@app.command("connectors")
def connectors_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print them as JSON, with each settings JSON Schema.")
    ] = False,
) -> None:
    """List the installed connectors (built-in and third-party): package, version, settings."""
    from kravia_sync.plugins import installed_connectors  # noqa: PLC0415

    found = installed_connectors()
    if as_json:
        sys.stdout.write(json.dumps([info.as_json() for info in found], indent=2) + "\n")
    else:
        table = new_table("connector", "package", "version", "settings (* required)")
        for info in found:
            settings = (
                styled_text(f"cannot load: {info.error}", style="red")
                if info.error
                else styled_text(", ".join(info.settings_keys()))
            )
            table.add_row(info.name, info.package, info.version, settings)
        out.print(table)
        out.print("JSON Schema of each connector's settings: kravia-sync connectors --json")
    if any(info.error for info in found):
        raise typer.Exit(EXIT_FAILED)


@app.command("new-connector")
def new_connector(
    name: Annotated[str, typer.Argument(help="The connector's name, e.g. my-erp.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the package's directory.")
    ] = Path(),
) -> None:
    """Create a connector package: pyproject with the entry point, settings, connector, a test
    running the conformance kit, README."""
    from kravia_sync.cli.scaffold import ConnectorNames, scaffold  # noqa: PLC0415

    try:
        target = scaffold(name, directory)
    except (ValueError, FileExistsError) as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    names = ConnectorNames.of(name)
    out.print(
        f"created {target} (package {names.dist}, module {names.module})",
        markup=False,
        soft_wrap=True,
    )
    out.print(
        f"next: cd {target} && pip install -e '.[test]' && pytest", markup=False, soft_wrap=True
    )


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8085,
    token: Annotated[
        str | None, typer.Option(envvar="KRAVIA_SIM_TOKEN", help="Token to accept.")
    ] = None,
    creditor_id: Annotated[int | None, typer.Option(help="Only accept this creditor.")] = None,
    latency_ms: Annotated[float, typer.Option(help="Latency added to every call.")] = 0.0,
    error_5xx: Annotated[float, typer.Option(help="Share of calls answered 5xx.")] = 0.0,
    rate_limit_429: Annotated[float, typer.Option(help="Share of calls answered 429.")] = 0.0,
    rate_limit: Annotated[
        float | None,
        typer.Option(
            help="Enforce this many calls per second (a token bucket of one second's worth); "
            "calls beyond are answered 429 with Retry-After."
        ),
    ] = None,
    drop_after_commit: Annotated[
        float, typer.Option(help="Share of mutating calls applied, then dropped unanswered.")
    ] = 0.0,
    timeout: Annotated[float, typer.Option(help="Share of calls that stall.")] = 0.0,
    data_file: Annotated[Path | None, typer.Option(help="Keep cases in this JSON file.")] = None,
    # the simulator's DetailsShape and SearchShape names (a test keeps them the same)
    details_shape: Annotated[
        Literal["list", "object", "named"], typer.Option(help="Shape of invoice details.")
    ] = "list",
    search_shape: Annotated[
        Literal["items", "list", "data", "value"], typer.Option(help="Envelope of search.")
    ] = "items",
    search_without_aid: Annotated[
        bool,
        typer.Option("--search-without-aid", help="Leave accountingInvoiceId out of search."),
    ] = False,
    clock_offset_seconds: Annotated[
        float, typer.Option(help="Kravia's clock minus the host's, in seconds.")
    ] = 0.0,
    register_shape: Annotated[
        Literal["id", "bare", "invoice_id", "no_id"],
        typer.Option(help="What register answers."),
    ] = "id",
    time_zone: Annotated[
        Literal["utc", "local", "offset"], typer.Option(help="How lastUpdatedTime is written.")
    ] = "utc",
) -> None:
    """Run the local Kravia simulator (the same API, strict validation, faults on demand)."""
    _require_simulator_extra("simulate")
    from kravia_sync.testing.simulator import Faults, Shape, serve  # noqa: PLC0415

    try:
        shape = Shape.from_dict(
            {
                "details_shape": details_shape,
                "search_shape": search_shape,
                "search_without_aid": search_without_aid,
                "clock_offset_seconds": clock_offset_seconds,
                "register_shape": register_shape,
                "time_zone": time_zone,
            }
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--clock-offset-seconds") from None

    accepted = token or secrets.token_urlsafe(16)
    if token is None:
        out.print(f"accepting the token: {accepted}  (set KRAVIA_SIM_TOKEN to choose one)")
    out.print(f"Kravia simulator on http://{host}:{port}/api/v2/  (cases: /_sim/cases)")
    faults = Faults(
        latency_ms=latency_ms,
        rate_limit=rate_limit,
        error_5xx=error_5xx,
        rate_limit_429=rate_limit_429,
        drop_after_commit=drop_after_commit,
        timeout=timeout,
    )
    serve(
        host=host,
        port=port,
        token=accepted,
        creditor_id=creditor_id,
        faults=faults,
        data_file=data_file,
        shape=shape,
    )


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo keeps its files and state.")
    ] = Path("state/demo"),
) -> None:
    """Run a pass of the bundled sample invoices against the bundled simulator. Run it twice:
    the second pass has nothing to do."""
    _require_simulator_extra("demo")
    from kravia_sync.cli.demo import run_demo  # noqa: PLC0415

    with user_errors():
        summary = run_demo(
            directory, console=out, show_summary=lambda shown: print_summary(shown, out)
        )
    raise typer.Exit(EXIT_FAILED if summary.status == RunStatus.FAILED else EXIT_DONE)


def _require_simulator_extra(command: str) -> None:
    """The bundled simulator reads multipart uploads with python-multipart, which comes with
    the `[simulator]` extra, not with kravia-sync itself: say so, rather than fail at the
    first upload."""
    try:
        import python_multipart  # noqa: F401, PLC0415
    except ImportError:
        err.print(
            f"`kravia-sync {command}` runs the bundled simulator, which needs the [simulator] "
            "extra: pip install 'kravia-sync[simulator]'",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILED) from None
