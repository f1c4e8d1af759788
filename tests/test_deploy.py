"""The three ways to run it, each ready to copy: systemd unit, container image, nohup launcher."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import load_settings
from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer, free_port
from daemon.sim.tradovate import FakeTradovate
from tests.helpers import DaemonProcess, daemon_env, require_tool

pytestmark = pytest.mark.e2e  # it runs real tools or processes

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "deploy" / "orca-token-daemon.service"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
COMPOSE_TRADINGVIEW = ROOT / "deploy" / "compose.tradingview.yaml"
NOHUP = ROOT / "deploy" / "orca-tokens-nohup.sh"
ORCA_TOKENS = Path(sys.executable).parent / "orca-tokens"


def unit_lines(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


# -- systemd -----------------------------------------------------------------------------------


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    # verify insists that ExecStart exists: point it at this checkout's console script.
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text().replace("/opt/orca-token-daemon/.venv/bin/orca-tokens", str(ORCA_TOKENS))
    )
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout == ""


def test_unit_security_exposure_is_at_most_2(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout[-500:]
    assert float(found.group(1)) <= 2.0


def test_unit_contract() -> None:
    assert unit_lines("Type") == ["notify"]
    assert unit_lines("Restart") == ["on-failure"]
    assert unit_lines("RestartPreventExitStatus") == ["78"]
    assert int(unit_lines("WatchdogSec")[0]) >= 20
    assert int(unit_lines("TimeoutStopSec")[0]) > 10  # the daemon's own stop budget is 10 s
    assert unit_lines("SystemCallFilter")[0] == "@system-service"
    assert unit_lines("CapabilityBoundingSet") == [""]
    credentials = [value.split(":")[0] for value in unit_lines("LoadCredential")]
    assert {"tradovate_sec", "redis_password"} <= set(credentials)
    environment = " ".join(unit_lines("Environment"))
    assert "TRADOVATE_SEC_FILE=tradovate_sec" in environment
    assert not re.search(r"(PASSWORD|SEC)=", environment.replace("_FILE=", "_FILE:"))


def test_the_unit_configuration_runs_the_daemon(
    served_tradovate: FakeTradovate, redis_server: RedisServer, tmp_path: Path
) -> None:
    """What systemd hands the process (Environment=, $CREDENTIALS_DIRECTORY with the
    LoadCredential= files, the accounts file) is enough to run green."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "tradovate_sec").write_text(served_tradovate.sec)
    for user in served_tradovate.users.values():
        (credentials / user.name.lower()).write_text(user.password + "\n")
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        "".join(
            f'[[accounts]]\nname = "{name}"\npassword_file = "{name.lower()}"\n\n'
            for name in served_tradovate.users
        )
    )
    env = dict(value.split("=", 1) for value in unit_lines("Environment"))
    env.pop("REDIS_PASSWORD_FILE")  # the test Redis has no password
    env.update(
        ORCA_ACCOUNTS_FILE=str(accounts),
        CREDENTIALS_DIRECTORY=str(credentials),
        REDIS_URL=redis_server.url,
        TRADOVATE_BASE_URL=served_tradovate.base_url,
        TRADOVATE_APP_ID="orca",
        TRADOVATE_CID="1",
        ORCA_HEALTH_ADDR="",
    )
    daemon = DaemonProcess(env, "run", "--once", cwd=str(tmp_path))
    assert daemon.wait() == 0
    assert len(redis_server.client().keys("token:*")) == 17


# -- container ---------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    args: dict[str, str] = {}  # ARG lines before the first FROM: the base's default
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction == "ARG" and not stages:
            name, _, default = rest.strip().partition("=")
            args[name] = default
            continue
        if instruction == "FROM":
            stages.append([])
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
        stages[-1].append((instruction, rest.strip()))
    return stages


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_contract() -> None:
    build, final = dockerfile_stages()
    bases = [build[0][1].split()[0], final[0][1].split()[0]]
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base) for base in bases), bases
    final_text = " ".join(rest for _, rest in final)
    assert not re.search(r"apt-get|gcc|build-essential|pip install", final_text)
    user = next(rest for instruction, rest in final if instruction == "USER")
    assert user not in ("root", "0")
    assert ("STOPSIGNAL", "SIGTERM") in final
    healthcheck = next(rest for instruction, rest in final if instruction == "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["orca-tokens", "health"]')
    assert ("ENTRYPOINT", '["orca-tokens"]') in final
    assert ("CMD", '["run"]') in final
    env = next(rest for instruction, rest in final if instruction == "ENV")
    assert "CREDENTIALS_DIRECTORY=/run/secrets" in env


def dockerfile_env() -> dict[str, str]:
    (_, final) = dockerfile_stages()
    env_text = next(rest for instruction, rest in final if instruction == "ENV")
    return dict(pair.split("=", 1) for pair in env_text.split())


def test_the_image_entry_command_outside_a_container(
    served_tradovate: FakeTradovate, redis_server: RedisServer, tmp_path: Path
) -> None:
    """ENTRYPOINT + CMD with the image's environment and secrets as files, as under
    /run/secrets; then its HEALTHCHECK command, then its STOPSIGNAL."""
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    (secrets / "tradovate_sec").write_text(served_tradovate.sec)
    env = {k: v for k, v in dockerfile_env().items() if k != "PATH"}
    env.update(CREDENTIALS_DIRECTORY=str(secrets), ORCA_HEALTH_ADDR=f"127.0.0.1:{free_port()}")
    env.update(
        REDIS_URL=redis_server.url,
        TRADOVATE_BASE_URL=served_tradovate.base_url,
        TRADOVATE_APP_ID="orca",
        TRADOVATE_CID="1",
        TRADOVATE_SEC_FILE="tradovate_sec",
        ORCA_ACCOUNTS=",".join(served_tradovate.users),
    )
    for user in served_tradovate.users.values():
        (secrets / user.name.lower()).write_text(user.password)
        env[f"TRADOVATE_PASSWORD_{user.name}_FILE"] = user.name.lower()
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    process = subprocess.Popen(
        [str(ORCA_TOKENS), "run"],
        env={**base, **env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def healthy() -> bool:
            check = subprocess.run(
                [str(ORCA_TOKENS), "health"],
                env={**base, **env},
                cwd=tmp_path,
                capture_output=True,
                text=True,
            )
            return check.returncode == 0

        wait_for(healthy, timeout=20, what="the HEALTHCHECK command to pass")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=12) == 0
    finally:
        if process.poll() is None:
            process.kill()


# -- compose -----------------------------------------------------------------------------------


def compose_model(path: Path) -> dict[str, Any]:
    """A compose file with the files it includes merged in, as compose merges them."""
    model: dict[str, Any] = yaml.safe_load(path.read_text())
    for included in model.pop("include", []):
        part = compose_model(path.parent / included)
        for section in ("services", "secrets", "volumes"):
            overlap = set(model.get(section, {})) & set(part.get(section, {}))
            assert not overlap, f"{included} and {path.name} both declare {overlap}"
            model[section] = {**part.get(section, {}), **model.get(section, {})}
    return model


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_TRADINGVIEW], ids=["api", "tradingview"])
def test_compose_runs_the_daemon_against_tls_redis_with_compose_secrets(
    path: Path, tmp_path: Path
) -> None:
    compose = compose_model(path)
    services = compose["services"]
    daemon, redis = services["orca-token-daemon"], services["redis"]
    assert daemon["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "--tls-port 6380" in redis["command"][0]
    assert "--port 0" in redis["command"][0]  # TLS only
    assert "/run/secrets/redis_password" in redis["command"][0]
    env = daemon["environment"]
    assert env["REDIS_SSL"] == "true"
    assert env["REDIS_SSL_CA_CERTS"] == "/tls/ca.crt"
    declared = set(compose["secrets"])
    assert set(daemon["secrets"]) <= declared
    assert set(redis["secrets"]) <= declared
    assert {volume.split(":")[0] for volume in daemon["volumes"]} <= set(compose["volumes"])
    for name, value in env.items():
        if re.search(r"PASSWORD|SEC$|_SEC_|TOKEN", name):
            assert name.endswith("_FILE"), f"{name} would put a secret in the environment"
            assert value in daemon["secrets"], f"{name} names no mounted secret"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    # The daemon's environment is a whole configuration, its secrets read from the files the
    # secrets mount (the image sets CREDENTIALS_DIRECTORY=/run/secrets).
    for secret in daemon["secrets"]:
        (tmp_path / secret).write_text(f"{secret}-value")
    (tmp_path / "ca.crt").write_text("the tls volume's CA")
    here = {"CREDENTIALS_DIRECTORY": str(tmp_path), "REDIS_SSL_CA_CERTS": str(tmp_path / "ca.crt")}
    settings = load_settings({**env, **here})
    routes = {login.route for login in settings.logins}
    if path is COMPOSE_TRADINGVIEW:
        assert routes == {"tradingview"}
        assert not {"TRADOVATE_APP_ID", "TRADOVATE_CID", "TRADOVATE_SEC_FILE"} & set(env)
        assert "tradovate_sec" not in daemon["secrets"]
    else:
        assert routes == {"api"}
        assert settings.tradovate.sec is not None


# -- nohup -------------------------------------------------------------------------------------


@pytest.fixture
def nohup_home(
    tmp_path: Path, served_tradovate: FakeTradovate, redis_server: RedisServer
) -> Iterator[tuple[Path, dict[str, str]]]:
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
        **daemon_env(served_tradovate, redis_server.url),
        "ORCA_HOME": str(tmp_path),
        "ORCA_STATE_DIR": str(tmp_path),
        "ORCA_BIN": str(ORCA_TOKENS),
        "ORCA_LOG_MAX_BYTES": "2048",
        "ORCA_LOG_BACKUPS": "3",
    }
    yield tmp_path, env
    subprocess.run([str(NOHUP), "stop"], env=env, capture_output=True, timeout=30)


def launcher(env: dict[str, str], verb: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NOHUP), verb], env=env, capture_output=True, text=True, timeout=30)


def test_nohup_launcher_lifecycle(nohup_home: tuple[Path, dict[str, str]]) -> None:
    home, env = nohup_home
    assert launcher(env, "status").returncode == 3
    started = launcher(env, "start")
    assert started.returncode == 0, started.stdout
    assert "started (pid" in started.stdout
    pid = int((home / "run" / "orca-tokens.pid").read_text())
    assert launcher(env, "status").stdout.strip() == f"orca-tokens: running (pid {pid})"

    def every_login_valid() -> bool:
        status = subprocess.run(
            [str(ORCA_TOKENS), "status"], env=env, capture_output=True, text=True, timeout=30
        )
        return status.returncode == 0 and "4 of 4 logins have a valid token" in status.stdout

    wait_for(every_login_valid, what="orca-tokens status: every login valid")
    again = launcher(env, "start")
    assert again.returncode == 1
    assert "refusing to start a second daemon" in again.stdout
    log = home / "logs" / "orca-tokens.log"
    wait_for(lambda: (home / "logs" / "orca-tokens.log.1").exists(), what="a rotated log")
    assert all(json.loads(line) for line in log.read_text().splitlines())
    stopped = launcher(env, "stop")
    assert stopped.returncode == 0
    assert stopped.stdout.strip() == f"orca-tokens: stopped (pid {pid})"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    logged = "".join(p.read_text() for p in sorted((home / "logs").glob("orca-tokens.log*")))
    assert '"daemon.stopped"' in logged  # it exited cleanly, it was not killed
    assert launcher(env, "status").returncode == 3
    assert not list((home / "logs").glob("orca-tokens.log.4"))  # ORCA_LOG_BACKUPS=3


def test_nohup_launcher_reports_a_bad_configuration(
    nohup_home: tuple[Path, dict[str, str]],
) -> None:
    home, env = nohup_home
    started = launcher({**env, "REDIS_PORT": "not-a-port", "REDIS_URL": ""}, "start")
    assert started.returncode == 1
    assert "exited at once with code 78" in started.stdout
    assert "REDIS_PORT" in started.stdout  # the reason itself, from stderr
    assert not (home / "run" / "orca-tokens.pid").exists()


def test_nohup_launcher_judges_readiness_from_this_run_only(
    nohup_home: tuple[Path, dict[str, str]],
) -> None:
    """An earlier run's daemon.ready in the appended log does not make a failing start look
    started; the reason is this run's own log lines."""
    home, env = nohup_home
    log = home / "logs" / "orca-tokens.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text('{"event": "daemon.ready", "instance": "host:1:abcd"}\n')
    with socket.socket() as taken:  # the health port is in use: the daemon dies after logging
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = launcher({**env, "ORCA_HEALTH_ADDR": f"127.0.0.1:{port}"}, "start")
    assert started.returncode == 1, started.stdout
    assert "exited at once" in started.stdout
    assert "Address already in use" in started.stdout or "daemon.crashed" in started.stdout


def test_nohup_launcher_defaults_write_outside_the_checkout_with_tight_modes(
    nohup_home: tuple[Path, dict[str, str]],
) -> None:
    home, env = nohup_home
    checkout, user_home = home / "checkout", home / "user"
    checkout.mkdir()
    user_home.mkdir()
    env = {k: v for k, v in env.items() if k != "ORCA_STATE_DIR"}
    env.update(ORCA_HOME=str(checkout), HOME=str(user_home))
    try:
        assert launcher(env, "start").returncode == 0
        state = user_home / ".local" / "state" / "orca-token-daemon"
        pidfile = state / "run" / "orca-tokens.pid"
        assert pidfile.stat().st_mode & 0o777 == 0o600
        assert (state / "logs" / "orca-tokens.log").stat().st_mode & 0o777 == 0o640
        assert list(checkout.iterdir()) == []
    finally:
        launcher(env, "stop")


def test_nohup_launcher_never_signals_a_stranger(
    nohup_home: tuple[Path, dict[str, str]],
) -> None:
    """A stale pidfile naming an unrelated process (its command line even says "run") is not
    ours: status says not running, stop leaves it alone."""
    home, env = nohup_home
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "/run/user/1000", "run"]
    )
    try:
        (home / "run").mkdir(exist_ok=True)
        (home / "run" / "orca-tokens.pid").write_text(f"{stranger.pid}\n")
        assert launcher(env, "status").returncode == 3
        assert launcher(env, "stop").returncode == 0
        assert stranger.poll() is None  # still alive: never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_nohup_launcher_restart_and_usage(nohup_home: tuple[Path, dict[str, str]]) -> None:
    home, env = nohup_home
    assert launcher(env, "start").returncode == 0
    first = (home / "run" / "orca-tokens.pid").read_text()
    assert launcher(env, "restart").returncode == 0
    assert (home / "run" / "orca-tokens.pid").read_text() != first
    assert launcher(env, "bogus").returncode == 2
