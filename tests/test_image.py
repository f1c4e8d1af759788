"""The container image, built by `make image`'s script and run for real with buildah (chroot
isolation, the host's loopback): against the simulator and a TLS Redis with a password, with
secrets as files under /run/secrets the way deploy/compose.yaml passes them."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.sim.environment import wait_for
from daemon.sim.observe import all_live
from daemon.sim.redis_server import RedisServer, free_port
from daemon.sim.tradovate import DEMO_SEC, FakeTradovate
from tests.helpers import REDIS_PASSWORD, doc_block, require_tool

ROOT = Path(__file__).parent.parent
IMAGE = "localhost/orca-token-daemon:latest"
IMAGE_UID = 10001  # the Dockerfile's USER
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def image() -> str:
    """`make image` (tools/image.py): built once, or found up to date."""
    require_tool("buildah")  # make test installs it with apt-get; under CI=true it fails
    started = time.monotonic()
    built = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "image.py")],
        capture_output=True, text=True, timeout=540, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3_000:]
    print(built.stdout, f"(make image: {time.monotonic() - started:.1f} s)")
    return IMAGE


def readme_run() -> tuple[list[str], dict[str, str], str]:
    """docs/deploy.md's buildah recipe ("Without a Docker engine"): its `buildah run` flags, the
    environment it passes, and the folder of secret files it mounts at /run/secrets."""
    lines = doc_block("docs/deploy.md", "**Without a Docker engine**")
    command = shlex.split(" ".join(lines).replace("\\ ", " "))
    run = command[command.index("run", command.index("buildah")) :]
    flags, env, secrets = [], {}, ""
    words = iter(run[1:])
    for word in words:
        if word == "--":
            break
        if word == "-e":
            name, _, value = next(words).partition("=")
            env[name] = value
        elif word == "-v":
            secrets = next(words).split(":")[0]
        elif word.startswith("-"):
            flags += [word, next(words)]
    assert list(words) == ["orca-tokens", "run"]
    assert "make image" in lines
    return flags, env, secrets


class Container:
    """`buildah from` the image; `run` a command in it on the host's network."""

    def __init__(self, image: str, secrets: Path, env: dict[str, str]) -> None:
        made = subprocess.run(
            ["buildah", "from", "--quiet", image], capture_output=True, text=True, check=True
        )
        self.name = made.stdout.strip()
        self._argv = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
        self._argv += ["-v", f"{secrets}:/run/secrets:ro"]
        for name, value in env.items():
            self._argv += ["-e", f"{name}={value}"]
        self._argv.append(self.name)

    def start(self, *command: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self._argv, "--", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._argv, "--", *command], capture_output=True, text=True, timeout=60, check=False
        )

    def remove(self) -> None:
        subprocess.run(["buildah", "rm", self.name], capture_output=True, check=False)


@pytest.fixture
def containers(image: str) -> Iterator[list[Container]]:
    made: list[Container] = []
    yield made
    for container in made:
        container.remove()


def secret_files(folder: Path, fake: FakeTradovate, tls_ca: Path) -> Path:
    """docs/deploy.md's secret files ($PWD/deploy/secrets, the compose recipe's names),
    readable by the image's user."""
    secrets = folder / "deploy" / "secrets"
    secrets.mkdir(parents=True)
    files = {
        "redis_password": REDIS_PASSWORD,
        "tradovate_sec": DEMO_SEC,
        "ca.crt": tls_ca.read_text(),
    }
    files.update({user.name.lower(): user.password for user in fake.users.values()})
    for name, value in files.items():
        path = secrets / name
        path.write_text(value)
        os.chown(path, IMAGE_UID, 0)
        path.chmod(0o400)
    secrets.chmod(0o755)
    return secrets


def test_the_image_runs_the_daemon_as_its_user_with_file_secrets_and_a_stable_device_id(
    containers: list[Container],
    served_tradovate: FakeTradovate,
    redis_tls_server: RedisServer,
    tmp_path: Path,
) -> None:
    fake, redis_server = served_tradovate, redis_tls_server
    health_port = free_port()
    _, readme_env, mounted = readme_run()
    assert mounted == "$PWD/deploy/secrets"
    env = {  # the recipe's, but for this machine's Redis port and CA, and the simulator
        **readme_env,
        "REDIS_PORT": str(redis_server.port),
        "REDIS_SSL_CA_CERTS": "/run/secrets/ca.crt",
        "TRADOVATE_BASE_URL": fake.base_url,
        "TRADOVATE_APP_ID": "orca-sim",
        "TRADOVATE_CID": "7",
        "ORCA_HEALTH_ADDR": f"127.0.0.1:{health_port}",
    }
    assert "TRADOVATE_DEVICE_ID" not in env
    secrets = secret_files(tmp_path, fake, redis_server.tls.ca_cert if redis_server.tls else Path())
    inspect = subprocess.run(
        ["buildah", "inspect", "--type", "image", IMAGE], capture_output=True, text=True, check=True
    )
    config = json.loads(inspect.stdout)["Docker"]["config"]
    assert config["Healthcheck"]["Test"] == ["CMD", "orca-tokens", "health"]
    assert config["User"] == str(IMAGE_UID)
    lean = Container(IMAGE, secrets, env)
    containers.append(lean)
    found = lean.run(
        "sh", "-c", "command -v gcc cc make; cd /opt/orca/lib/python3*/site-packages && "
        "ls -d tests bench tools conftest.py daemon/tests 2>/dev/null; ls /src 2>/dev/null",
    )  # fmt: skip
    assert found.stdout == "", found.stdout  # no compiler; none of tests/, bench/, tools/
    client = redis_server.client()
    login = env["ORCA_ACCOUNTS"]
    names = [login, *fake.users[login].accounts]
    for _ in range(2):  # two containers made one after the other
        running, checker = Container(IMAGE, secrets, env), Container(IMAGE, secrets, env)
        containers += [running, checker]
        daemon = running.start("orca-tokens", "run")
        pid = 0
        try:
            wait_for(lambda: all_live(client, names, fake), timeout=60, what="every token live")
            health = checker.run("orca-tokens", "health")  # the HEALTHCHECK command
            assert health.returncode == 0, health.stdout + health.stderr
            beat = json.loads(next(iter(client.mget(client.keys("orca:heartbeat:*")))) or "{}")
            pid = int(beat["pid"])  # chroot isolation shares the host's process ids
            with open(f"/proc/{pid}/status") as status:
                uid = next(line for line in status if line.startswith("Uid:")).split()[1]
            assert int(uid) == IMAGE_UID
        finally:
            # What `docker stop` does: SIGTERM to the container's process (buildah run would
            # SIGKILL it when signalled itself).
            if pid:
                os.kill(pid, signal.SIGTERM)
            else:
                daemon.kill()
            out, _ = daemon.communicate(timeout=30)
            print(out[-4_000:])  # shown when the test fails
        assert daemon.returncode == 0, out[-3_000:]
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert "daemon.stopped" in [e.get("event") for e in events]
        assert REDIS_PASSWORD not in out
        client.flushall()  # the second container logs in afresh
    assert dict(fake.seen.sessions_opened) == {login: 2}
    devices: dict[str, set[str]] = {}
    for name, device in fake.seen.device_ids:
        devices.setdefault(name, set()).add(device)
    assert sorted(devices) == [login]
    assert all(len(seen) == 1 for seen in devices.values()), devices  # one per login, both times


def test_the_image_logs_in_on_the_tradingview_route_with_names_and_passwords_alone(
    containers: list[Container],
    served_tradovate: FakeTradovate,
    redis_tls_server: RedisServer,
    tmp_path: Path,
) -> None:
    """The desk's own route: docs/deploy.md's recipe with `TRADOVATE_LOGIN=tradingview` and no
    API key (its `TRADOVATE_SEC_FILE` left out): the container writes the login's tokens."""
    fake, redis_server = served_tradovate, redis_tls_server
    _, readme_env, _ = readme_run()
    env = {k: v for k, v in readme_env.items() if k != "TRADOVATE_SEC_FILE"}
    env.update(
        TRADOVATE_LOGIN="tradingview",
        TRADOVATE_BASE_URL=fake.base_url,  # accounts and renewals: Tradovate's REST API
        TRADOVATE_TV_BASE_URL=fake.base_url.removesuffix("/v1"),
        REDIS_PORT=str(redis_server.port),
        REDIS_SSL_CA_CERTS="/run/secrets/ca.crt",
        ORCA_HEALTH_ADDR=f"127.0.0.1:{free_port()}",
    )
    secrets = secret_files(tmp_path, fake, redis_server.tls.ca_cert if redis_server.tls else Path())
    (secrets / "tradovate_sec").unlink()
    running = Container(IMAGE, secrets, env)
    containers.append(running)
    login = env["ORCA_ACCOUNTS"]
    names = [login, *fake.users[login].accounts]
    client = redis_server.client()
    daemon = running.start("orca-tokens", "run")
    try:
        wait_for(lambda: all_live(client, names, fake), timeout=60, what="every token live")
        pid = int(
            json.loads(next(iter(client.mget(client.keys("orca:heartbeat:*")))) or "{}")["pid"]
        )
        os.kill(pid, signal.SIGTERM)
        out, _ = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            print(daemon.communicate(timeout=30)[0][-4_000:])  # shown when the test fails
    assert daemon.returncode == 0, out[-3_000:]
    assert all("sec" not in body for body in fake.seen.login_bodies)  # no API key was sent
