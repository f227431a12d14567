"""Tests of configuration loading (`kravia_sync.settings`): TOML, environment, secrets."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from kravia_sync.kravia.assumptions import DEFAULT_BASE_URL
from kravia_sync.lifecycle import StartPolicy
from kravia_sync.settings import ConfigError, Settings, load_settings

MINIMAL = "[kravia]\ncreditor_id = 10759\n"
SECRET = "s3cr3t-kravia-token-value"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KRAVIA_* variable or systemd credentials directory leaks in from the environment."""
    for name in list(os.environ):
        if name.upper().startswith("KRAVIA") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """An empty secrets directory (so /run/secrets on the host never plays a part)."""
    path = tmp_path / "secrets"
    path.mkdir()
    return path


@pytest.fixture
def config(tmp_path: Path, secrets_dir: Path):
    """Write a configuration file and load it with the empty secrets directory."""
    path = tmp_path / "conf" / "kravia-sync.toml"
    path.parent.mkdir()

    def load(text: str, **kwargs: object) -> Settings:
        path.write_text(text, encoding="utf-8")
        kwargs.setdefault("secrets_dir", secrets_dir)
        return load_settings(path, **kwargs)  # type: ignore[arg-type]

    load.path = path  # type: ignore[attr-defined]
    return load


def sources(*entries: tuple[str, str]) -> str:
    return "".join(
        f'[[sources]]\nname = "{name}"\nconnector = "folder"\nid_prefix = "{prefix}"\n'
        for name, prefix in entries
    )


class TestDefaults:
    def test_minimal_file(self, config):
        """A file with only the creditor id gets the documented defaults."""
        settings = config(MINIMAL)

        assert settings.kravia.creditor_id == 10759
        assert settings.kravia.base_url == DEFAULT_BASE_URL == "https://api.kravia.ai/api/v2/"
        assert settings.policy.min_days_overdue == 14
        assert settings.policy.min_amount == Decimal(0)
        assert settings.policy.start is StartPolicy.AUTO
        assert settings.kravia_token is None
        assert settings.sources == []

    def test_values_from_file(self, config):
        """Values in the file override the defaults; the base URL gets its trailing slash."""
        settings = config(
            '[kravia]\ncreditor_id = 1\nbase_url = "http://127.0.0.1:8080/api/v2"\n'
            '[policy]\nmin_days_overdue = 30\nmin_amount = "100.50"\nstart = "manual"\n'
        )

        assert settings.kravia.base_url == "http://127.0.0.1:8080/api/v2/"
        assert settings.policy.min_days_overdue == 30
        assert settings.policy.min_amount == Decimal("100.50")
        assert settings.policy.start is StartPolicy.MANUAL


class TestFileErrors:
    def test_missing_file(self, tmp_path):
        """A missing file is a ConfigError naming the file."""
        path = tmp_path / "nope.toml"

        with pytest.raises(ConfigError, match="no such configuration file") as info:
            load_settings(path, secrets_dir=tmp_path)

        assert str(path) in str(info.value)

    def test_invalid_toml(self, config):
        """A file that is not TOML is a ConfigError naming the file."""
        with pytest.raises(ConfigError, match="not valid TOML") as info:
            config("[kravia\ncreditor_id = 1\n")

        assert str(config.path) in str(info.value)

    @pytest.mark.parametrize(
        ("text", "key"),
        [
            ('[kravia]\ncreditor_id = "many"\n', "kravia.creditor_id"),
            (MINIMAL + '[policy]\nmin_days_overdue = "two weeks"\n', "policy.min_days_overdue"),
            (MINIMAL + '[policy]\nstart = "sometimes"\n', "policy.start"),
            (MINIMAL + "[policy]\nmin_days_overdue = -1\n", "policy.min_days_overdue"),
            (MINIMAL + "[retry]\nmax_lookups = 0\n", "retry.max_lookups"),
            # TOML's inf: a ceiling of no ceiling, printed as Infinity (not JSON) in --json
            (
                "[kravia]\ncreditor_id = 1\nrequests_per_second = inf\n",
                "kravia.requests_per_second",
            ),
            (MINIMAL + "[daemon]\npass_timeout_seconds = inf\n", "daemon.pass_timeout_seconds"),
            (MINIMAL + "[policy]\nmin_days = 21\n", "policy.min_days"),
            ('[kravia]\ncreditor_id = 1\nbase_url = "ftp://x"\n', "kravia.base_url"),
            ("[kravia]\n", "kravia.creditor_id"),
            ("", "kravia"),
            (MINIMAL + '[[sources]]\nname = "bad name!"\nconnector = "folder"\n', "sources.0.name"),
        ],
    )
    def test_bad_value_names_file_and_key(self, config, text, key):
        """A wrong type, value or key is a ConfigError naming the file and the dotted key."""
        with pytest.raises(ConfigError) as info:
            config(text)

        assert f"{config.path}: {key}: " in str(info.value)

    def test_missing_key_message(self, config):
        """A missing required key says so plainly."""
        with pytest.raises(ConfigError, match=r"kravia\.creditor_id: required key is missing"):
            config("[kravia]\n")

    def test_section_of_wrong_type(self, config):
        """A section given as a plain value is a ConfigError naming it, not a crash."""
        with pytest.raises(ConfigError) as info:
            config("kravia = 5\n")

        assert f"{config.path}: kravia" in str(info.value)

    def test_secrets_dir_must_exist(self, config, tmp_path):
        """A secrets directory that does not exist is a ConfigError naming it."""
        missing = tmp_path / "no-secrets"

        with pytest.raises(ConfigError, match="does not exist") as info:
            config(MINIMAL, secrets_dir=missing)

        assert str(missing) in str(info.value)


class TestToken:
    @pytest.mark.parametrize(
        ("text", "key"),
        [
            (f'kravia_token = "{SECRET}"\n' + MINIMAL, "kravia_token"),
            (f'token = "{SECRET}"\n' + MINIMAL, "token"),
            (MINIMAL + f'token = "{SECRET}"\n', "token"),
            (MINIMAL + f'kravia_token = "{SECRET}"\n', "kravia_token"),
        ],
    )
    def test_refused_in_file(self, config, text, key):
        """A token in the file is refused, pointing to KRAVIA_TOKEN; the value is not echoed."""
        with pytest.raises(ConfigError) as info:
            config(text)

        message = str(info.value)
        assert f"{config.path}: {key}: " in message
        assert "KRAVIA_TOKEN" in message
        assert SECRET not in message

    def test_upper_case_key_refused_in_file(self, config):
        """A token under the environment variable's own name in the file is refused too."""
        with pytest.raises(ConfigError, match="KRAVIA_TOKEN"):
            config(f'KRAVIA_TOKEN = "{SECRET}"\n' + MINIMAL)

    def test_from_environment(self, config, monkeypatch):
        """The token is read from KRAVIA_TOKEN."""
        monkeypatch.setenv("KRAVIA_TOKEN", SECRET)

        settings = config(MINIMAL)

        assert settings.kravia_token is not None
        assert settings.kravia_token.get_secret_value() == SECRET
        assert settings.secret_values() == [SECRET]

    def test_from_secrets_dir(self, config, secrets_dir):
        """The token is read from a file kravia_token in the secrets directory, stripped."""
        (secrets_dir / "kravia_token").write_text(SECRET + "\n", encoding="utf-8")

        settings = config(MINIMAL)

        assert settings.kravia_token is not None
        assert settings.kravia_token.get_secret_value() == SECRET

    def test_from_credentials_directory(self, config, monkeypatch, tmp_path):
        """Without --secrets-dir, systemd's CREDENTIALS_DIRECTORY is the secrets directory."""
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "kravia_token").write_text(SECRET, encoding="utf-8")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))

        settings = config(MINIMAL, secrets_dir=None)

        assert settings.kravia_token is not None
        assert settings.kravia_token.get_secret_value() == SECRET

    def test_environment_beats_secret_file(self, config, secrets_dir, monkeypatch):
        """The environment takes precedence over a secret file."""
        (secrets_dir / "kravia_token").write_text("from-file", encoding="utf-8")
        monkeypatch.setenv("KRAVIA_TOKEN", "from-env")

        settings = config(MINIMAL)

        assert settings.kravia_token is not None
        assert settings.kravia_token.get_secret_value() == "from-env"

    @pytest.mark.parametrize("value", ["", "   "])
    def test_empty_token_is_none(self, config, monkeypatch, value):
        """An empty KRAVIA_TOKEN counts as no token."""
        monkeypatch.setenv("KRAVIA_TOKEN", value)

        assert config(MINIMAL).kravia_token is None

    def test_never_shown(self, config, monkeypatch):
        """repr, str and JSON dumps of the settings never show the token."""
        monkeypatch.setenv("KRAVIA_TOKEN", SECRET)

        settings = config(MINIMAL)

        assert SECRET not in repr(settings)
        assert SECRET not in str(settings)
        assert SECRET not in settings.model_dump_json()
        assert SECRET not in repr(settings.kravia_token)
        assert "**********" in repr(settings)


class TestEnvironment:
    def test_nested_override(self, config, monkeypatch):
        """KRAVIA_SYNC_POLICY__MIN_DAYS_OVERDUE overrides the file, keeping its other keys."""
        monkeypatch.setenv("KRAVIA_SYNC_POLICY__MIN_DAYS_OVERDUE", "21")

        settings = config(MINIMAL + '[policy]\nmin_days_overdue = 30\nstart = "manual"\n')

        assert settings.policy.min_days_overdue == 21
        assert settings.policy.start is StartPolicy.MANUAL

    def test_override_without_file_value(self, config, monkeypatch):
        """An environment override also works for a key the file does not set."""
        monkeypatch.setenv("KRAVIA_SYNC_POLICY__MIN_DAYS_OVERDUE", "21")

        assert config(MINIMAL).policy.min_days_overdue == 21

    def test_bad_override_named(self, config, monkeypatch):
        """A bad value from the environment is a ConfigError naming the dotted key."""
        monkeypatch.setenv("KRAVIA_SYNC_POLICY__MIN_DAYS_OVERDUE", "soon")

        with pytest.raises(ConfigError, match=r"policy\.min_days_overdue"):
            config(MINIMAL)


class TestSources:
    def test_distinct_prefixes(self, config):
        """Sources with their own names and id prefixes are accepted, in order."""
        settings = config(MINIMAL + sources(("erp", "E-"), ("shop", "S-")))

        assert [(s.name, s.id_prefix) for s in settings.sources] == [("erp", "E-"), ("shop", "S-")]

    @pytest.mark.parametrize("prefix", ["", "X-"])
    def test_shared_prefix_refused(self, config, prefix):
        """Two sources with one id_prefix are refused naming both sources."""
        with pytest.raises(ConfigError) as info:
            config(MINIMAL + sources(("erp", prefix), ("shop", prefix)))

        message = str(info.value)
        assert str(config.path) in message
        assert "'erp'" in message
        assert "'shop'" in message
        assert "id_prefix" in message

    def test_duplicate_names_refused(self, config):
        """Two sources with one name are refused naming it."""
        with pytest.raises(ConfigError, match=r"sources\[1\]\.name: 'erp' is used twice"):
            config(MINIMAL + sources(("erp", "A-"), ("erp", "B-")))


class TestPaths:
    def test_relative_state_path(self, config):
        """A relative state path is resolved against the configuration file's directory."""
        settings = config(MINIMAL + '[state]\npath = "db/state.db"\n')

        assert settings.state_path == (config.path.parent / "db" / "state.db").resolve()
        assert settings.state_path.is_absolute()

    def test_default_state_path(self, config):
        """The default state path lies beside the configuration file."""
        settings = config(MINIMAL)

        assert settings.state_path == (config.path.parent / "state" / "kravia-sync.db").resolve()

    def test_absolute_state_path(self, config, tmp_path):
        """An absolute state path is used as is."""
        target = tmp_path / "elsewhere" / "s.db"

        settings = config(MINIMAL + f'[state]\npath = "{target.as_posix()}"\n')

        assert settings.state_path == target

    def test_independent_of_working_directory(self, config, monkeypatch, tmp_path):
        """Where kravia-sync is started from does not change where the state lives."""
        expected = config(MINIMAL).state_path
        elsewhere = tmp_path / "cwd"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)

        assert load_settings(config.path, secrets_dir=tmp_path).state_path == expected
