"""Prometheus metrics with SPEC's names, on a registry of the daemon's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.refresh_total = Counter(
            "orca_token_refresh_total",
            "Token refresh attempts by login and outcome.",
            ["login", "outcome"],
            registry=self.registry,
        )
        self.refresh_duration = Histogram(
            "orca_token_refresh_duration_seconds",
            "Time taken by one refresh of one login.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.token_expiry = Gauge(
            "orca_token_expiry_timestamp_seconds",
            "Unix time at which the login's current token expires.",
            ["login"],
            registry=self.registry,
        )
        self.password_expiry = Gauge(
            "orca_password_expiry_timestamp_seconds",
            "Unix time at which the login's password expires, when Tradovate says.",
            ["login"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "orca_token_last_success_timestamp_seconds",
            "Unix time of the login's last successful refresh.",
            ["login"],
            registry=self.registry,
        )
        self.tradovate_requests = Counter(
            "orca_tradovate_requests_total",
            "Requests sent to Tradovate by endpoint and HTTP status (or error kind).",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.redis_up = Gauge(
            "orca_redis_up", "1 when the last Redis command succeeded.", registry=self.registry
        )
        self.redis_evicted_keys = Gauge(
            "orca_redis_evicted_keys",
            "Keys the Redis server has evicted since it started (INFO evicted_keys): under a "
            "policy that evicts keys with a TTL, the daemon's own may be among them.",
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "orca_redis_errors_total",
            "Failed Redis calls by reason: auth, tls, timeout, refused, dns, readonly, oom, other.",
            ["reason"],
            registry=self.registry,
        )
        self.tradovate_budget = Gauge(
            "orca_tradovate_budget",
            "Tradovate's budgets of the group (its /24) in the rolling window: limit, used, "
            "needed, and the logins renewals keep alive at the current lead and at the floor.",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.renew_lead = Gauge(
            "orca_renew_lead_seconds",
            "How long before expiry the group's tokens are renewed now (15 minutes, later down "
            "to ORCA_RENEW_LEAD_FLOOR while renewals are short).",
            registry=self.registry,
        )
        self.leader = Gauge(
            "orca_leader", "1 while this instance refreshes tokens.", registry=self.registry
        )
        self.logins_unrefreshed = Gauge(
            "orca_logins_unrefreshed",
            "Configured logins nobody refreshes, as this instance sees them: no live instance "
            "holds their lease, or (standing by) no valid token is in Redis.",
            registry=self.registry,
        )
        self.logins_owned = Gauge(
            "orca_logins_owned",
            "How many logins this instance refreshes now (holds the lease of).",
            registry=self.registry,
        )
        # The market-data feed (ORCA_PRICE_SYMBOLS): exported by every instance, the socket by
        # the one holding the feed's lease.
        self.price_feed_connected = Gauge(
            "orca_price_feed_connected",
            "1 while this instance's market-data socket is authorized and subscribed.",
            registry=self.registry,
        )
        self.price_quotes = Counter(
            "orca_price_quotes_total",
            "Quotes written to price:{symbol}:latest, by configured symbol.",
            ["symbol"],
            registry=self.registry,
        )
        self.price_age = Gauge(
            "orca_price_age_seconds",
            "Seconds since the symbol's latest quote (its own time), while this instance feeds.",
            ["symbol"],
            registry=self.registry,
        )
        self.price_feed_reconnects = Counter(
            "orca_price_feed_reconnects_total",
            "Market-data sockets opened again after one ended (a close, an error, a new token).",
            registry=self.registry,
        )
