"""requirements.lock (what the image and the VM recipe install) matches pyproject.toml: every
runtime and audit dependency is pinned, with hashes, to a version its specifier admits."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent.parent


def pins() -> dict[str, tuple[str, list[str]]]:
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    found: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            found[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return found


def test_every_dependency_is_pinned_with_hashes_inside_its_specifier() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for r in project["optional-dependencies"]["audit"]]
    locked = pins()
    problems = []
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{name} is not in requirements.lock (run make lock)")
            continue
        version, hashes = locked[name]
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{name}=={version} is outside {requirement.specifier} (make lock)")
        if not hashes:
            problems.append(f"{name} has no hash")
    assert problems == []
    assert all(hashes for _, hashes in locked.values())
