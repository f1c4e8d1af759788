"""`make image`: the container image, built from the real Dockerfile with buildah (no Docker engine
is needed), tagged `localhost/orca-token-daemon:<version>` and `:latest`, in the docker format so
its HEALTHCHECK is kept.

Where the Dockerfile's registry base cannot be pulled (no registry reachable), the same Debian
release is built locally with mmdebstrap and passed in as the BASE build argument; the
Dockerfile's default stays the registry image users pull. The base and the image are rebuilt only
when what goes into them changed: each carries a label with the digest of its inputs. Standard
library only, so it runs before any virtualenv exists. Prints the image's size, what it adds to
its base, and the build time.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/orca-token-daemon"
LOCAL_BASE = "localhost/orca-base:bookworm"
# The registry base's Debian release and Python layout: python3 as `python`, venv, CA bundle.
DEBIAN = ["--variant=apt", "--include=python3,python3-venv,python-is-python3,ca-certificates"]
DEBIAN_RELEASE = "bookworm"
INPUTS = ("Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml", "README.md")
# The build machine's CA bundle and pip settings reach the build only (not the image).
BUILD_VOLUMES = ("/etc/ssl/certs", "/etc/pip.conf")


def buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=check)


def label_of(reference: str, name: str) -> str | None:
    found = buildah("inspect", "--type", "image", reference, check=False)
    if found.returncode != 0:
        return None
    labels = json.loads(found.stdout).get("Docker", {}).get("config", {}).get("Labels") or {}
    value = labels.get(name)
    return value if isinstance(value, str) else None


def image_id(reference: str) -> str:
    return buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", reference).stdout


def size_bytes(reference: str) -> int:
    """The sum of the image's layers, uncompressed (what a container's root file system holds)."""
    manifest = json.loads(
        json.loads(buildah("inspect", "--type", "image", reference).stdout)["Manifest"]
    )
    return sum(int(layer["size"]) for layer in manifest["layers"])


def registry_base() -> str:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"^ARG BASE=(\S+)$", text, re.MULTILINE)
    if match is None:
        sys.exit("Dockerfile: no `ARG BASE=<image>` line")
    return match.group(1)


def base() -> str:
    """The registry base when it can be pulled, else the local Debian one (built if needed)."""
    registry = registry_base()
    if buildah("pull", "--quiet", registry, check=False).returncode == 0:
        return registry
    key = hashlib.sha256(json.dumps([DEBIAN_RELEASE, *DEBIAN]).encode()).hexdigest()[:16]
    if label_of(LOCAL_BASE, "orca.base") == key:
        return LOCAL_BASE
    print(f"{registry} cannot be pulled: building {LOCAL_BASE} with mmdebstrap", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        tarball = str(Path(folder) / "base.tar")
        subprocess.run(
            ["mmdebstrap", "--quiet", *DEBIAN, DEBIAN_RELEASE, tarball],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        container = buildah("from", "scratch").stdout.strip()
        try:
            buildah("add", container, tarball, "/")
            buildah(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--label",
                f"orca.base={key}",
                container,
            )
            buildah("commit", "--quiet", container, LOCAL_BASE)
        finally:
            buildah("rm", container, check=False)
    return LOCAL_BASE


def source_digest(base_reference: str) -> str:
    digest = hashlib.sha256(image_id(base_reference).encode())
    files = [ROOT / name for name in INPUTS]
    files += sorted(
        p for p in (ROOT / "daemon").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def version() -> str:
    text = (ROOT / "daemon" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        sys.exit("daemon/__init__.py: no __version__")
    return match.group(1)


def main() -> int:
    started = time.monotonic()
    base_reference = base()
    tag = f"{IMAGE}:{version()}"
    key = source_digest(base_reference)
    if label_of(tag, "orca.source") == key:
        print(f"{tag}: up to date (inputs {key})")
    else:
        volumes = [f"-v={path}:{path}:ro" for path in BUILD_VOLUMES if Path(path).exists()]
        subprocess.run(
            [
                "buildah", "bud", "--quiet", "--isolation", "chroot", "--network", "host",
                "--format", "docker", "--layers", f"--build-arg=BASE={base_reference}",
                f"--label=orca.source={key}", *volumes, "-t", tag, "-t", f"{IMAGE}:latest",
                str(ROOT),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        buildah("rmi", "--prune", check=False)  # the layers of earlier builds, now untagged
        print(f"{tag}: built (inputs {key})")
    total, below = size_bytes(tag), size_bytes(base_reference)
    print(
        f"{tag}: {total / 1e6:.0f} MB, {(total - below) / 1e6:.0f} MB over its base "
        f"{base_reference} ({below / 1e6:.0f} MB); {time.monotonic() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
