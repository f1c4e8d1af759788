"""Every Redis key prefix, TTL and timing of the daemon, with units in the names."""

from typing import Final

# Redis keys read by trading programs (SPEC "Redis keys": never change them).
TOKEN_KEY_PREFIX: Final = "token:"
MD_TOKEN_KEY_PREFIX: Final = "mdtoken:"
HFT_KEY_PREFIX: Final = "hft:"
PRICE_KEY_PREFIX: Final = "price:"
HFT_TTLS_S: Final = {"accounts": 300, "positions": 1, "orders": 1, "balances": 2}
PRICE_TTL_S: Final = 5

# The daemon's own state, all under orca:* (documented in README).
STATUS_KEY_PREFIX: Final = "orca:status:"  # per-login status JSON, written with each refresh
HEARTBEAT_KEY_PREFIX: Final = "orca:heartbeat:"  # per-instance liveness, answered by `health`
HEARTBEAT_TTL_S: Final = 6  # a killed instance leaves the membership within this
INSTANCES_KEY: Final = "orca:instances"  # set of instance ids; live while their heartbeat is
LEGACY_LEADER_KEY: Final = "orca:leader"  # protocol 1's one lease: a daemon of it is running
LEGACY_LEADER_TTL_S: Final = 10  # ... renewed with this TTL; one without a TTL is nobody's
LEASE_KEY_PREFIX: Final = "orca:lease:"  # {login}: the owner's fencing value, `{instance}:{random}`
PROTOCOL_VERSION: Final = 2  # in heartbeats; 1 was the single `orca:leader` lease
REFRESH_REQUESTS_KEY: Final = "orca:refresh:requests"  # `tokens refresh` asks any daemon here
REFRESH_INSTANCE_REQUESTS_KEY_PREFIX: Final = "orca:refresh:requests:"  # {instance}: forwarded
REFRESH_RESULT_KEY_PREFIX: Final = "orca:refresh:result:"  # ... and reads its answer here
REFRESH_REQUEST_TTL_S: Final = 60
REQUEST_COOLDOWN_S: Final = 30.0  # a login's forced refreshes by request: one per this at most
PROBE_COOLDOWN_S: Final = 5.0  # ... and one check of a reader's 401 reports per this
BUDGET_KEY_PREFIX: Final = "orca:budget:"  # {group}:{endpoint}: spends in the rolling window
FEED_LEASE_KEY: Final = "orca:feed:lease"  # the one instance running the market-data feed
FEED_STATUS_KEY: Final = "orca:feed:status"  # its JSON status, for `status` and `doctor`
FEED_STATUS_TTL_S: Final = 10  # ... rewritten every second by the feed's holder

# The market-data feed (ORCA_PRICE_SYMBOLS).
FEED_LEASE_TTL_S: Final = 10  # a lost holder's feed is taken over within this (and a check)
FEED_LEASE_RENEW_S: Final = 2.0  # the holder renews this often; it closes its socket once the
FEED_LEASE_MARGIN_S: Final = 2.0  # ... TTL less this has passed since its last renewal was sent
FEED_LEASE_CHECK_S: Final = 2.0  # a standby looks for a free lease this often
FEED_TICK_S: Final = 0.25  # the socket is read in slices this long: heartbeats, checks, writes
FEED_CLIENT_HEARTBEAT_S: Final = 2.0  # `[]` to the server: Tradovate drops a silent client at 2.5 s
FEED_REWRITE_S: Final = 1.0  # every price key rewritten this often while live (a quiet market)
FEED_TOKEN_CHECK_S: Final = 1.0  # mdtoken: read this often; a new value reconnects with it
FEED_OPEN_TIMEOUT_S: Final = 5.0  # connect, open, authorize: within the lease's fresh deadline
FEED_BACKOFF_S: Final = (1.0, 60.0)  # reconnects, jittered, doubling from the first to the second
FEED_STEADY_S: Final = 30.0  # a connection that lived this long starts the back-off over
FEED_RESOLVE_EVERY_S: Final = 86_400.0  # product roots resolved to their front month daily
FRONT_MONTH_ROLL_S: Final = 7 * 86_400.0  # ... rolling to the next this long before expiry

# Sharing the logins, and Redis loss.
REDIS_WATCH_INTERVAL_S: Final = 1.0  # the membership round: heartbeat, renew and take leases
LEASE_TTL_S: Final = 5  # the owner renews every round: five chances before it lapses
LEASE_DEADLINE_MARGIN_S: Final = 1.0  # the holder stops acting this long before the TTL runs out
LEASE_IO_TIMEOUT_S: Final = 1.0  # lease and heartbeat commands: well under the lease's TTL
MEMBERSHIP_SETTLED_ROUNDS: Final = 3  # logins move only once the live instances stay the same
MEMBER_IDLE_ROUNDS: Final = 10  # a member that takes none of its free logins this long is left out
HEARTBEAT_MAX_BYTES: Final = 2_048  # a larger heartbeat is not one this protocol writes
RECONCILE_INTERVAL_S: Final = 5.0  # compare held tokens with Redis, rewrite what is missing
RECONCILE_FULL_CHECK_S: Final = 15.0  # ... counting them each pass; reading every value this often

# Token lifetime rules (SPEC "Tradovate facts").
DEFAULT_TOKEN_TTL_S: Final = 18_000
TOKEN_TTL_MARGIN_S: Final = 60  # a key expires this long before its token does ...
TOKEN_TTL_MARGIN_FRACTION: Final = 0.1  # ... or a tenth of the lifetime, when that is shorter
TOKEN_TTL_MARGIN_MIN_S: Final = 1.0  # ... time-scaled (ORCA_BUDGET_WINDOW), never under this
RENEW_BEFORE_EXPIRY_S: Final = 900  # Tradovate's advice: renew about 15 minutes before expiry
RENEW_LEAD_FLOOR_S: Final = 300  # ... as late as 5 minutes while renewals are short (SPEC)
RENEW_LEAD_FLOOR_MIN_S: Final = 120  # ORCA_RENEW_LEAD_FLOOR's lower bound
RENEW_BEFORE_EXPIRY_FRACTION: Final = 15 / 80  # ... the same share of a shorter (simulated) life
ASSUMED_TOKEN_LIFETIME_S: Final = 4_800  # 80 minutes, for capacity before any token is seen
MAX_RENEW_BUDGET_PER_HOUR: Final = 10_000  # ORCA_RENEW_BUDGET_PER_HOUR's bound (a heartbeat's too)
BUDGET_WINDOW_S: Final = 3_600  # Tradovate's rolling hour (ORCA_BUDGET_WINDOW scales it)
BUDGET_STAGGER_S: Final = 2.0  # between renewals waiting for the same freed slot (real hour)
REJECTED_BACKOFF_S: Final = (900, 1_800, 3_600, 7_200, 14_400)  # a wrong password: 15 min .. 4 h
LOGIN_FAILURE_SHARE: Final = 2  # failed logins one login may spend per window, of the budget
RENEW_SLACK_S: Final = 2.0  # a renewal lands at least this long before its key would expire ...
RENEW_SLACK_MIN_S: Final = 2.0  # ... never under this: schedulers run late in real time
RENEW_JITTER_LIFETIME_FRACTION: Final = 0.03  # renewals of many logins do not line up
DEFAULT_TOKEN_PROBE_INTERVAL_S: Final = 300  # /account/list with each held token: no address budget

# Retry policy for a failing login.
RETRY_BACKOFF_BASE_S: Final = 1.0
RETRY_BACKOFF_CAP_S: Final = 300.0
CREDENTIALS_REJECTED_RETRY_S: Final = 300.0  # Tradovate locks logins that hammer a bad password
DEFAULT_CAPTCHA_PARK_S: Final = 3_600
RATE_LIMITED_BACKOFF_S: Final = 3_600.0  # a 429: that user waits an hour
LOCKED_PARK_S: Final = 3_600.0  # userStatus TemporaryLocked: at least an hour, no login tried
LOCKOUT_S: Final = 3_600.0  # HTTP 423: the group sends no login for an hour
# A renewal block read from Redis is trusted this long at most: a ticket's p-time is seconds; a
# captcha's park stops renewals on the instance that met it (a forged hour would lapse tokens).
SHARED_RENEW_BLOCK_S: Final = 300.0
PARK_RECHECK_S: Final = 3_600.0  # a login parked for good (Closed) looks again this often
FRESH_TOKEN_S: Final = 60.0  # an /account/list refusal this soon after a token is a permission
PASSWORD_WARNING_S: Final = 7 * 86_400  # a password expiring within a week is warned about
AUTH_RATE_WINDOW_S: Final = 60.0

# Tradovate HTTP.
TRADOVATE_BASE_URLS: Final = {
    "demo": "https://demo.tradovateapi.com/v1",
    "live": "https://live.tradovateapi.com/v1",
}
# The TradingView broker route (SPEC, "Two ways to log in"): no API key, name and password only.
TRADOVATE_MD_URLS: Final = {
    "demo": "wss://md-demo.tradovateapi.com/v1/websocket",
    "live": "wss://md.tradovateapi.com/v1/websocket",
}
TRADOVATE_TV_BASE_URLS: Final = {
    "demo": "https://tv-demo.tradovateapi.com",
    "live": "https://tv-live.tradovateapi.com",
}
TRADOVATE_CONNECT_TIMEOUT_S: Final = 5.0
TRADOVATE_TIMEOUT_S: Final = 10.0  # default of ORCA_TRADOVATE_TIMEOUT

# Redis connection.
REDIS_HEALTH_CHECK_INTERVAL_S: Final = 30  # well below Azure's 10-minute idle disconnect
# TCP keepalive, set rather than left to the installed redis-py (30/5/3 s on 8.1, the kernel's
# 2 hours before): a peer gone without a word (a failover's old node) is noticed in under a minute.
REDIS_KEEPALIVE_IDLE_S: Final = 30
REDIS_KEEPALIVE_INTERVAL_S: Final = 5
REDIS_KEEPALIVE_PROBES: Final = 3
REDIS_SOCKET_TIMEOUT_S: Final = 3.0  # each command (and a TLS handshake) answers within this
REDIS_POOL_WAIT_S: Final = 5.0  # a refresh waits this long for a free pooled connection
REDIS_COMMAND_RETRIES: Final = 2  # redis-py's one retry layer: reconnect and resend ...
REDIS_RETRY_BUDGET_S: Final = 5.0  # ... but never start a retry this long after the first try
REDIS_RETRY_BACKOFF_BASE_S: Final = 0.05
REDIS_RETRY_BACKOFF_CAP_S: Final = 1.0

# Alerts.
ALERT_TIMEOUT_S: Final = 5.0
ALERT_QUEUE_SIZE: Final = 100  # beyond this, alerts are dropped rather than slow anything
AUDIT_QUEUE_SIZE: Final = 10_000  # token history batches waiting for PostgreSQL

# Lifecycle.
MAIN_LOOP_TICK_S: Final = 1.0
CLOCK_STEP_S: Final = 2.0  # the system clock moving this far from the monotonic one is a step
SHUTDOWN_TIMEOUT_S: Final = 7.0  # under systemd's and the 10 s stop budget
DEFAULT_REFRESH_CONCURRENCY: Final = 16
