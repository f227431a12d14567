"""The documentation site: it builds with `mkdocs build --strict` (every warning an error: a
broken link or anchor, a page missing from the nav), the README reaches every page in one click
with links that work on GitHub, and headings have the same anchors on GitHub and on the site.

The build needs the `[dev]` extra (mkdocs, mkdocs-material, pymdown-extensions): without it the
tests that need it are skipped with the reason, and under CI=true they fail instead."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from docs_support import (
    DOCS,
    MKDOCS_CONFIG,
    README,
    ROOT,
    anchors,
    doc_pages,
    links,
    nav_pages,
    shown,
)

DOCS_PATH = re.compile(r"\bdocs/[\w./-]+\.md\b")
HEADING_ID = re.compile(r"<h[1-6][^>]*\bid=\"([^\"]+)\"")


def needed(module: str) -> ModuleType:
    """Import a module of the `[dev]` extra's documentation tools, or skip (fail in CI)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        reason = f"{module} is not installed: install the dev extra (pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def mkdocs_config() -> dict[str, Any]:
    """mkdocs.yml, read without running the Python its tags name (the slug function)."""
    yaml = needed("yaml")

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)
    config: dict[str, Any] = yaml.load(MKDOCS_CONFIG.read_text(encoding="utf-8"), Loader=Loader)
    return config


def page_of(target: str, page: Path) -> tuple[Path, str | None]:
    """The file and the anchor a relative link of `page` points to."""
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    return file, anchor or None


def is_relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("/")


def broken(page: Path, targets: list[str]) -> list[str]:
    """The relative links among `targets` whose file or heading anchor does not exist."""
    problems: list[str] = []
    for target in targets:
        file, anchor = page_of(target, page)
        if not file.is_file():
            problems.append(f"{shown(page)}: {target}: no such file")
        elif anchor is not None and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{shown(page)}: {target}: no heading with that anchor in {file.name}")
    return problems


class TestTheSiteBuilds:
    def test_mkdocs_builds_the_site_strictly(self, tmp_path: Path) -> None:
        """`mkdocs build --strict` succeeds, and each page's headings carry GitHub's anchors."""
        needed("mkdocs")
        needed("material")
        needed("pymdownx")
        site = tmp_path / "site"
        result = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
            cwd=ROOT,  # the README snippets on the home page are read from here
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        for page in doc_pages():
            relative = page.relative_to(DOCS).with_suffix("")
            html = site / ("" if relative.name == "index" else relative) / "index.html"
            ids = set(HEADING_ID.findall(html.read_text(encoding="utf-8")))
            missing = set(anchors(page)) - ids
            assert not missing, f"{shown(page)}: the site's anchors differ from GitHub's: {missing}"


class TestNavigation:
    def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page(self) -> None:
        """mkdocs.yml's nav lists each page under docs/ once, and nothing else."""
        listed = nav_pages(mkdocs_config())
        pages = [str(page.relative_to(DOCS)) for page in doc_pages()]
        assert sorted(listed) == sorted(pages)

    def test_the_readme_links_every_page_of_the_site(self) -> None:
        """A newcomer reaches every reference page from the README in one click."""
        linked = {
            page_of(target, README)[0] for target in links(README) if target.startswith("docs/")
        }
        unlinked = [shown(page) for page in doc_pages() if page not in linked]
        assert unlinked == ["docs/index.md"]  # the site's home page is the README's first screen

    def test_the_readme_names_the_module_of_kravia_assumptions(self) -> None:
        """The one module that holds every assumption about Kravia's API is named up front."""
        assert "kravia_sync/kravia/assumptions.py" in README.read_text(encoding="utf-8")
        assert (ROOT / "kravia_sync" / "kravia" / "assumptions.py").is_file()


class TestLinks:
    def test_every_readme_link_into_docs_resolves(self) -> None:
        """Each README link to docs/ names an existing page and, if any, an existing heading."""
        targets = [target for target in links(README) if target.startswith("docs/")]
        assert len(targets) >= len(doc_pages()) - 1
        assert broken(README, targets) == []

    def test_every_relative_link_resolves_on_github(self) -> None:
        """Relative links of the README and the pages reach files and headings as GitHub
        numbers them (the strict build checks the same for the site)."""
        problems: list[str] = []
        for page in [README, *doc_pages()]:
            problems += broken(page, [target for target in links(page) if is_relative(target)])
        assert problems == []

    def test_pages_the_code_names_exist(self) -> None:
        """A docs/ page named in a message, docstring or comment of the code or tests exists."""
        named = {
            (str(path.relative_to(ROOT)), match.group(0))
            for folder in ("kravia_sync", "connectors", "tests", "bench", "deploy", "examples")
            for path in (ROOT / folder).rglob("*")
            if path.is_file() and path.suffix in {".py", ".tmpl", ".toml", ".service", ".md"}
            for match in DOCS_PATH.finditer(path.read_text(encoding="utf-8"))
        }
        assert {name for _, name in named} >= {"docs/going-live.md", "docs/sources/rest.md"}
        missing = sorted((file, name) for file, name in named if not (ROOT / name).is_file())
        assert missing == []

    def test_a_broken_anchor_is_reported(self, tmp_path: Path) -> None:
        """The link check tells a missing heading from a present one, and a missing file."""
        page = tmp_path / "page.md"
        (tmp_path / "other.md").write_text("# Other\n\n## EHF / PEPPOL files\n", encoding="utf-8")
        page.write_text("x", encoding="utf-8")
        targets = ["other.md#ehf--peppol-files", "other.md#ehf-peppol-files", "gone.md"]
        problems = [
            problem.split(": ", 1)[1] for problem in broken(page, targets) if ": " in problem
        ]
        assert problems == [
            "other.md#ehf-peppol-files: no heading with that anchor in other.md",
            "gone.md: no such file",
        ]
