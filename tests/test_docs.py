"""Every code example in the documentation (the README and the site's pages under docs/) works as
written, so the docs cannot rot.

- ```python blocks run. A block whose first line is `# file: PATH` is a file of the page's
  example package and is written into a fresh directory; the other Python blocks run there as
  scripts, and print what the ```text block right after them shows (when one does).
  docs/writing-a-connector.md's package is tested as a package too: the conformance kit passes.
- ```toml blocks parse. A configuration (any block but a `# file:`) loads with kravia-sync's
  own `load_settings`, completed with `[kravia] creditor_id = 1` when it has no [kravia]; and
  each source's `settings` table, where the example gives one, validates with its connector's
  settings model.
- ```sh (bash, shell; console: its `$ ` lines) blocks: every `kravia-sync …` command names a
  real command and real options of it, and every path into the repository's own folders
  (bench/, tests/, deploy/, …) exists.
- ```csv blocks are files the folder source reads: every row a valid invoice or payment.
- ```text blocks and blocks without a language are output or drawings, not code.

A block that cannot be checked so says why on the line before its fence:
`<!-- docs-check: skip: REASON -->`. A part of one source's configuration (its
`[sources.settings]` alone) names the connector whose settings it is:
`<!-- docs-check: settings of a "fiken" source -->`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from docs_support import (
    DIRECTIVE,
    DOCS,
    ROOT,
    Block,
    blocks,
    checked_pages,
    prose_lines,
    shown,
)
from typer.testing import CliRunner

from connectors.folder import FolderConnector
from kravia_sync import (
    InvalidRecordError,
    Invoice,
    Payment,
    PaymentRecord,
    RecordError,
    SourceRecord,
)
from kravia_sync.cli.app import app
from kravia_sync.connector import load_connector
from kravia_sync.settings import ConfigError, load_settings

TUTORIAL = DOCS / "writing-a-connector.md"
SHELLS = {"sh", "bash", "shell", "console"}
CHECKED = {"python", "toml", "csv", *SHELLS}
NOT_CODE = {"text", ""}  # output shown after a command or snippet, and drawings
SKIP = re.compile(r"^skip:\s*(?P<reason>\S.*)$")
SETTINGS_OF = re.compile(r'^settings of a "(?P<connector>[\w-]+)" source$')
REPOSITORY_PATH = re.compile(r"^(?:bench|connectors|deploy|docs|examples|kravia_sync|tests)/")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "(", ")", "&"}
MINIMAL_KRAVIA = "\n[kravia]\ncreditor_id = 1\n"


def every_block() -> list[Block]:
    return [block for page in checked_pages() for block in blocks(page)]


def examples(*languages: str) -> list[Block]:
    """The blocks in these languages that are not marked to be skipped."""
    return [
        block
        for block in every_block()
        if block.language in languages and not SKIP.match(block.directive or "")
    ]


def where(block: Block) -> str:
    return block.where


def run_python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd / "src"), str(cwd)])}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write_package(page: Path, root: Path) -> Path:
    """The page's example package, written from its `# file:` blocks into `root`."""
    for block in blocks(page):
        if block.file is not None:
            path = root / block.file
            assert not path.exists(), f"{block.where}: {block.file} is written twice"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code, encoding="utf-8")
    root.mkdir(parents=True, exist_ok=True)
    return root


def kravia_sync_commands(block: Block) -> list[list[str]]:
    """The arguments of every `kravia-sync` command in a shell block (after the program name;
    commands joined with `&&`, `;` or `|` are each one)."""
    found: list[list[str]] = []
    for words in shell_commands(block):
        start = 0
        while start < len(words) and ASSIGNMENT.match(words[start]):
            start += 1  # VARIABLE=value before the program
        if start < len(words) and Path(words[start]).name == "kravia-sync":
            found.append(words[start + 1 :])
    return found


def shell_commands(block: Block) -> list[list[str]]:
    """Each simple command of the block, as its words (comments left out)."""
    commands: list[list[str]] = []
    for line in block.code.replace("\\\n", " ").splitlines():
        if block.language == "console" and not line.startswith("$ "):
            continue  # output
        command = line.removeprefix("$ ") if block.language == "console" else line
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for word in lexer:
            if word in SEPARATORS:
                commands.append(current)
                current = []
            else:
                current.append(word)
        commands.append(current)
    return [words for words in commands if words]


class TestEveryBlock:
    def test_every_code_block_is_checked_or_says_why(self) -> None:
        """Each block is of a checked language, output, or marked with the reason it is not."""
        problems: list[str] = []
        for block in every_block():
            directive = block.directive
            if directive is not None:
                if SKIP.match(directive) is None and SETTINGS_OF.match(directive) is None:
                    problems.append(f"{block.where}: unknown docs-check directive {directive!r}")
                elif SETTINGS_OF.match(directive) and block.language != "toml":
                    problems.append(f"{block.where}: 'settings of' marks only toml blocks")
            elif block.language not in CHECKED | NOT_CODE:
                problems.append(
                    f"{block.where}: ```{block.language} blocks are not checked by the tests; "
                    "mark it <!-- docs-check: skip: REASON --> or teach tests/test_docs.py"
                )
        assert not problems, "\n".join(problems)

    def test_every_docs_check_comment_marks_a_block(self) -> None:
        """A `docs-check` comment stands right before a fence, or it would mark nothing."""
        for page in checked_pages():
            written = sum(bool(DIRECTIVE.match(line.strip())) for line in prose_lines(page))
            attached = sum(block.directive is not None for block in blocks(page))
            assert written == attached, f"{shown(page)}: a docs-check comment is not before a fence"

    def test_the_examples_are_found(self) -> None:
        """The checks below see the pages' blocks (a broken reader would check nothing)."""
        languages = {block.language for block in every_block()}
        assert {"python", "toml", "sh", "csv"} <= languages
        assert len(examples("toml")) >= 8


def pages_with_python() -> list[Path]:
    return [page for page in checked_pages() if any(b.language == "python" for b in blocks(page))]


class TestPythonExamples:
    @pytest.mark.parametrize("page", pages_with_python(), ids=shown)
    def test_the_snippets_run_and_print_what_the_page_shows(
        self, page: Path, tmp_path: Path
    ) -> None:
        """Each Python snippet runs beside the page's package, and prints the output shown after it."""
        project = write_package(page, tmp_path / "package")
        found = blocks(page)
        for index, block in enumerate(found):
            if (
                block.language != "python"
                or block.file is not None
                or SKIP.match(block.directive or "")
            ):
                continue
            script = project / f"snippet_{block.line}.py"
            script.write_text(block.code, encoding="utf-8")
            result = run_python(str(script), cwd=project)
            assert result.returncode == 0, f"{block.where}:\n{result.stderr}"
            output = found[index + 1] if index + 1 < len(found) else None
            if output is not None and output.language == "text":
                assert result.stdout == output.code, block.where

    def test_the_tutorial_has_python_to_run(self) -> None:
        """The tutorial is among the pages whose Python runs."""
        assert TUTORIAL in pages_with_python()


class TestTomlExamples:
    @pytest.mark.parametrize("block", examples("toml"), ids=where)
    def test_the_example_is_valid(self, block: Block, tmp_path: Path) -> None:
        """It parses; a configuration loads, and each source's settings validate."""
        try:
            data = tomllib.loads(block.code)
        except tomllib.TOMLDecodeError as exc:
            pytest.fail(f"{block.where}: not valid TOML: {exc}")
        if block.file is not None:
            return  # a file of the page's package (a pyproject.toml), not a configuration
        settings_of = SETTINGS_OF.match(block.directive or "")
        if settings_of is not None:
            validate_source_settings(
                block, settings_of.group("connector"), data["sources"]["settings"]
            )
            return
        config = tmp_path / "kravia-sync.toml"
        config.write_text(
            block.code + ("" if "kravia" in data else MINIMAL_KRAVIA), encoding="utf-8"
        )
        try:
            settings = load_settings(config, secrets_dir=tmp_path)
        except ConfigError as exc:
            pytest.fail(f"{block.where}: not a valid configuration: {exc}")
        for source, raw in zip(settings.sources, data.get("sources", []), strict=True):
            if "settings" in raw:  # an example of something else may leave the settings out
                validate_source_settings(block, source.connector, source.settings)


def validate_source_settings(block: Block, connector: str, settings: dict[str, object]) -> None:
    model = load_connector(connector).settings_model
    try:
        model.model_validate(settings)
    except ValueError as exc:
        pytest.fail(f"{block.where}: the {connector} source's settings are not valid: {exc}")


class TestShellExamples:
    @pytest.mark.parametrize(
        "block", [b for b in examples(*SHELLS) if kravia_sync_commands(b)], ids=where
    )
    def test_kravia_sync_commands_name_real_commands_and_options(self, block: Block) -> None:
        """`kravia-sync X --opt` parses: X is a command, --opt one of its options."""
        runner = CliRunner()
        for arguments in kravia_sync_commands(block):
            # --help after the arguments: they are parsed (an unknown command or option fails),
            # then help is shown instead of running the command.
            result = runner.invoke(app, [*arguments, "--help"], terminal_width=200)
            assert result.exit_code == 0, (
                f"{block.where}: `kravia-sync {shlex.join(arguments)}` does not parse:\n"
                + result.output
            )

    @pytest.mark.parametrize("block", examples(*SHELLS), ids=where)
    def test_paths_into_the_repository_exist(self, block: Block) -> None:
        """A script, test or file of the repository that a command names is there."""
        missing = [
            word
            for words in shell_commands(block)
            for word in words
            if REPOSITORY_PATH.match(word) and not (ROOT / word).exists()
        ]
        assert not missing, f"{block.where}: no such file in the repository: {missing}"

    def test_commands_are_found_in_chains_and_after_variables(self) -> None:
        """`a && kravia-sync x`, `X=1 kravia-sync y # note` and `.venv/bin/kravia-sync z` count."""
        block = Block(
            page=ROOT / "README.md",
            line=1,
            language="sh",
            code="cd x && kravia-sync plan --json; X=1 kravia-sync status  # a note\n"
            ".venv/bin/kravia-sync demo | tee log\necho kravia-sync\n",
            directive=None,
        )
        assert kravia_sync_commands(block) == [["plan", "--json"], ["status"], ["demo"]]


class TestCsvExamples:
    @pytest.mark.parametrize("block", examples("csv"), ids=where)
    def test_the_folder_source_reads_every_row(self, block: Block, tmp_path: Path) -> None:
        """Every row is a valid invoice or payment record of the folder source."""
        folder = tmp_path / "invoices"
        folder.mkdir()
        (folder / "example.csv").write_text(block.code, encoding="utf-8")
        read = list(FolderConnector.from_settings({"path": str(folder)}, base_dir=tmp_path).read())
        assert [item for item in read if isinstance(item, RecordError)] == [], block.where
        assert len(read) == len(block.code.strip().splitlines()) - 1, block.where
        for item in read:
            try:
                if isinstance(item, PaymentRecord):
                    Payment.from_record(item.fields)
                else:
                    assert isinstance(item, SourceRecord)
                    Invoice.from_record(item.fields, document=item.document)
            except InvalidRecordError as exc:
                pytest.fail(f"{block.where}: {item.key}: {exc}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial's package, written from its `# file:` blocks."""
    return write_package(TUTORIAL, tmp_path_factory.mktemp("tutorial") / "kravia-sync-my-erp")


class TestWritingAConnector:
    def test_the_tutorial_has_its_files(self, project: Path) -> None:
        """pyproject, settings, connector, package and tests are all in the tutorial."""
        written = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
        assert written == [
            "pyproject.toml",
            "src/kravia_sync_my_erp/__init__.py",
            "src/kravia_sync_my_erp/connector.py",
            "src/kravia_sync_my_erp/settings.py",
            "tests/test_conformance.py",
        ]

    def test_the_entry_point_names_the_connector_class(self, project: Path) -> None:
        """The pyproject's entry point loads a Connector subclass."""
        pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
        target = pyproject["project"]["entry-points"]["kravia_sync.connectors"]["my-erp"]
        module, name = target.split(":")
        check = (
            f"import importlib, kravia_sync; cls = getattr(importlib.import_module({module!r}), "
            f"{name!r}); assert issubclass(cls, kravia_sync.Connector), cls"
        )
        result = run_python("-c", check, cwd=project)
        assert result.returncode == 0, result.stderr

    def test_the_tutorial_connector_passes_the_conformance_kit(self, project: Path) -> None:
        """The tutorial's tests, the whole conformance kit, pass."""
        result = run_python("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "8 passed" in result.stdout

    def test_the_scaffold_command_in_the_tutorial_works(self, tmp_path: Path) -> None:
        """`kravia-sync new-connector my-erp`, as the tutorial says, makes the package."""
        command = next(
            arguments
            for block in blocks(TUTORIAL)
            if block.language in SHELLS
            for arguments in kravia_sync_commands(block)
            if arguments[:1] == ["new-connector"]
        )
        result = run_python("-m", "kravia_sync", *command, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "kravia-sync-my-erp" / "pyproject.toml").is_file()
