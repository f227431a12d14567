"""Reading the documentation as GitHub and the tests see it: the pages, their fenced code blocks
(with the `<!-- docs-check: … -->` line that may precede one), their headings' anchors and their
links. The README and every page under docs/ are read the same way."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MKDOCS_CONFIG = ROOT / "mkdocs.yml"

FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<info>[^`]*)$")
DIRECTIVE = re.compile(r"^<!--\s*docs-check:\s*(?P<directive>.*?)\s*-->$")
HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
FILE_HEADER = re.compile(r"^# file: (\S+)\n")
INLINE_CODE = re.compile(r"`+([^`]*)`+")


def doc_pages() -> list[Path]:
    """Every Markdown page of the site."""
    return sorted(DOCS.rglob("*.md"))


def checked_pages() -> list[Path]:
    """Every page whose code blocks the tests check: the README and the site's pages."""
    return [README, *doc_pages()]


def shown(path: Path) -> str:
    """A path as the messages show it: relative to the repository, when it is in it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # of the opening fence, from 1
    language: str
    code: str
    directive: str | None  # the `docs-check:` comment right before the fence, if any

    @property
    def where(self) -> str:
        return f"{shown(self.page)}:{self.line}"

    @property
    def file(self) -> str | None:
        """The path a `# file: PATH` first line gives the block (a file of a tutorial)."""
        match = FILE_HEADER.match(self.code)
        return match.group(1) if match else None


def blocks(page: Path) -> list[Block]:
    """The page's fenced code blocks, in order."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
    previous = ""  # the last non-blank line outside a block
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index].rstrip("\n"))
        if opening is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        fence, info = opening.group("fence"), opening.group("info").strip()
        end = index + 1
        while end < len(lines) and not lines[end].rstrip("\n").startswith(fence):
            end += 1
        directive = DIRECTIVE.match(previous)
        found.append(
            Block(
                page=page,
                line=index + 1,
                language=(info.split() or [""])[0].lstrip("{.").rstrip("}"),
                code="".join(lines[index + 1 : end]),
                directive=directive.group("directive") if directive else None,
            )
        )
        previous = ""
        index = end + 1
    return found


def prose_lines(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    kept: list[str] = []
    fence: str | None = None
    for line in page.read_text(encoding="utf-8").splitlines():
        opening = FENCE.match(line)
        if fence is None and opening is not None:
            fence = opening.group("fence")
        elif fence is not None and line.startswith(fence):
            fence = None
        elif fence is None:
            kept.append(line)
    return kept


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (code spans and links as their text), lower
    case, without punctuation (emphasis marks included), spaces made hyphens (runs of them are
    not merged)."""
    text = INLINE_CODE.sub(r"\1", heading)
    text = LINK.sub(lambda match: match.group("text"), text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> list[str]:
    """The anchors of the page's headings, as GitHub numbers repeated ones (`x`, `x-1`, …)."""
    seen: Counter[str] = Counter()
    found: list[str] = []
    for line in prose_lines(page):
        heading = HEADING.match(line)
        if heading is None:
            continue
        slug = github_slug(heading.group("text"))
        found.append(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return found


def links(page: Path) -> list[str]:
    """The targets of the page's Markdown links, outside code."""
    targets: list[str] = []
    for line in prose_lines(page):
        without_code = INLINE_CODE.sub("", line)
        targets.extend(match.group("target") for match in LINK.finditer(without_code))
    return targets


def nav_pages(config: dict[str, Any]) -> list[str]:
    """The pages mkdocs.yml's `nav` lists, as paths under docs/."""
    found: list[str] = []

    def walk(entry: object) -> None:
        if isinstance(entry, str):
            found.append(entry)
        elif isinstance(entry, list):
            for item in entry:
                walk(item)
        elif isinstance(entry, dict):
            for value in entry.values():
                walk(value)

    walk(config.get("nav", []))
    return found
