"""requirements.lock (what the image and the VM recipe install) matches pyproject.toml: every
runtime and audit dependency is pinned, with hashes, to a version its specifier admits."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
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


def _environment(version: str) -> dict[str, str]:
    """The marker environment of CPython `version` on Linux x86_64, the image's platform."""
    return {
        "python_version": ".".join(version.split(".")[:2]),
        "python_full_version": version,
        "implementation_name": "cpython",
        "implementation_version": version,
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "platform_release": "",
        "platform_version": "",
    }


# Debian 12's own 3.11.2 included: redis needs async-timeout below 3.11.3.
PYTHONS = ("3.11.0", "3.11.2", "3.11.7", "3.12.0", "3.13.0")


def markers() -> dict[str, Marker | None]:
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    found: dict[str, Marker | None] = {}
    for line in text.splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==\S+(?: ; (.+?))?(?: \\)?$", line)
        if match:
            found[canonicalize_name(match.group(1))] = (
                Marker(match.group(2)) if match.group(2) else None
            )
    return found


def _wanted() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = [*project["dependencies"], *project["optional-dependencies"]["audit"]]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in listed}


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_pins_everything_its_pins_need_on_each_python_it_is_for(python: str) -> None:
    """One universal resolution: on each CPython from 3.11.0, every requirement of every pin
    that applies there (read from the pinned distributions' metadata, markers evaluated for
    that Python) is itself pinned, inside its specifier, by a line whose marker applies."""
    environment = _environment(python)
    locked, lock_markers = pins(), markers()
    applies = {
        name
        for name, marker in lock_markers.items()
        if marker is None or marker.evaluate(environment)
    }
    wanted = _wanted()
    extras = {name: set(requirement.extras) for name, requirement in wanted.items()}
    needs: list[tuple[str, Requirement]] = [("pyproject.toml", r) for r in wanted.values()]
    for name in sorted(applies):
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not on this interpreter (a marker keeps it off): its own needs are unread
        needs += [(name, Requirement(r)) for r in requires]
    problems = []
    for needed_by, requirement in needs:
        marker = requirement.marker
        asked = extras.get(canonicalize_name(needed_by), set()) | {""}
        if marker is not None and not any(
            marker.evaluate({**environment, "extra": extra}) for extra in asked
        ):
            continue
        name = canonicalize_name(requirement.name)
        if name not in applies:
            problems.append(f"{needed_by} needs {requirement} on {python}: not pinned for it")
        elif not requirement.specifier.contains(locked[name][0], prereleases=True):
            problems.append(f"{needed_by} needs {requirement}: {name}=={locked[name][0]}")
    assert problems == []


def test_a_lock_without_the_marked_dependency_is_caught() -> None:
    """The check above has teeth: redis on 3.11.2 needs async-timeout, which the lock pins
    behind `python_full_version < '3.11.3'`."""
    marker = markers()["async-timeout"]
    assert marker is not None
    assert marker.evaluate(_environment("3.11.2"))
    assert not marker.evaluate(_environment("3.11.7"))


DEBIAN_PYTHON = Path("/usr/bin/python3")  # Debian 12's own: 3.11.2, as on a stock VM


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_pinned_vm_recipe_installs_on_debian_12_s_own_python(tmp_path: Path) -> None:
    """README's pinned install, line by line, with the interpreter a stock Debian 12 VM has
    (make test installs it with apt-get where it is missing)."""
    if not DEBIAN_PYTHON.exists():
        message = f"{DEBIAN_PYTHON} is missing (make test installs python3-venv with apt-get)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    venv = tmp_path / "venv"
    pip = str(venv / "bin" / "pip")
    for command in (
        [str(DEBIAN_PYTHON), "-m", "venv", str(venv)],
        [pip, "install", "--quiet", "--require-hashes", "-r", str(ROOT / "requirements.lock")],
        [pip, "install", "--quiet", "--no-deps", str(ROOT)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
        assert done.returncode == 0, (command, done.stderr[-2_000:])
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    orca = subprocess.run(
        [str(venv / "bin" / "orca-tokens"), "--help"], capture_output=True, text=True, check=False
    )
    assert orca.returncode == 0, orca.stderr
    if version.startswith("3.11.") and int(version.split(".")[2]) < 3:
        imported = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import async_timeout, redis.asyncio"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert imported.returncode == 0, imported.stderr
