"""Every operation and utility script of the original reference has a named home here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
REFERENCE = ROOT.parent / "shared" / "reference" / "redis-operations-reference.md"
SECTIONS = (
    "Connection Configuration",
    "Token Management",
    "HFT Cache Operations",
    "Price Data Storage",
    "Common Operations",
    "Utility Scripts",
    "Monitoring",
)


def _operations(text: str) -> dict[str, list[str]]:
    """{section: [its ### headings]} for the sections that hold operations."""
    found: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("### ") and section in SECTIONS:
            found.setdefault(section, []).append(line[4:].strip())
    return found


def test_every_reference_operation_is_mapped() -> None:
    if not REFERENCE.is_file():
        # A document beside the checkout (the workspace's shared/), not a service: its absence
        # in another layout is no reason to fail a build.
        pytest.skip(f"{REFERENCE} is not beside this checkout")
    operations = _operations(REFERENCE.read_text(encoding="utf-8"))
    assert set(operations) == set(SECTIONS)
    rows = (ROOT / "docs" / "reference-map.md").read_text(encoding="utf-8")
    missing = [
        f"{section}: {name}"
        for section, names in operations.items()
        for name in names
        if not re.search(rf"^\| {re.escape(name)}( \(|\s*\|)", rows, re.MULTILINE)
    ]
    assert missing == []


DOC_LINK = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?|(README\.md)#([\w-]+)")
PAGE_LINK = re.compile(r"\]\(([\w-]+\.md)(?:#([\w-]+))?\)")  # a docs page's link to its neighbour


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    words = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return words.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_every_page_and_heading_a_hint_names_exists() -> None:
    """Runtime hints, the deploy files and the docs name a page (docs/deploy.md) and often a
    heading (#redis-acl): each exists. No hint names a README section by its title any more."""
    sources = [
        *(ROOT / "daemon").rglob("*.py"),
        *(path for path in (ROOT / "deploy").rglob("*") if path.is_file()),
        *(ROOT / "config").iterdir(),
        *(ROOT / "docs").glob("*.md"),
        ROOT / "README.md",
    ]
    named, missing = 0, []
    for source in sources:
        text = source.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"README, ", text), f"{source} names a README section by title"
        for match in DOC_LINK.finditer(text):
            page = ROOT / "docs" / match[1] if match[1] else ROOT / str(match[3])
            anchor = match[2] or match[4]
            named += 1
            if not page.is_file() or (anchor and anchor not in _anchors(page)):
                missing.append(f"{source.relative_to(ROOT)}: {match[0]}")
        if source.parent.name == "docs":
            for match in PAGE_LINK.finditer(text):
                named += 1
                page = source.parent / match[1]
                if not page.is_file() or (match[2] and match[2] not in _anchors(page)):
                    missing.append(f"{source.relative_to(ROOT)}: {match[0]}")
    assert named >= 10
    assert missing == []


def test_readme_is_a_front_door_of_at_most_250_lines() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for page in ("configuration", "deploy", "operate", "library", "concepts", "migrating"):
        assert f"docs/{page}.md" in readme
    assert "| `orca:status:{LOGIN}` |" in readme  # SPEC places the orca:* keys' table there
    assert "`mdtoken:{NAME}` holds the latest `mdAccessToken`" in readme
