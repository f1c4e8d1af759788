"""A throwaway Redis on a free loopback port, for the demo, the tests and the benchmarks.

`redis-server` when it is installed (plain or TLS, with or without a password); otherwise the
demo falls back to fakeredis's TCP server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import redis

READY_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


class EmbeddedRedis(Protocol):
    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


class RedisServer:
    """`redis-server` as a child process: start, kill, restart on the same port, stop."""

    def __init__(
        self,
        *,
        password: str | None = None,
        tls: TlsFiles | None = None,
        extra_args: tuple[str, ...] = (),
        workdir: Path | None = None,
    ) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.executable = executable
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.extra_args = extra_args
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="orca-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"host": "127.0.0.1", "port": self.port}
        options["password"] = self.password
        if self.tls:
            options.update(ssl=True, ssl_ca_certs=str(self.tls.ca_cert))
        return options

    def client(self, **extra: Any) -> redis.Redis:
        return redis.Redis(decode_responses=True, **self.client_options(), **extra)

    def _argv(self) -> list[str]:
        argv = [self.executable, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.workdir), "--protected-mode", "no"]
        if self.tls:
            argv += ["--port", "0", "--tls-port", str(self.port)]
            argv += ["--tls-cert-file", str(self.tls.server_cert)]
            argv += ["--tls-key-file", str(self.tls.server_key)]
            argv += ["--tls-ca-cert-file", str(self.tls.ca_cert), "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self.port)]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + list(self.extra_args)

    def start(self) -> RedisServer:
        log_file = (self.workdir / "redis.log").open("ab")
        # A session of its own: Ctrl-C in a terminal reaches the demo, which then stops Redis
        # after its last look, rather than killing Redis under it.
        self.process = subprocess.Popen(
            self._argv(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        log_file.close()
        self.wait_until_ready()
        return self

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
                try:
                    client.ping()
                    return
                except redis.RedisError as error:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"redis-server on port {self.port}: {error}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: what a crash or an Azure failover looks like to clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Kill, then start empty on the same port (nothing is persisted)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@contextmanager
def redis_cluster(workdir: Path, nodes: int = 3) -> Iterator[list[RedisServer]]:
    """`nodes` redis-server primaries joined into a Redis Cluster with redis-cli --cluster."""
    servers: list[RedisServer] = []
    try:
        for n in range(nodes):
            (workdir / f"node{n}").mkdir(parents=True, exist_ok=True)
            node = RedisServer(
                workdir=workdir / f"node{n}",
                extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            )
            node.port = _cluster_port()
            servers.append(node.start())
        addresses = [f"127.0.0.1:{node.port}" for node in servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while not all(n.client().cluster("INFO").get("cluster_state") == "ok" for n in servers):
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not come up")
            time.sleep(0.1)
        yield servers
    finally:
        for node in servers:
            node.stop()


class FakeRedisServer:
    """fakeredis's TCP server in a thread: the demo's Redis on machines without redis-server."""

    def __init__(self) -> None:
        from fakeredis import TcpFakeServer

        self.port = free_port()
        self._server = TcpFakeServer(("127.0.0.1", self.port), server_type="redis")
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_embedded_redis() -> EmbeddedRedis:
    """redis-server when installed, else fakeredis's TCP server (the `demo` extra)."""
    if shutil.which("redis-server"):
        return RedisServer().start()
    try:
        return FakeRedisServer()
    except ImportError:
        raise RuntimeError(
            "the demo needs redis-server or fakeredis: apt-get install redis-server, "
            "or pip install 'orca-token-daemon[demo]'"
        ) from None
