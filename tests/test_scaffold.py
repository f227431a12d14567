"""Connector packages install and work like a user's: the scaffold's output and examples/.

One virtual environment per test session stands in for a user's: it sees what the project's
environment has installed (kravia-sync, pytest, openpyxl: a `.pth` file adds that site
directory), and the connector packages are built and installed into it by pip as wheels, offline
(`--no-index --no-deps --no-build-isolation`), so their entry points are what pip wrote. Their
tests then run from their own directories, against the installed packages, unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import CREDITOR_ID, TOKEN, Sim, cli_env, write_config

from kravia_sync.cli.scaffold import ConnectorNames, scaffold
from kravia_sync.testing import minimal_pdf, sample_invoices

ROOT = Path(__file__).resolve().parent.parent
EXCEL = ROOT / "examples" / "kravia-sync-excel"
SCAFFOLDED = "acme-billing"


@dataclass(frozen=True)
class UserEnv:
    python: Path

    def run(self, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = cli_env()
        env.pop("PYTHONPATH", None)
        return subprocess.run(
            [str(self.python), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def install(self, package: Path) -> None:
        """pip install PACKAGE, as a built wheel, with the project's pip."""
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(self.python),
                "install",
                "--quiet",
                "--no-index",
                "--no-deps",
                "--no-build-isolation",
                str(package),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package made by `kravia-sync new-connector acme-billing`, untouched."""
    parent = tmp_path_factory.mktemp("scaffold")
    result = subprocess.run(
        [sys.executable, "-m", "kravia_sync", "new-connector", SCAFFOLDED, "--dir", str(parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return parent / "kravia-sync-acme-billing"


@pytest.fixture(scope="session")
def excel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/kravia-sync-excel (building a wheel writes into the source tree)."""
    copy = tmp_path_factory.mktemp("example") / EXCEL.name
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(EXCEL, copy, ignore=ignore)
    return copy


@pytest.fixture(scope="session")
def user_env(tmp_path_factory: pytest.TempPathFactory, generated: Path, excel: Path) -> UserEnv:
    """A virtual environment with the Excel example and the scaffolded package installed."""
    venv = tmp_path_factory.mktemp("user") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_of = [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    user_site = Path(
        subprocess.run(site_of, capture_output=True, text=True, check=True).stdout.strip()
    )
    project_site = sysconfig.get_paths()["purelib"]
    # `import` lines of a .pth file run: addsitedir also reads that directory's .pth files
    # (kravia-sync's own editable install among them).
    (user_site / "project-environment.pth").write_text(
        f"import site; site.addsitedir({project_site!r})\n", encoding="utf-8"
    )
    env = UserEnv(python)
    env.install(excel)
    env.install(generated)
    return env


class TestNewConnector:
    def test_names_follow_the_connector_name(self) -> None:
        """my-erp becomes kravia-sync-my-erp, kravia_sync_my_erp and MyErpConnector."""
        names = ConnectorNames.of("my-erp")
        assert (names.dist, names.module, names.class_prefix) == (
            "kravia-sync-my-erp",
            "kravia_sync_my_erp",
            "MyErp",
        )

    @pytest.mark.parametrize("name", ["My ERP", "9lives", "erp/../x", "", "erp-"])
    def test_a_bad_name_is_refused(self, name: str, tmp_path: Path) -> None:
        """Names that make no package (spaces, a leading digit, paths) are refused."""
        with pytest.raises(ValueError, match="is not a connector name"):
            scaffold(name, tmp_path)
        assert list(tmp_path.iterdir()) == []

    def test_an_existing_directory_is_not_overwritten(self, tmp_path: Path) -> None:
        """A second scaffold of the same name fails and leaves the first alone."""
        target = scaffold("erp", tmp_path)
        (target / "README.md").write_text("mine", encoding="utf-8")
        with pytest.raises(FileExistsError, match="exists"):
            scaffold("erp", tmp_path)
        assert (target / "README.md").read_text(encoding="utf-8") == "mine"

    def test_the_package_has_what_a_connector_needs(self, generated: Path) -> None:
        """pyproject with the entry point, settings, connector, a kit test, a README."""
        pyproject = (generated / "pyproject.toml").read_text(encoding="utf-8")
        assert '[project.entry-points."kravia_sync.connectors"]' in pyproject
        assert 'acme-billing = "kravia_sync_acme_billing:AcmeBillingConnector"' in pyproject
        connector = (generated / "src" / "kravia_sync_acme_billing" / "connector.py").read_text()
        assert "class AcmeBillingSettings(ConnectorSettings)" in connector
        assert "class AcmeBillingConnector(Connector)" in connector
        test = (generated / "tests" / "test_conformance.py").read_text(encoding="utf-8")
        assert "class TestAcmeBillingConformance(ConnectorConformance)" in test
        assert "kravia-sync new-connector acme-billing" in (generated / "README.md").read_text()
        assert "__" not in pyproject.replace("__init__", "")

    def test_the_package_is_ruff_and_mypy_clean(self, generated: Path) -> None:
        """The generated code passes ruff (select=ALL) and mypy --strict, as does examples/."""
        ruff = Path(sys.executable).parent / "ruff"
        for package in (generated, EXCEL):
            result = subprocess.run(
                [str(ruff), "check", "--no-cache", "."],
                cwd=package,
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, result.stdout + result.stderr
        # mypy finds kravia_sync through the project root (its editable install is an import
        # hook mypy does not follow) and each package through its src/.
        mypy_path = os.pathsep.join([str(ROOT), str(generated / "src"), str(EXCEL / "src")])
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "mypy"),
                "--strict",
                "--no-incremental",
                str(generated / "src"),
                str(EXCEL / "src"),
            ],
            env={**os.environ, "MYPYPATH": mypy_path},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


class TestInstalledPackages:
    def test_the_scaffolded_package_passes_its_own_tests(
        self, user_env: UserEnv, generated: Path
    ) -> None:
        """Installed unchanged, the generated package's conformance tests pass."""
        result = user_env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=generated)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "8 passed" in result.stdout

    def test_the_excel_example_passes_its_own_tests(self, user_env: UserEnv, excel: Path) -> None:
        """The Excel example, installed, passes its tests (the conformance kit among them)."""
        result = user_env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=excel)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "14 passed" in result.stdout
        assert "skipped" not in result.stdout

    def test_installed_connectors_are_listed_with_package_and_version(
        self, user_env: UserEnv, tmp_path: Path
    ) -> None:
        """kravia-sync connectors shows built-in and third-party connectors alike."""
        result = user_env.run("-m", "kravia_sync", "connectors", "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        listed = {item["name"]: item for item in json.loads(result.stdout)}
        assert {"folder", "sql", "rest", "fiken", "excel", SCAFFOLDED} <= set(listed)
        excel = listed["excel"]
        assert (excel["package"], excel["version"], excel["error"]) == (
            "kravia-sync-excel",
            "0.1.0",
            None,
        )
        assert excel["target"] == "kravia_sync_excel:ExcelConnector"
        assert excel["settings_schema"]["required"] == ["path"]
        assert excel["settings_schema"]["additionalProperties"] is False
        assert listed["folder"]["package"] == "kravia-sync"
        table = user_env.run("-m", "kravia_sync", "connectors", cwd=tmp_path)
        assert "kravia-sync-excel" in table.stdout
        assert "path*, sheet, header_row, columns, pdf_folder" in table.stdout

    def test_an_excel_source_reaches_kravia(
        self, user_env: UserEnv, excel: Path, sim: Sim, tmp_path: Path
    ) -> None:
        """A workbook configured as a source is sent to Kravia by `kravia-sync reconcile`."""
        invoices = sample_invoices(4)
        script = (
            "import sys; from pathlib import Path; from tests.workbooks import write_workbook; "
            "import json; write_workbook(Path(sys.argv[1]), json.loads(sys.argv[2]))"
        )
        made = user_env.run(
            "-c", script, str(tmp_path / "overdue.xlsx"), json.dumps(invoices), cwd=excel
        )
        assert made.returncode == 0, made.stderr
        (tmp_path / "1.pdf").write_bytes(minimal_pdf("Invoice 1"))
        config = write_config(tmp_path, sim.base_url)
        text = config.read_text(encoding="utf-8")
        text = text.replace('connector = "folder"', 'connector = "excel"')
        config.write_text(
            text.replace('path = "invoices"', 'path = "overdue.xlsx"'), encoding="utf-8"
        )
        result = user_env.run(
            "-m", "kravia_sync", "reconcile", "--config", str(config), "--json", cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout + result.stderr
        cases = sim.cases()
        assert sorted(str(case["accountingInvoiceId"]) for case in cases) == ["1", "2", "3", "4"]
        assert {case["body"]["creditorId"] for case in cases} == {CREDITOR_ID}
        assert TOKEN not in result.stdout + result.stderr
