"""`orca-tokens status`: one row per login, from Redis alone: what its token is worth (the one
definition of valid), when it expires and is next refreshed, the last outcome and its error,
its accounts, and which instance owns it (holds its lease) with how fresh that instance's
heartbeat is; then each live instance with its address, budget group, budget and logins owned."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from daemon import notes as note
from daemon.outcomes import LoginState, TokenState
from daemon.store.budget import read_capacities
from daemon.store.feed import read_status as read_feed_status
from daemon.store.heartbeat import Heartbeat, live_instances
from daemon.store.lease import holders
from daemon.store.status import LoginStatus, read_statuses
from daemon.store.tokens import login_tokens
from daemon.token_format import tradovate_minutes
from daemon.views.check import renewal_lead_s
from daemon.views.table import table

EXIT_ALL_VALID = 0
EXIT_NOT_ALL_VALID = 1
EXIT_NO_DAEMON = 3  # systemctl's "not running"


@dataclass(frozen=True)
class LoginRow:
    login: str
    token: TokenState
    state: LoginState | None  # None: no daemon has written a status for it
    expires_at: str | None
    next_attempt_at: str | None
    last_outcome: str | None
    last_error: str | None
    accounts: int
    owner: str | None
    heartbeat_age_s: float | None  # None: the owner has no live heartbeat
    when_budget_short: str | None
    route: str | None  # api | tradingview, as the owner recorded it
    notes: tuple[str, ...] = ()  # what a person should know (daemon.notes), each a sentence


@dataclass(frozen=True)
class StatusReport:
    logins: list[LoginRow]
    instances: list[Heartbeat]
    now: float
    capacities: list[dict[str, Any]]
    feed: dict[str, Any] | None = None  # the price feed's status, as its holder wrote it

    @property
    def valid(self) -> int:
        return sum(1 for row in self.logins if row.token.usable)

    @property
    def exit_code(self) -> int:
        if not self.instances:
            return EXIT_NO_DAEMON
        if self.valid == len(self.logins):
            return EXIT_ALL_VALID
        return EXIT_NOT_ALL_VALID

    def summary(self) -> str:
        """The state of the desk in one line of words."""
        total = len(self.logins)
        problems = [row for row in self.logins if not row.token.usable]
        words = f"{self.valid} of {total} logins have a valid token"
        if problems:
            words += ": " + ", ".join(f"{row.login} {_problem(row)}" for row in problems)
        if not self.instances:
            return words + "; no daemon is running (no live heartbeat in Redis)"
        leaders = [b for b in self.instances if b.owns_logins]
        leader = f"{len(leaders)} refreshing" if leaders else "no instance refreshing"
        budgets = "".join(f"; {_capacity_words(c)}" for c in self.capacities)
        return f"{words}; {len(self.instances)} instance(s) alive, {leader}{budgets}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "exit_code": self.exit_code,
            "logins": [asdict(row) for row in self.logins],
            "instances": [
                {**asdict(beat), "age_s": round(self.now - beat.at, 1)} for beat in self.instances
            ],
            "budgets": self.capacities,
            "feed": self.feed,
        }


def _capacity_words(capacity: dict[str, Any]) -> str:
    words = (
        f"renewals: needed {capacity.get('renew_needed')} per {capacity.get('window_s')} s, "
        f"address group {capacity.get('group')} may spend {capacity.get('renew_usable')} "
        f"(used {capacity.get('renew_used')})"
    )
    lead, floor = capacity.get("renew_lead_s"), capacity.get("renew_lead_floor_s")
    window = capacity.get("window_s")
    if isinstance(lead, int | float) and isinstance(window, int | float) and window > 0:
        words += f", renewing {tradovate_minutes(lead, window)} before expiry"
    if capacity.get("short"):
        words += f": SHORT, it keeps about {capacity.get('keeps_alive')} logins alive by renewal"
        if isinstance(floor, int | float) and isinstance(window, int | float) and window > 0:
            at_floor = capacity.get("keeps_alive_at_floor")
            words += f" ({at_floor} at the floor of {tradovate_minutes(floor, window)})"
        beyond = capacity.get("beyond")
        if isinstance(beyond, list) and beyond:
            words += f"; beyond it: {', '.join(map(str, beyond))}"
        words += "; add an instance on another /24 subnet"
    return words


def _problem(row: LoginRow) -> str:
    if row.last_error:
        return f"{row.token} ({row.last_error})"
    return str(row.token)


def status_report(
    client: redis.Redis, logins: Sequence[str], now: float | None = None
) -> StatusReport:
    now = time.time() if now is None else now
    names = list(logins)
    statuses = read_statuses(client, names)
    found = login_tokens(client, names, now, expiring_within_s=renewal_lead_s(client))
    instances = live_instances(client)
    owners = holders(client, names)
    beats = {beat.instance: beat for beat in instances}
    rows = []
    for name, status in zip(names, statuses, strict=True):
        recorded = status or LoginStatus(name)
        owner = owners[name]
        beat = beats.get(owner or "")
        rows.append(
            LoginRow(
                login=name,
                token=found[name][1],
                state=status.state if status else None,
                expires_at=recorded.expires_at,
                next_attempt_at=recorded.next_attempt_at,
                last_outcome=recorded.last_outcome,
                last_error=recorded.last_error,
                accounts=len(recorded.accounts),
                owner=owner,
                heartbeat_age_s=round(now - beat.at, 1) if beat else None,
                when_budget_short=recorded.when_budget_short,
                route=recorded.route,
                notes=recorded.notes,
            )
        )
    return StatusReport(rows, instances, now, read_capacities(client), read_feed_status(client))


def render_status(report: StatusReport) -> str:
    headers = (
        "LOGIN",
        "ROUTE",
        "TOKEN",
        "EXPIRES",
        "NEXT REFRESH",
        "LAST",
        "ACCOUNTS",
        "IF SHORT",
        "OWNER",
    )
    rows = [
        (
            row.login,
            row.route or "-",
            row.token.value,
            _when(row.expires_at, report.now),
            _when(row.next_attempt_at, report.now),
            _last(row),
            str(row.accounts),
            row.when_budget_short or "-",
            _owner(row),
        )
        for row in report.logins
    ]
    widths = [max(len(str(r[i])) for r in (headers, *rows)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line(headers)]
    for row, cells in zip(report.logins, rows, strict=True):
        lines.append(line(cells))
        if row.notes:  # under its row, in a word or two; `status --json` has each sentence
            lines.append("  └ " + "; ".join(note.words(said) for said in row.notes))
    feed = [feed_words(report.feed, report.now)] if report.feed else []
    return "\n".join([*lines, "", *_instance_lines(report), *feed, report.summary()])


def feed_words(feed: dict[str, Any], now: float) -> str:
    """The price feed in one line: where it runs and how old each symbol's latest quote is."""
    state = "live" if feed.get("connected") else "disconnected"
    if feed.get("stopped"):
        state = f"STOPPED ({feed['stopped']}; SIGHUP resumes it)"
    elif not feed.get("connected") and feed.get("error"):
        state += f" ({feed['error']})"
    ages = []
    symbols = feed.get("symbols")
    for symbol, seen in (symbols if isinstance(symbols, dict) else {}).items():
        stamp = seen.get("quote_ms") if isinstance(seen, dict) else None
        contract = seen.get("contract") if isinstance(seen, dict) else None
        name = symbol if contract in (None, symbol) else f"{symbol} ({contract})"
        age = (
            "no quote yet"
            if not isinstance(stamp, int | float)
            else f"{now - stamp / 1000:.1f} s old"
        )
        ages.append(f"{name} {age}")
    where = f" on {feed.get('instance')}" if feed.get("instance") else ""
    return f"price feed: {state}{where}, md token of {feed.get('login')}; " + ", ".join(ages)


def _instance_lines(report: StatusReport) -> list[str]:
    headers = ("INSTANCE", "ADDRESS", "GROUP", "BUDGET", "OWNS", "STATE")
    rows = [
        (
            beat.instance,
            beat.address or "default",
            beat.group,
            f"{beat.renew_usable}/h, keeps {beat.keeps_alive}",
            str(beat.owned),
            "standby" if beat.standby else f"protocol {beat.protocol}",
        )
        for beat in report.instances
    ]
    return [table(rows, headers), ""] if rows else []


def _when(text: str | None, now: float) -> str:
    if text is None:
        return "-"
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    minutes = (at.timestamp() - now) / 60
    clock = at.astimezone(UTC).strftime("%H:%M:%S")
    if minutes >= 1:
        return f"{clock} (in {minutes:.0f} min)"
    if minutes >= 0:
        return f"{clock} (in {minutes * 60:.0f} s)"
    return f"{clock} ({-minutes:.0f} min ago)"


def _last(row: LoginRow) -> str:
    if row.last_outcome is None:
        return "-"
    return f"{row.last_outcome}: {row.last_error}" if row.last_error else str(row.last_outcome)


def _owner(row: LoginRow) -> str:
    if row.owner is None:
        return "- (no lease)"
    if row.heartbeat_age_s is None:
        return f"{row.owner} (no heartbeat)"
    return f"{row.owner} ({row.heartbeat_age_s:.0f} s ago)"
