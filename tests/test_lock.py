"""The two locks match pyproject.toml and each other, and the venv the suite runs in is exactly
what they pin. requirements.lock (what the image and the VM recipe install) pins every runtime and
audit dependency; requirements-dev.lock pins the tools, the demo, pip and setuptools, resolved
within the first. Each pin carries hashes and sits inside every specifier that asks for it."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import doc_block

ROOT = Path(__file__).parent.parent
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
BOOTSTRAP = ROOT / "tools" / "bootstrap.in"


class Pin:
    def __init__(self, version: str, hashes: list[str], marker: Marker | None) -> None:
        self.version, self.hashes, self.marker = version, hashes, marker


def pins(lock: Path = RUNTIME_LOCK) -> dict[str, Pin]:
    found: dict[str, Pin] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text(encoding="utf-8")):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+?)(?: ; (.+?))?(?: \\)?$", block.split("\n")[0])
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            marker = Marker(match.group(3)) if match.group(3) else None
            found[canonicalize_name(match.group(1))] = Pin(match.group(2), hashes, marker)
    return found


def _project() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {"": project["dependencies"], **project["optional-dependencies"]}


def wanted(lock: Path) -> dict[str, Requirement]:
    """What `make lock` resolves into `lock`: the runtime and the audit extra, and for the dev
    lock every extra and the bootstrap list too."""
    groups = _project()
    listed = [*groups[""], *groups["audit"]]
    if lock == DEV_LOCK:
        listed += [r for extra, rs in groups.items() if extra not in ("", "audit") for r in rs]
        listed += [
            line
            for line in BOOTSTRAP.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")
        ]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in listed}


def mismatches(locked: dict[str, Pin], asked: dict[str, Requirement]) -> list[str]:
    problems = []
    for name, requirement in asked.items():
        if name not in locked:
            problems.append(f"{name} is not locked (run make lock)")
        elif not requirement.specifier.contains(locked[name].version, prereleases=True):
            problems.append(f"{name}=={locked[name].version} is outside {requirement.specifier}")
    return problems + [f"{name} has no hash" for name, pin in locked.items() if not pin.hashes]


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_every_dependency_is_pinned_with_hashes_inside_its_specifier(lock: Path) -> None:
    """The floors in pyproject.toml are at most the locked versions, and nothing asked for is
    missing from the lock that `make lock` writes it into."""
    assert mismatches(pins(lock), wanted(lock)) == []


def test_a_lock_that_no_longer_matches_pyproject_is_caught() -> None:
    """The check above has teeth: a floor raised past the pin, and a new tool not yet locked."""
    locked = pins(DEV_LOCK)
    asked = {
        **wanted(DEV_LOCK),
        "redis": Requirement(f"redis>{locked['redis'].version}"),
        "a-new-tool": Requirement("a-new-tool>=1"),
    }
    assert mismatches(locked, asked) == [
        f"redis=={locked['redis'].version} is outside >{locked['redis'].version}",
        "a-new-tool is not locked (run make lock)",
    ]


def test_the_dev_lock_is_resolved_within_the_runtime_lock() -> None:
    """Both locks are installed together: a package in both is pinned to one version."""
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    assert set(runtime) <= set(dev)
    assert {n: dev[n].version for n in runtime} == {n: p.version for n, p in runtime.items()}


def test_the_venv_holds_exactly_what_the_locks_pin() -> None:
    """The suite runs against the versions that ship: every distribution installed beside it is
    pinned by a lock at that version, and every pin that applies here is installed."""
    locked = {**pins(RUNTIME_LOCK), **pins(DEV_LOCK)}
    installed = {
        str(canonicalize_name(d.metadata["Name"])): d.version
        for d in importlib.metadata.distributions()
        if d.metadata["Name"] != "orca-token-daemon"  # this checkout, installed editable
    }
    if sys.prefix == sys.base_prefix or Path(sys.prefix) != ROOT / ".venv":
        message = f"not the venv make builds ({sys.prefix}): run the suite with make test"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    unpinned = {n: v for n, v in installed.items() if n not in locked}
    off = {
        n: (v, locked[n].version)
        for n, v in installed.items()
        if n in locked and v != locked[n].version
    }
    missing = [
        n
        for n, pin in locked.items()
        if n not in installed and (pin.marker is None or pin.marker.evaluate())
    ]
    assert (unpinned, off, missing) == ({}, {}, [])


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
PYTHONS = ("3.11.0", "3.11.2", "3.11.7", "3.12.0", "3.13.0", "3.14.0")


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_pins_everything_its_pins_need_on_each_python_it_is_for(
    python: str, lock: Path
) -> None:
    """One universal resolution: on each CPython from 3.11.0, every requirement of every pin
    that applies there (read from the pinned distributions' metadata, markers evaluated for
    that Python) is itself pinned, inside its specifier, by a line whose marker applies."""
    environment = _environment(python)
    locked = pins(lock)
    applies = {
        name
        for name, pin in locked.items()
        if pin.marker is None or pin.marker.evaluate(environment)
    }
    asked = wanted(lock)
    extras = {name: set(requirement.extras) for name, requirement in asked.items()}
    needs: list[tuple[str, Requirement]] = [("pyproject.toml", r) for r in asked.values()]
    for name in sorted(applies):
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not on this interpreter (a marker keeps it off): its own needs are unread
        needs += [(name, Requirement(r)) for r in requires]
    problems = []
    for needed_by, requirement in needs:
        marker = requirement.marker
        extras_asked = extras.get(canonicalize_name(needed_by), set()) | {""}
        if marker is not None and not any(
            marker.evaluate({**environment, "extra": extra}) for extra in extras_asked
        ):
            continue
        name = canonicalize_name(requirement.name)
        if name not in applies:
            problems.append(f"{needed_by} needs {requirement} on {python}: not pinned for it")
        elif not requirement.specifier.contains(locked[name].version, prereleases=True):
            problems.append(f"{needed_by} needs {requirement}: {name}=={locked[name].version}")
    assert problems == []


def test_a_lock_without_the_marked_dependency_is_caught() -> None:
    """The check above has teeth: redis on 3.11.2 needs async-timeout, which the lock pins
    behind `python_full_version < '3.11.3'`."""
    marker = pins()["async-timeout"].marker
    assert marker is not None
    assert marker.evaluate(_environment("3.11.2"))
    assert not marker.evaluate(_environment("3.11.7"))


DEBIAN_PYTHON = Path("/usr/bin/python3")  # Debian 12's own: 3.11.2, as on a stock VM


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_pinned_vm_recipe_installs_on_debian_12_s_own_python(tmp_path: Path) -> None:
    """README's pinned install (its "Install" block), line by line, with the interpreter a stock
    Debian 12 VM has (make test installs it with apt-get where it is missing)."""
    if not DEBIAN_PYTHON.exists():
        message = f"{DEBIAN_PYTHON} is missing (make test installs python3-venv with apt-get)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    venv = tmp_path / "venv"
    recipe = doc_block("README.md", "## Install")
    assert recipe[0] == "python3 -m venv .venv"
    for line in recipe:  # run from the checkout, as written, but Debian's python and a temp venv
        command = shlex.split(line.replace(".venv", str(venv)))
        command = [str(DEBIAN_PYTHON), *command[1:]] if command[0] == "python3" else command
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
        )
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
