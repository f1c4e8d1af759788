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
