"""The recipes of docs/deploy.md, followed line by line.

systemd: every command of docs/deploy.md's "Running under systemd" block runs as written, in a
temporary root where it says /etc or /opt (no systemd runs here). Three kinds of line are
emulated, as narrowly as possible: installing the virtualenv (this checkout's own .venv stands
in for it), `sudoedit` (the operator's edit: where Redis and Tradovate are), and `systemctl`
(what systemd would do with the installed unit: Environment=, then EnvironmentFile= over it,
WorkingDirectory=, LoadCredential= into $CREDENTIALS_DIRECTORY, ExecStart=).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer, TlsFiles
from daemon.sim.tradovate import FakeTradovate
from tests.helpers import REDIS_PASSWORD, DaemonProcess, Spawned, doc_block

ROOT = Path(__file__).parent.parent
VENV = Path(sys.executable).parent.parent


def rooted(command: str, root: Path) -> str:
    return re.sub(r"(?<![\w.])/(etc|opt)/", rf"{root}/\1/", command)


def unit_directives(unit: Path) -> list[tuple[str, str]]:
    found = []
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.append((key, value))
    return found


class EmulatedSystemd:
    """What systemd does for `enable --now` with the installed unit, in the temporary root."""

    def __init__(self, root: Path, processes: Spawned) -> None:
        self.root = root
        self.processes = processes

    def start(self, name: str) -> DaemonProcess:
        unit = self.root / "etc" / "systemd" / "system" / f"{name}.service"
        env: dict[str, str] = {}
        env_files: list[Path] = []
        credentials = self.root / "run" / "credentials" / name
        credentials.mkdir(parents=True)
        for key, value in unit_directives(unit):
            if key == "Environment":
                name, _, setting = value.partition("=")
                env[name] = setting
            elif key == "EnvironmentFile":
                env_files.append(Path(rooted(value, self.root)))
            elif key == "LoadCredential":
                ident, source = value.split(":", 1)
                shutil.copy(rooted(source, self.root), credentials / ident)
        for env_file in env_files:  # EnvironmentFile= wins over Environment=
            for line in env_file.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    name, _, setting = line.partition("=")
                    env[name] = setting
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
        env = {k: rooted(v, self.root) for k, v in env.items()}
        directives = dict(unit_directives(unit))
        argv = shlex.split(rooted(directives["ExecStart"], self.root))
        assert Path(argv[0]).exists(), f"ExecStart={argv[0]} is not installed"
        return self.processes.start(
            env, *argv[1:], cwd=rooted(directives["WorkingDirectory"], self.root), exe=argv[0]
        )


def test_the_systemd_recipe_as_written(
    tmp_path: Path,
    redis_tls_server: RedisServer,
    tls_files: TlsFiles,
    served_tradovate: FakeTradovate,
    processes: Spawned,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    fake = served_tradovate
    shell_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    secrets = {  # in the operator's shell, for the lines that write the credential files
        "TRADOVATE_SEC": fake.sec,
        "REDIS_PASSWORD": REDIS_PASSWORD,
        **{f"{u.name}_PASSWORD": u.password for u in fake.users.values()},
    }
    # The operator's edit of orca.env: where this site's Redis (TLS with a password, as Azure)
    # and Tradovate are.
    site = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_tls_server.port),
        "REDIS_SSL": "true",
        "REDIS_SSL_CA_CERTS": str(tls_files.ca_cert),
        "TRADOVATE_BASE_URL": fake.base_url,
        "ORCA_HEALTH_ADDR": "127.0.0.1:0",
    }
    systemd = EmulatedSystemd(root, processes)
    daemon = None
    status: subprocess.CompletedProcess[str] | None = None
    for line in doc_block("docs/deploy.md", "## Running under systemd"):
        for command in (c.strip() for c in line.split(" && ")):
            if " -m venv " in command or "/.venv/bin/pip install" in command:
                venv = root / "opt" / "orca-token-daemon" / ".venv"
                venv.parent.mkdir(parents=True, exist_ok=True)
                if not venv.exists():
                    venv.symlink_to(VENV)  # this checkout's install stands in for it
            elif command.startswith("sudoedit "):
                edited = Path(rooted(command.split()[1], root))
                lines = [
                    line
                    for line in edited.read_text().splitlines()
                    if line.split("=", 1)[0] not in site
                ]
                edited.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in site.items())]))
            elif command.startswith("sudo systemctl"):
                if "enable --now" in command:
                    daemon = systemd.start(command.split()[-1])
            elif command.startswith("sudo systemd-analyze verify"):
                # verify checks that ExecStart= exists: in the temporary root, as installed.
                installed = Path(rooted(command.split()[-1], root))
                verified = tmp_path / installed.name
                verified.write_text(rooted(installed.read_text(), root))
                analyze = shutil.which("systemd-analyze")
                if analyze is not None:
                    done = subprocess.run(
                        [analyze, "verify", str(verified)], capture_output=True, text=True
                    )
                    assert (done.returncode, done.stderr) == (0, ""), done.stderr
            else:
                shell = rooted(command, root).replace("sudo ", "")
                if "orca-tokens status" in shell:
                    assert daemon is not None

                    def all_valid(shell: str = shell) -> subprocess.CompletedProcess[str] | None:
                        done = subprocess.run(
                            ["sh", "-c", shell], env=shell_env, cwd=ROOT,
                            capture_output=True, text=True, timeout=30,
                        )  # fmt: skip
                        return done if done.returncode == 0 else None

                    status = wait_for(all_valid, timeout=20, what="status: every login valid")
                    continue
                env = {**shell_env, **secrets} if shell.startswith("printf") else shell_env
                done = subprocess.run(
                    ["sh", "-c", shell], env=env, cwd=ROOT, capture_output=True,
                    text=True, timeout=60,
                )  # fmt: skip
                assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert daemon is not None, "the recipe never started the service"
    assert status is not None, "the recipe never asked for the status"
    assert "4 of 4 logins have a valid token" in status.stdout
    credentials = root / "etc" / "orca-token-daemon" / "credentials"
    assert {p.name for p in credentials.iterdir()} >= {"tradovate_sec", "apex_266668"}
    assert all(p.stat().st_mode & 0o077 == 0 for p in credentials.iterdir())
    assert (credentials / "apex_266668").read_text() == fake.users["APEX_266668"].password
