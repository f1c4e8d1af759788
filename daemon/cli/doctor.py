"""`orca-tokens doctor`: checks the configuration and what it points at, without logging in and
without writing anything. Exit 0 fine, 1 problems found, 78 the configuration is invalid."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import redis
import structlog

from daemon.config import (
    ConfigError,
    Settings,
    is_loopback,
    load_settings,
    loose_credential_files,
)
from daemon.refresh.progress import LoginProgress
from daemon.refresh.schedule import Leads, assumed_lifetime_s, plan_renewals
from daemon.registry import SETTINGS, Setting, setting, unknown_variables
from daemon.store.budget import usable_of
from daemon.store.client import build_client, disconnect
from daemon.store.eviction import Memory, evicts_ours, policy_words, read_memory
from daemon.store.feed import read_status as read_feed_status
from daemon.store.health import diagnose
from daemon.store.heartbeat import Heartbeat, live_instances
from daemon.token_format import tradovate_minutes
from daemon.values import subnet_of
from daemon.views.status import feed_words

log = structlog.get_logger("daemon.cli")

CLOCK_SKEW_WARN_S = 2.0
_PROBE_SCRIPT = "return #KEYS"  # reads nothing, writes nothing
CROSSSLOT_WORDS = (
    "the server refuses a script over keys of different hash slots (CROSSSLOT): a cluster "
    "behind one endpoint, such as Azure Managed Redis's Enterprise cluster policy. The fenced "
    "token write cannot run there: use the OSS cluster policy with REDIS_CLUSTER=true "
    "(docs/deploy.md#redis-cluster)"
)
TRADOVATE_PROBE_TIMEOUT_S = 5.0

Level = Literal["ok", "warning", "problem"]


@dataclass(frozen=True)
class Finding:
    level: Level
    topic: str
    text: str


@dataclass(frozen=True)
class SettingRow:
    name: str
    value: str
    source: str  # environment | <env file> | default


@dataclass
class DoctorReport:
    settings: list[SettingRow]
    findings: list[Finding]
    config_problems: list[str]

    @property
    def exit_code(self) -> int:
        if self.config_problems:
            return 78
        return 1 if any(f.level == "problem" for f in self.findings) else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "settings": [asdict(row) for row in self.settings],
            "findings": [asdict(f) for f in self.findings],
            "config_problems": self.config_problems,
        }


def run_doctor(env: Mapping[str, str], sources: Mapping[str, str]) -> DoctorReport:
    findings: list[Finding] = []
    for name, closest in unknown_variables(env):
        hint = f"; did you mean {closest}?" if closest else ""
        findings.append(Finding("problem", "settings", f"{name} is not a known setting{hint}"))
    try:
        settings = load_settings(env, credentials=True)
    except ConfigError as error:
        return DoctorReport(_setting_rows(env, sources), findings, error.problems)
    findings += _safety(settings)
    findings += _routes(settings)
    findings.append(_capacity(settings))
    findings += _redis(settings)
    findings += _tradovate(settings)
    return DoctorReport(_setting_rows(env, sources), findings, [])


def _setting_rows(env: Mapping[str, str], sources: Mapping[str, str]) -> list[SettingRow]:
    rows = []
    names = [s.name for s in SETTINGS if "<" not in s.name]
    names += sorted(n for n in env if n.startswith("TRADOVATE_PASSWORD_") and n not in names)
    for name in names:
        entry = setting(name)
        file_name = f"{name}_FILE"
        if entry.secret and env.get(file_name):
            rows.append(
                SettingRow(name, f"from file {env[file_name]}", sources.get(file_name, "?"))
            )
        elif env.get(name, "").strip():
            rows.append(SettingRow(name, _shown(entry, env[name]), sources.get(name, "?")))
        else:
            rows.append(SettingRow(name, entry.default_text, "default"))
    return rows


def _shown(entry: Setting, value: str) -> str:
    return "******** (set)" if entry.secret else value.strip()


def _routes(settings: Settings) -> list[Finding]:
    """Per login: which route logs it in and what that route needs."""
    needs = {
        "api": "accesstokenrequest with the API key (TRADOVATE_APP_ID, TRADOVATE_CID, "
        "TRADOVATE_SEC)",
        "tradingview": f"its name and password at {settings.tradovate.tv_base_url}/authorize, "
        "no API key; the account needs Tradovate's TradingView add-on",
    }
    return [
        Finding("ok", "login", f"{login.name} logs in by {login.route}: {needs[login.route]}")
        for login in settings.logins
    ]


def _capacity(settings: Settings) -> Finding:
    """Renewals the logins need (80-minute tokens) against what one group (one /24) may spend,
    Tradovate's limit less the reserve: at the advice's 15 minutes, else at the later lead
    that fits, down to the floor, and which logins are beyond that."""
    window_s = settings.budget_window_s
    usable = usable_of(settings.renew_budget_per_hour)
    leads = Leads(
        settings.refresh_interval_s, window_s=window_s, lead_floor_s=settings.renew_lead_floor_s
    )
    plan = plan_renewals(
        [LoginProgress(login) for login in settings.logins],
        0.0,
        lifetime_s=assumed_lifetime_s(window_s),
        usable=usable,
        share=1.0,
        leads=leads,
    )
    words = (
        f"{len(settings.logins)} logins need about {plan.needed:.1f} renewals per "
        f"{window_s} s; group {settings.budget_group} may spend {usable}, renewing "
        f"{tradovate_minutes(plan.lead_s, window_s)} before expiry"
    )
    if not plan.short:
        return Finding("ok", "budget", words)
    beyond = (
        f"; beyond it: {', '.join(plan.beyond)} (relogin ones log in again, wait ones lapse)"
        if plan.beyond
        else ""
    )
    return Finding(
        "warning" if plan.beyond else "ok",
        "budget",
        f"{words}: short at the advice's 15 minutes, so renewals move later; one /24 "
        f"subnet keeps about {plan.keeps_alive} alive by renewal, "
        f"{plan.keeps_alive_at_floor} at the floor of "
        f"{tradovate_minutes(plan.floor_s, window_s)}{beyond}; run another instance on another /24 "
        "subnet with its own ORCA_BUDGET_GROUP, or mark API-only logins when_budget_short = "
        '"relogin"',
    )


def _safety(settings: Settings) -> list[Finding]:
    found = [
        Finding("problem", "files", f"readable by others than its owner: {name}; chmod 600 it")
        for name in loose_credential_files(settings)
    ]
    if settings.redis.uses_tls and settings.redis.ssl_cert_reqs == "none":
        found.append(
            Finding("warning", "redis", "REDIS_SSL_CERT_REQS=none: the server is not verified")
        )
    if settings.health_addr is not None and not is_loopback(settings.health_addr[0]):
        found.append(
            Finding(
                "warning",
                "health",
                f"ORCA_HEALTH_ADDR listens on {settings.health_addr[0]}: /metrics and /readyz "
                "are open beyond this machine",
            )
        )
    return found


def _redis(settings: Settings) -> list[Finding]:
    target = settings.redis.target()
    client = build_client(settings.redis, role="lease")  # quick: nothing here may hang
    try:
        client.ping()
        seconds, micros = client.time()
        if not _scripts_span_slots(client, settings):
            return [Finding("problem", "redis", f"{target} answers, but {CROSSSLOT_WORDS}")]
        beats = live_instances(client)
        memory = _memory(client)
        feed = read_feed_status(client)
    except redis.RedisError as error:
        diagnosis = diagnose(error, settings.redis.credentials_from())
        return [
            Finding(
                "problem",
                "redis",
                f"{target} does not answer ({diagnosis.reason}): {diagnosis.hint}",
            )
        ]
    finally:
        disconnect(client)
    found = [Finding("ok", "redis", f"{target} answers")]
    skew = time.time() - (seconds + micros / 1e6)
    found.append(_skew("redis", skew, "Redis TIME"))
    if memory is not None:
        level: Level = "warning" if evicts_ours(memory.policy) else "ok"
        found.append(Finding(level, "redis", policy_words(memory.policy)))
    return found + _shared_subnets(settings, beats) + _feed(settings, feed)


def _feed(settings: Settings, feed: dict[str, Any] | None) -> list[Finding]:
    """With ORCA_PRICE_SYMBOLS: is a feed running, and how old is each symbol's quote."""
    if not settings.price.symbols:
        return []
    if feed is None:
        words = (
            "ORCA_PRICE_SYMBOLS is set, but no instance runs the price feed (no orca:feed:status)"
        )
        return [Finding("warning", "price", words)]
    level: Level = "ok" if feed.get("connected") else "problem"
    return [Finding(level, "price", feed_words(feed, time.time()))]


def _scripts_span_slots(client: redis.Redis, settings: Settings) -> bool:
    """A read-only script over a lease and a token key, which hash to different slots, as the
    fenced write's do: False where the server refuses it with CROSSSLOT (a cluster reached as
    one endpoint: Azure Managed Redis's Enterprise policy). A Redis Cluster client writes by
    slot instead (REDIS_CLUSTER=true), so nothing is probed there."""
    if settings.redis.cluster:
        return True
    try:
        client.eval(_PROBE_SCRIPT, 2, "orca:lease:doctor", "token:doctor")
    except redis.ResponseError as error:
        if diagnose(error).hint.startswith("CROSSSLOT"):
            log.warning("redis.crossslot", redis=settings.redis.target(), hint=CROSSSLOT_WORDS)
            return False
        raise
    return True


def _memory(client: redis.Redis) -> Memory | None:
    """The eviction policy, where the ACL user may ask INFO."""
    try:
        return read_memory(client)
    except redis.exceptions.NoPermissionError:
        return None


def _shared_subnets(settings: Settings, beats: list[Heartbeat]) -> list[Finding]:
    """Tradovate counts budgets per /24: two groups whose instances (TRADOVATE_LOCAL_ADDRESS,
    this one's included) share a /24 spend one budget, and each believes it has its own."""
    groups: dict[str, set[str]] = {}
    addressed = [(beat.address, beat.group) for beat in beats]
    addressed.append((settings.tradovate.local_address, settings.budget_group))
    for address, group in addressed:
        subnet = subnet_of(address) if address else None
        if subnet is not None:
            groups.setdefault(subnet, set()).add(group)
    return [
        Finding(
            "problem",
            "budget",
            f"budget groups {', '.join(sorted(names))} have instances on one /24 ({subnet}): "
            "Tradovate counts budgets per /24, so they share one; give them one ORCA_BUDGET_GROUP "
            "or move one to another /24",
        )
        for subnet, names in sorted(groups.items())
        if len(names) > 1
    ]


def _tradovate(settings: Settings) -> list[Finding]:
    """TLS to the base URL and any HTTP answer: reachable. No login, no credentials sent."""
    url = settings.tradovate.base_url
    try:
        with httpx.Client(timeout=TRADOVATE_PROBE_TIMEOUT_S) as http:
            response = http.get(url)
    except httpx.HTTPError as error:
        return [
            Finding(
                "problem", "tradovate", f"{url} is not reachable: {type(error).__name__}: {error}"
            )
        ]
    found = [Finding("ok", "tradovate", f"{url} answers (HTTP {response.status_code})")]
    date = response.headers.get("date")
    if date:
        try:
            skew = time.time() - parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return found
        found.append(_skew("tradovate", skew, "Tradovate's Date header"))
    return found


def _skew(topic: str, skew: float, against: str) -> Finding:
    if abs(skew) > CLOCK_SKEW_WARN_S:
        return Finding(
            "warning",
            topic,
            f"this clock is {skew:+.1f} s off {against}: token expiries are judged by it",
        )
    return Finding("ok", topic, f"clock within {abs(skew):.1f} s of {against}")


def render_doctor(report: DoctorReport) -> str:
    from daemon.views.table import table

    lines = [
        table([(r.name, r.value, r.source) for r in report.settings], ("setting", "value", "from"))
    ]
    lines.append("")
    marks = {"ok": "✅", "warning": "⚠️ ", "problem": "❌"}
    lines += [f"{marks[f.level]} {f.topic}: {f.text}" for f in report.findings]
    lines += [f"❌ configuration: {problem}" for problem in report.config_problems]
    verdict = {0: "no problems found", 1: "problems found", 78: "the configuration is invalid"}
    lines += ["", f"doctor: {verdict[report.exit_code]}"]
    return "\n".join(lines)
