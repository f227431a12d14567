"""Configuration: one TOML file, environment variables and a secrets directory.

Precedence, highest first: environment variables, secret files, the TOML file, defaults. The
Kravia token is a secret: `KRAVIA_TOKEN` in the environment or a file `kravia_token` in the
secrets directory (`--secrets-dir`, else systemd's `$CREDENTIALS_DIRECTORY`, else
`/run/secrets` when it exists). It is refused in the TOML file, which tends to be committed.
The webhook secret (`KRAVIA_WEBHOOK_SECRET`, file `kravia_webhook_secret`) is read the same way.
Relative paths in the file are relative to the file's own directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kravia_sync.errors import KraviaSyncError
from kravia_sync.kravia.assumptions import DEFAULT_BASE_URL
from kravia_sync.lifecycle import StartPolicy

__all__ = [
    "DEFAULT_CONFIG",
    "ConfigError",
    "DaemonSettings",
    "KraviaSettings",
    "PolicySettings",
    "RetrySettings",
    "Settings",
    "SourceConfig",
    "WebhookSettings",
    "load_settings",
]

DEFAULT_CONFIG = Path("kravia-sync.toml")
TOKEN_ENV = "KRAVIA_TOKEN"
TOKEN_SECRET_FILE = "kravia_token"
# The secret Kravia signs its webhooks with: a secret like the token, never in the file.
WEBHOOK_SECRET_ENV = "KRAVIA_WEBHOOK_SECRET"
WEBHOOK_SECRET_FILE = "kravia_webhook_secret"


class ConfigError(KraviaSyncError):
    """The configuration cannot be used; the message names the file, the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KraviaSettings(_Section):
    base_url: str = DEFAULT_BASE_URL
    creditor_id: int = Field(gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    # The most calls in flight; the client finds how many Kravia takes well, up to this.
    max_in_flight: int = Field(default=16, ge=1, le=64)
    # A hard ceiling (a contract that names one); unset, the client finds the rate Kravia
    # allows from its 429 answers.
    requests_per_second: float | None = Field(default=None, gt=0)
    start_message: str = "Collection started by kravia-sync"
    # How often a pass pulls back the status of Kravia's cases (0: every pass). Passes in
    # between make no call when nothing changed; `kravia-sync refresh` pulls back at once.
    status_every_seconds: float = Field(default=900.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://api.kravia.ai/api/v2/")
        return value if value.endswith("/") else value + "/"


class PayoutSettings(_Section):
    """How Kravia's payouts to the creditor look in the creditor's books. A payment record
    that matches any of these is a payout and is never sent back to Kravia."""

    # Pydantic gives each instance its own copy of a list default (no `default_factory=list`,
    # whose signature pydantic would read through Python's tokenizer at every start).

    payers: list[str] = []  # payer names, case does not matter
    reference_prefixes: list[str] = []  # start of the reference text
    kids: list[str] = []
    accounts: list[str] = []  # the account Kravia pays from


class PolicySettings(_Section):
    min_days_overdue: int = Field(default=14, ge=0)
    min_amount: Decimal = Field(default=Decimal(0), ge=0)
    start: StartPolicy = StartPolicy.AUTO
    timezone: str = "Europe/Oslo"  # whose calendar counts the days overdue
    payouts: PayoutSettings = PayoutSettings()
    # Hold-up for a complete read that misses many known cases at once: above this share of a
    # source's cases gone in one pass, the pass stops and asks for confirmation.
    max_gone_share: float = Field(default=0.5, gt=0, le=1)
    gone_breaker_min_cases: int = Field(default=10, ge=1)  # smaller sources never trip it
    # A held invoice already in collection: the Kravia action that pauses it (its name is
    # unpublished; e.g. "Pause"), sent once per hold. Unset: the case is only flagged.
    hold_action: str | None = Field(default=None, min_length=1)
    # The first-contact canary: while this state store has no confirmed contract with this
    # Kravia, a pass sends one case end to end and reads it back before any other.
    canary: Literal["on", "off"] = "on"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone (e.g. Europe/Oslo)") from None
        return value

    def today(self, now: datetime) -> date:
        """The calendar day `now` falls on where days overdue are counted."""
        return now.astimezone(ZoneInfo(self.timezone)).date()


class RetrySettings(_Section):
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    backoff_cap_seconds: float = Field(default=3600.0, gt=0)
    retries_per_pass: int = Field(default=4, ge=0)
    max_inline_wait_seconds: float = Field(default=30.0, ge=0)
    settle_seconds: float = Field(default=120.0, ge=0)
    max_lookups: int = Field(default=12, ge=1)
    # An upload whose answer was lost and whose case details do not list documents is sent
    # again (a second copy of a PDF harms nobody); false: a person checks instead.
    resend_unconfirmed_uploads: bool = True


class StateSettings(_Section):
    path: Path = Path("state/kravia-sync.db")
    lease_seconds: float = Field(default=120.0, gt=0)


class LogSettings(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


def _check_schedule(value: str | None) -> str | None:
    from kravia_sync.schedule import parse_schedule  # noqa: PLC0415

    return None if value is None else parse_schedule(value).text


class DaemonSettings(_Section):
    """`kravia-sync daemon`: when sources run, how failures back off, where HTTP listens."""

    # Each source's schedule unless it sets its own: an interval (30s, 15m, 1h30m) or a cron
    # expression (minute hour day month weekday) read in `policy.timezone`.
    schedule: str = "15m"
    host: str = "127.0.0.1"  # /healthz, /readyz and /metrics; localhost unless you mean it
    port: int = Field(default=9464, ge=0, le=65535)  # 0: any free port (logged at start)
    # A failed pass of a source is retried after a back-off that doubles from `backoff_seconds`
    # up to `backoff_cap_seconds`; scheduled runs inside the back-off are skipped.
    backoff_seconds: float = Field(default=60.0, gt=0)
    backoff_cap_seconds: float = Field(default=3600.0, gt=0)
    # After this many failed passes in a row, an error line an operator can alert on, and
    # /readyz answers 503.
    alert_after_failures: int = Field(default=3, ge=1)
    # SIGTERM: calls in flight are allowed this long to finish before the pass is cut off.
    stop_timeout_seconds: float = Field(default=60.0, gt=0)
    # A pass still running after this long has overrun: an error line an operator can alert
    # on, /readyz answers 503, and the pass is asked to stop as at SIGTERM (cut off after
    # `stop_timeout_seconds` more); it counts as a failed pass of its source.
    pass_timeout_seconds: float = Field(default=1800.0, gt=0)

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        return _check_schedule(value)


class WebhookSettings(_Section):
    """`kravia-sync daemon`'s receiver of Kravia's webhooks: its own listener, since it must
    be reachable by Kravia while /healthz, /readyz and /metrics stay local. Off by default."""

    enabled: bool = False
    host: str = "0.0.0.0"  # noqa: S104 - Kravia must reach it; health and metrics stay local
    port: int = Field(default=9465, ge=0, le=65535)  # 0: any free port (logged at start)
    # Refuse (401) a webhook whose signature matches none of the candidate recipes; false: a
    # mismatch is counted and logged, and the webhook is still taken as a hint.
    require_signature: bool = False
    max_body_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    # The refresh budget: at most `refreshes_per_second` case reads (after a burst of
    # `refresh_burst`), and at most `queue_size` distinct cases waiting; more are dropped
    # (the status pull-back of the passes still reads them).
    refreshes_per_second: float = Field(default=2.0, gt=0, le=100)
    refresh_burst: int = Field(default=5, ge=1, le=1000)
    queue_size: int = Field(default=100, ge=1, le=100_000)


class PaymentsMode(StrEnum):
    """How a source tells of money paid."""

    AMOUNT_DROPS = "amount_drops"  # an invoice's outstanding amount drops
    RECORDS = "records"  # it yields payment and credit-note records
    OFF = "off"  # it does not: nothing is forwarded


class SourceConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    connector: str
    schedule: str | None = None  # the daemon's schedule for this source; unset: daemon.schedule
    id_prefix: str = Field(default="", pattern=r"^\S*$")  # no spaces: ids are compared as is
    # How the source tells of money paid (`PaymentsMode`). Unset: the connector's default
    # (folder: records; sql, rest, fiken, tripletex: amount_drops).
    payments: PaymentsMode | None = None
    # Whether an invoice number names one invoice of this source (true: a record whose id
    # changed since its case was registered is that case's, see `kravia_sync.engine.drift`;
    # false, for a source whose numbers repeat: every invoice needs an id of its own).
    unique_invoice_numbers: bool = True
    settings: dict[str, Any] = {}

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        return _check_schedule(value)


_toml_file: ContextVar[Path | None] = ContextVar("_toml_file", default=None)


class Settings(BaseSettings):
    """Everything kravia-sync is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="KRAVIA_SYNC_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    kravia_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices(TOKEN_SECRET_FILE, TOKEN_ENV)
    )
    kravia: KraviaSettings
    policy: PolicySettings = PolicySettings()
    retry: RetrySettings = RetrySettings()
    state: StateSettings = StateSettings()
    log: LogSettings = LogSettings()
    daemon: DaemonSettings = DaemonSettings()
    webhook: WebhookSettings = WebhookSettings()
    kravia_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices(WEBHOOK_SECRET_FILE, WEBHOOK_SECRET_ENV)
    )
    sources: list[SourceConfig] = []
    base_dir: Path = Field(default=Path(), exclude=True)

    @field_validator("kravia_token", "kravia_webhook_secret", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _signatures_need_a_secret(self) -> Settings:
        if self.webhook.require_signature and self.kravia_webhook_secret is None:
            raise ValueError(
                f"webhook.require_signature: no webhook secret to check signatures with; set "
                f"the environment variable {WEBHOOK_SECRET_ENV} or put it in a file named "
                f"{WEBHOOK_SECRET_FILE} in the secrets directory"
            )
        return self

    @model_validator(mode="after")
    def _sources_keep_ids_apart(self) -> Settings:
        names: set[str] = set()
        prefixes: dict[str, str] = {}
        for index, source in enumerate(self.sources):
            if source.name in names:
                raise ValueError(f"sources[{index}].name: {source.name!r} is used twice")
            names.add(source.name)
            if source.id_prefix in prefixes:
                raise ValueError(
                    f"sources[{index}].id_prefix: sources {prefixes[source.id_prefix]!r} and "
                    f"{source.name!r} share the prefix {source.id_prefix!r}, so their invoice ids "
                    "could collide in Kravia; give each source its own id_prefix"
                )
            prefixes[source.id_prefix] = source.name
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del dotenv_settings
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            file_secret_settings,
        ]
        toml_file = _toml_file.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def resolve(self, path: Path) -> Path:
        """A path from the file, made absolute against the file's directory."""
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def state_path(self) -> Path:
        return self.resolve(self.state.path)

    def secret_values(self) -> list[str]:
        """Every secret value in the settings, for redaction."""
        return [
            secret.get_secret_value()
            for secret in (self.kravia_token, self.kravia_webhook_secret)
            if secret is not None
        ]


def default_secrets_dir() -> Path | None:
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        return Path(credentials)
    run_secrets = Path("/run/secrets")
    return run_secrets if run_secrets.is_dir() else None


def load_settings(
    path: Path | None = None,
    *,
    secrets_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Read and validate the configuration; `ConfigError` names the file, key and problem."""
    config_path = path or DEFAULT_CONFIG
    if not config_path.is_file():
        raise ConfigError(
            f"{config_path}: no such configuration file (create one with `kravia-sync init`, "
            "or choose one with --config)"
        )
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: cannot be read: {exc}") from None
    _refuse_secrets_in_file(config_path, raw)
    secrets = secrets_dir or default_secrets_dir()
    if secrets is not None and not secrets.is_dir():
        raise ConfigError(f"secrets directory {secrets} does not exist")
    token = _toml_file.set(config_path)
    try:
        return Settings(  # type: ignore[call-arg]
            _secrets_dir=secrets,
            base_dir=config_path.resolve().parent,
            **(overrides or {}),
        )
    except ValidationError as exc:
        raise ConfigError(_describe(config_path, exc)) from None
    finally:
        _toml_file.reset(token)


def _refuse_secrets_in_file(config_path: Path, raw: dict[str, Any]) -> None:
    """Secrets belong in the environment or the secrets directory, never in the file (which
    tends to be committed)."""
    kravia_section = raw.get("kravia")
    keys = {key.lower() for key in raw}
    if isinstance(kravia_section, dict):
        keys |= {key.lower() for key in kravia_section}
    for key in (TOKEN_SECRET_FILE, "token", TOKEN_ENV.lower()):
        if key in keys:
            raise ConfigError(
                f"{config_path}: {key}: the Kravia token does not belong in the configuration "
                f"file; set the environment variable {TOKEN_ENV} or put it in a file named "
                f"{TOKEN_SECRET_FILE} in the secrets directory"
            )
    webhook_section = raw.get("webhook")
    if isinstance(webhook_section, dict):
        keys |= {f"webhook.{key.lower()}" for key in webhook_section}
    for key in (WEBHOOK_SECRET_FILE, "webhook.secret", WEBHOOK_SECRET_ENV.lower()):
        if key in keys:
            raise ConfigError(
                f"{config_path}: {key}: the webhook secret does not belong in the "
                f"configuration file; set the environment variable {WEBHOOK_SECRET_ENV} or put "
                f"it in a file named {WEBHOOK_SECRET_FILE} in the secrets directory"
            )


def _describe(config_path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in error["loc"]) or "(file)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{config_path}: {key}: {message}")
    return "\n".join(lines)
