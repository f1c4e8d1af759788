"""Everything a daemon works with, built once from the settings: the Redis clients (the lease
client a parameter of its own), Tradovate, the sinks, ownership and the refresher."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis

from daemon.config import Settings
from daemon.metrics import Metrics
from daemon.refresh.adoption import Adoption
from daemon.refresh.build import build_refreshing
from daemon.refresh.capacity import Capacity
from daemon.refresh.keeper import RedisKeeper
from daemon.refresh.refresher import Refresher
from daemon.service.ownership import Ownership
from daemon.service.systemd import Notifier
from daemon.sinks.alerts import Alerter
from daemon.sinks.audit import AuditRecorder
from daemon.store.client import build_client, disconnect, get_redis_client
from daemon.store.health import RedisHealth
from daemon.tradovate import TradovateClient


def new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


@dataclass
class Components:
    settings: Settings
    instance: str
    metrics: Metrics
    redis: Redis
    lease_client: Redis  # every call ends well within a lease's TTL
    tradovate: TradovateClient
    notifier: Notifier
    redis_health: RedisHealth
    alerts: Alerter | None
    audit: AuditRecorder | None
    ownership: Ownership
    refresher: Refresher
    adoption: Adoption  # what Redis holds for a login taken
    keeper: RedisKeeper  # Redis in step with what the refresher holds
    capacity: Capacity
    clock: Callable[[], float]
    stopping: threading.Event  # set once: no Tradovate call or write starts after it

    def owned(self) -> list[str]:
        return self.ownership.leases.held()

    def close_clients(self) -> None:
        """Deliver queued alerts and history records (each within its own short bound)."""
        for sink in (self.alerts, self.audit):
            if sink is not None:
                sink.close()
        self.tradovate.close()

    def disconnect(self) -> None:
        disconnect(self.redis)
        if self.lease_client is not self.redis:
            disconnect(self.lease_client)


def build_components(
    settings: Settings,
    *,
    redis_client: Redis | None = None,
    lease_client: Redis | None = None,
    tradovate: TradovateClient | None = None,
    metrics: Metrics | None = None,
    notifier: Notifier | None = None,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> Components:
    """Leases and the heartbeat get a client of their own unless one is given: a hung Redis
    must never hold an owner past its own deadline through a slow shared pool."""
    metrics = metrics or Metrics()
    instance = new_instance_id()
    main_client = redis_client or get_redis_client(settings.redis)
    leases_client = lease_client or build_client(settings.redis, role="lease")
    logins = [login.name for login in settings.logins]
    ownership = Ownership(leases_client, instance, logins, monotonic=monotonic)
    redis_health = RedisHealth(settings.redis.target(), metrics, settings.redis.credentials_from())
    alerts = Alerter(settings.alert_webhook_url.reveal()) if settings.alert_webhook_url else None
    audit = AuditRecorder(settings.audit_dsn.reveal()) if settings.audit_dsn else None
    tradovate = tradovate or TradovateClient(settings.tradovate, metrics=metrics, clock=clock)
    stopping = threading.Event()
    tradovate.stop_on(stopping)  # no Tradovate request starts after a stop signal

    refreshing = build_refreshing(
        settings,
        tradovate,
        main_client,
        metrics=metrics,
        instance=instance,
        clock=clock,
        redis_health=redis_health,
        alerts=alerts,
        audit=audit,
        holdings=ownership.leases.holdings,
        monotonic=monotonic,
        stopping=stopping,
    )
    return Components(
        settings=settings,
        instance=instance,
        metrics=metrics,
        redis=main_client,
        lease_client=leases_client,
        tradovate=tradovate,
        notifier=notifier or Notifier(),
        redis_health=redis_health,
        alerts=alerts,
        audit=audit,
        ownership=ownership,
        refresher=refreshing.refresher,
        adoption=refreshing.adoption,
        keeper=refreshing.keeper,
        capacity=refreshing.capacity,
        clock=clock,
        stopping=stopping,
    )
