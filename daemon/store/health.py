"""Whether Redis answers, as one shared fact: each membership round and refresh reports it. It
names why Redis does not answer (auth, tls, timeout, refused, dns, readonly, oom, other) with a
hint an operator can act on, logs only when that changes, and counts every failure by reason."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass

import redis
import structlog
from redis.exceptions import ClusterCrossSlotError

from daemon.metrics import Metrics
from daemon.store.connections import WRONG_NODE_ERRORS

log = structlog.get_logger("daemon.redis")


@dataclass(frozen=True)
class Diagnosis:
    reason: str  # auth | tls | timeout | refused | dns | readonly | oom | other
    hint: str


def diagnose(error: BaseException, credentials_from: str | None = None) -> Diagnosis:
    """Why a Redis call failed, from the error and the chain of errors beneath it;
    `credentials_from` names the file a refused password was read from."""
    chain = _chain(error)
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, redis.exceptions.NoPermissionError) for e in chain):
        lacks = "NOPERM: the ACL user lacks a permission (docs/deploy.md#redis-acl)"
        return Diagnosis("auth", lacks)
    if any(isinstance(e, WRONG_NODE_ERRORS) for e in chain) or "readonly" in text:
        return Diagnosis(
            "readonly",
            "a replica answered (a failover?): writes resume once the primary answers; a "
            "pinned address may need the cache's host name",
        )
    if (
        any(isinstance(e, redis.exceptions.OutOfMemoryError) for e in chain)
        or "oom command not allowed" in text
    ):
        return Diagnosis(
            "oom",
            "the cache is full and evicts nothing (maxmemory-policy noeviction): free memory "
            "or give the daemon a cache of its own (docs/deploy.md#azure-cache-for-redis)",
        )
    if any(isinstance(e, ClusterCrossSlotError) for e in chain) or "crossslot" in text:
        return Diagnosis(
            "other",
            "CROSSSLOT: a cluster behind one endpoint (Azure Managed Redis's Enterprise policy) "
            "refuses the fenced write: use the OSS policy with REDIS_CLUSTER=true "
            "(docs/deploy.md#redis-cluster)",
        )
    if any(isinstance(e, redis.AuthenticationError) for e in chain) or (
        "wrongpass" in text or "noauth" in text or "invalid username-password" in text
    ):
        if credentials_from is not None:
            return Diagnosis(
                "auth", f"WRONGPASS: the password in {credentials_from} (or REDIS_USERNAME)"
            )
        return Diagnosis("auth", "WRONGPASS: check REDIS_PASSWORD / REDIS_USERNAME")
    if "handshake operation timed out" in text or "wrong version number" in text:
        return Diagnosis("tls", "TLS to a plain port? set REDIS_SSL=false (or the TLS port)")
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or "certificate" in text:
        return Diagnosis(
            "tls", "the server's certificate is not trusted: set REDIS_SSL_CA_CERTS to its CA"
        )
    if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in text:
        return Diagnosis("tls", "TLS handshake failed: check REDIS_SSL and the port")
    if any(isinstance(e, socket.gaierror) for e in chain) or "name or service not known" in text:
        return Diagnosis("dns", "the host name does not resolve: check REDIS_HOST / REDIS_URL")
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return Diagnosis("refused", "nothing listens there: is Redis running? check REDIS_PORT")
    if "closed by server" in text or "connection reset" in text:
        return Diagnosis("other", "the server hung up: a TLS port? set REDIS_SSL=true")
    if any(isinstance(e, redis.TimeoutError | TimeoutError) for e in chain):
        return Diagnosis(
            "timeout", "no answer in time: a TLS port? set REDIS_SSL=true; or a hung server"
        )
    return Diagnosis("other", "see the error")


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


class RedisHealth:
    """Up or down, since when and why. `came_back` is set when Redis answers again after being
    down, for the housekeeping job to restore what Redis lost: no work runs here, on whichever
    thread happened to notice."""

    def __init__(
        self, target: str, metrics: Metrics | None = None, credentials_from: str | None = None
    ) -> None:
        """`credentials_from`: the file the password is read from, named by a WRONGPASS hint."""
        self.target = target
        self._credentials_from = credentials_from
        self.up: bool | None = None  # None until the first answer
        self.diagnosis: Diagnosis | None = None
        self.error: str | None = None
        self.down_since: float | None = None  # monotonic
        self.came_back = threading.Event()
        self._metrics = metrics
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        with self._lock:
            if self.up is True:
                return
            was_down = self.up is False
            self.up, self.diagnosis, self.error, self.down_since = True, None, None, None
            if self._metrics is not None:
                self._metrics.redis_up.set(1)
            if was_down:
                self.came_back.set()
        log.info("redis.up", redis=self.target)

    def failed(self, error: BaseException) -> None:
        diagnosis = diagnose(error, self._credentials_from)
        with self._lock:
            if self._metrics is not None:
                self._metrics.redis_errors.labels(reason=diagnosis.reason).inc()
            changed = self.up is not False or diagnosis != self.diagnosis
            self.error = str(error)
            self.diagnosis = diagnosis
            if self.up is not False:
                self.down_since = time.monotonic()
            self.up = False
            if self._metrics is not None:
                self._metrics.redis_up.set(0)
        if changed:
            self.log_down()

    def log_down(self) -> None:
        """`redis.down` with why; the housekeeping job repeats it while Redis stays down."""
        with self._lock:
            if self.up is not False or self.diagnosis is None:
                return
            down_for = time.monotonic() - (self.down_since or time.monotonic())
            fields = {
                "redis": self.target,
                "reason": self.diagnosis.reason,
                "hint": self.diagnosis.hint,
                "error": self.error,
                "down_for_s": round(down_for, 1),
            }
        log.error("redis.down", **fields)

    def describe(self) -> dict[str, object]:
        """For /readyz: {"up": true} or {"up": false, "reason": ..., "hint": ...}."""
        with self._lock:
            if self.up is not False or self.diagnosis is None:
                return {"up": self.up}
            return {"up": False, "reason": self.diagnosis.reason, "hint": self.diagnosis.hint}
