"""The simulator itself: users and their sessions (two at most: a third login closes the oldest),
the three endpoints, the per-address budgets on the tokens' time-scale, injected faults, and what
it saw (`Observations`) for the tests to judge."""

from __future__ import annotations

import collections
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from daemon.sim.tradovate import answers, tradingview
from daemon.sim.tradovate.desks import FakeUser, reference_desk
from daemon.sim.tradovate.faults import FAULT_KINDS, Fault, fault_answer
from daemon.sim.tradovate.http import QuietHTTPServer, handler_class
from daemon.sim.tradovate.rules import (
    ACCOUNTS_PATH,
    AUTHORIZE_PATH,
    BUDGET_WINDOW_S,
    DEMO_SEC,
    LOGIN_FAILURE_BUDGET,
    LOGIN_PATH,
    PENALTY_S,
    REAL_TOKEN_LIFETIME_S,
    RENEW_BUDGET,
    RENEW_PATH,
    TV_ACCOUNTS_PATH,
)
from daemon.sim.tradovate.tokens import TokenMint


@dataclass
class _Session:
    id: int
    user: str
    opened_at: float
    open: bool = True


@dataclass
class Observations:
    received: int = 0  # requests that arrived, answered or not yet
    sessions_opened: collections.Counter[str] = field(default_factory=collections.Counter)
    renewals: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: list[tuple[str, int]] = field(default_factory=list)
    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (time.monotonic(), path)
    login_bodies: list[dict[str, Any]] = field(default_factory=list)
    penalties: collections.Counter[str] = field(default_factory=collections.Counter)  # by path
    renewal_times: list[float] = field(default_factory=list)  # the simulator's clock
    failed_login_times: list[float] = field(default_factory=list)
    authorizations: collections.Counter[str] = field(default_factory=collections.Counter)
    authorize_headers: list[dict[str, str]] = field(default_factory=list)  # as sent
    device_ids: collections.Counter[tuple[str, str]] = field(  # (name, deviceId) of each login
        default_factory=collections.Counter
    )


class FakeTradovate:
    def __init__(
        self,
        users: Iterable[FakeUser] | None = None,
        *,
        sec: str = DEMO_SEC,
        token_lifetime_s: float = 4_800.0,
        max_sessions: int = 2,
        latency_s: float = 0.0,
        auth_limit_per_minute: int | None = None,
        opaque_tokens: bool = False,
        address_budgets: bool = True,
        tv_expiration: bool = True,
        renew_md_tokens: bool = False,
        budget_window_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users = {u.name: u for u in (users if users is not None else reference_desk())}
        for number, user in enumerate(self.users.values(), start=1):
            user.user_id = user.user_id or 1000 + number
        self.sec = sec
        self.token_lifetime_s = token_lifetime_s
        self.max_sessions = max_sessions
        self.latency_s = latency_s
        self.auth_limit_per_minute = auth_limit_per_minute
        self.opaque_tokens = opaque_tokens  # random strings, not JWTs: Tradovate promises no format
        # Tradovate's per-address budgets (renewals 15, failed logins 5 per rolling hour, a 15 s
        # penalty ticket past them), on the same time-scale as the tokens' life.
        self.address_budgets = address_budgets
        self.tv_expiration = tv_expiration  # False: /authorize says nothing of the lifetime
        # The published renewal schema has no mdAccessToken: renewals carry one only if asked.
        self.renew_md_tokens = renew_md_tokens
        self._budget_window_s = budget_window_s  # None: Tradovate's hour on the tokens' scale
        # Spends per /24 of the client address: 127.0.0.x is one budget, 127.0.1.1 another.
        self._renewals: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._failed_logins: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self.clock = clock
        self.seen = Observations()
        self._mint = TokenMint(lambda: self.clock(), opaque=opaque_tokens)
        self._sessions: dict[int, _Session] = {}
        self._session_ids = itertools.count(1)
        self._faults: dict[str, collections.deque[Fault]] = collections.defaultdict(
            collections.deque
        )
        self._auth_times: collections.deque[float] = collections.deque()
        self._tickets: dict[str, dict[str, Any]] = {}
        self.penalty_resends_ok = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def tv_base_url(self) -> str:
        """The TradingView route's base: the same host, without /v1."""
        return self.base_url.removesuffix("/v1")

    @property
    def base_url(self) -> str:
        if self._server is None:
            return "https://fake.tradovate.invalid/v1"  # answered through respx, never a socket
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeTradovate:
        """Serve over HTTP on a free loopback port."""
        self._server = QuietHTTPServer(("127.0.0.1", 0), handler_class(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeTradovate:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control and observation ---------------------------------------------------------------

    def inject(
        self,
        path: str,
        kind: str,
        *,
        count: int = 1,
        user: str | None = None,
        p_time_s: float = 1.0,
        hang_s: float = 30.0,
    ) -> None:
        """The next `count` requests to `path` (of `user` only, when given) get `kind`."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._faults[path].append(Fault(kind, count, p_time_s, hang_s, user))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def open_sessions(self, user: str) -> int:
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.user == user and s.open)

    def close_sessions(self, user: str) -> int:
        """End every open session of `user`, as a third login elsewhere or a password change
        does: its tokens are refused from now on. Returns how many were closed."""
        with self._lock:
            closing = [s for s in self._sessions.values() if s.user == user and s.open]
            for session in closing:
                session.open = False
            return len(closing)

    def user_of(self, token: str) -> str | None:
        """Whose token this is (None for anything this simulator did not issue)."""
        claims = self._verify(token)
        return str(claims["sub"]) if claims is not None else None

    def expiry_of(self, token: str) -> float | None:
        """When a token this simulator issued dies (None for anything else)."""
        claims = self._verify(token)
        return float(claims["exp"]) if claims is not None else None

    def is_live(self, token: str) -> bool:
        """Would Tradovate accept this token now: genuine, unexpired, its session still open."""
        claims = self._verify(token)
        return claims is not None and self._live_session(claims) is not None

    # -- tokens ----------------------------------------------------------------------------------

    def _issue(self, session: _Session, purpose: str) -> tuple[str, float]:
        return self._mint.issue(session.user, session.id, purpose, self.token_lifetime_s)

    def _verify(self, token: str) -> dict[str, Any] | None:
        return self._mint.verify(token)

    def _live_session(self, claims: dict[str, Any]) -> _Session | None:
        session = self._sessions.get(claims.get("sid", -1))
        return session if session is not None and session.open else None

    def _grant(self, session: _Session, *, with_md: bool = True) -> dict[str, Any]:
        token, expires_at = self._issue(session, "access")
        md_token = self._issue(session, "md")[0] if with_md else None
        return answers.access_token_response(self.users[session.user], token, expires_at, md_token)

    # -- endpoints -------------------------------------------------------------------------------

    def _login(self, body: dict[str, Any], address: str) -> tuple[int, Any]:
        return self._sign_in(
            body,
            address,
            name=str(body.get("name")),
            key_ok=body.get("sec") == self.sec,
            failure=lambda text: answers.login_failure(self.users.get(str(body.get("name"))), text),
            success=self._grant,
        )

    def _authorize(self, form: dict[str, Any], address: str) -> tuple[int, Any]:
        """The TradingView route: name and password only, answered `{"s": ...}`."""
        self.seen.authorizations[str(form.get("login"))] += 1
        return self._sign_in(
            form,
            address,
            name=str(form.get("login")),
            key_ok=True,
            failure=tradingview.refused,
            success=lambda session: tradingview.authorized(
                *self._issue(session, "access"), with_expiration=self.tv_expiration
            ),
        )

    def _sign_in(
        self,
        body: dict[str, Any],
        address: str,
        *,
        name: str,
        key_ok: bool,
        failure: Callable[[str], dict[str, Any]],
        success: Callable[[_Session], dict[str, Any]],
    ) -> tuple[int, Any]:
        """Either route's login: pacing, penalty tickets, the failed-login budget, sessions."""
        now = self.clock()
        if self.auth_limit_per_minute is not None:
            while self._auth_times and self._auth_times[0] <= now - 60:
                self._auth_times.popleft()
            if len(self._auth_times) >= self.auth_limit_per_minute:
                return 429, {"errorText": "Too many requests"}
            self._auth_times.append(now)
        ticket = body.get("p-ticket")
        if ticket is not None:
            original = self._tickets.pop(str(ticket), None)
            resent = {k: v for k, v in body.items() if k != "p-ticket"}
            if original is None or resent != original["body"] or now < original["due"]:
                return 200, failure("Invalid or early p-ticket")
            self.penalty_resends_ok += 1
        if ticket is None:
            penalty = self._over_budget(
                self._failed_logins[answers.subnet(address)], LOGIN_FAILURE_BUDGET, LOGIN_PATH
            )
            if penalty is not None:
                self._tickets[penalty["p-ticket"]] = {"body": body, "due": now + penalty["p-time"]}
                return 200, penalty
        user = self.users.get(name)
        right = user is not None and body.get("password") == user.password and key_ok
        stopped = answers.STOPPING_STATUSES.get(user.status) if right and user else None
        if user is None or not right or stopped is not None:
            self._failed_logins[answers.subnet(address)].append(now)  # only failures count
            self.seen.failed_login_times.append(now)
            if stopped is not None:
                return 200, failure(stopped)
            return 200, failure(
                "Incorrect username or password. "
                "Please try again, noting that passwords are case-sensitive."
            )
        session = _Session(next(self._session_ids), user.name, now)
        self._sessions[session.id] = session
        self.seen.sessions_opened[user.name] += 1
        open_sessions = sorted(
            (s for s in self._sessions.values() if s.user == user.name and s.open),
            key=lambda s: s.opened_at,
        )
        for oldest in open_sessions[: max(0, len(open_sessions) - self.max_sessions)]:
            oldest.open = False  # Tradovate logs the trader out of their own platform here
        return 200, success(session)

    @property
    def time_scale(self) -> float:
        """This simulation's time against Tradovate's: tokens live 80 minutes there."""
        return min(1.0, self.token_lifetime_s / REAL_TOKEN_LIFETIME_S)

    @property
    def budget_window_s(self) -> float:
        return self._budget_window_s or BUDGET_WINDOW_S * self.time_scale

    def _over_budget(self, spent: collections.deque[float], limit: int, path: str) -> Any:
        """A penalty ticket when `spent` already holds `limit` in the rolling window."""
        now = self.clock()
        while spent and spent[0] <= now - self.budget_window_s:
            spent.popleft()
        if not self.address_budgets or len(spent) < limit:
            return None
        self.seen.penalties[path] += 1
        return {"p-ticket": secrets.token_hex(8), "p-time": PENALTY_S * self.time_scale}

    def _renew(self, token: str, address: str) -> tuple[int, Any]:
        spent = self._renewals[answers.subnet(address)]
        penalty = self._over_budget(spent, RENEW_BUDGET, RENEW_PATH)
        spent.append(self.clock())  # every request counts, answered or not
        if penalty is not None:
            return 200, penalty
        claims = self._verify(token)
        session = self._live_session(claims) if claims else None
        if claims is None or session is None:
            return 401, {"errorText": "Access is denied"}
        self.seen.renewals[session.user] += 1
        self.seen.renewal_times.append(self.clock())
        return 200, self._grant(session, with_md=self.renew_md_tokens)

    def _accounts(self, token: str) -> tuple[int, Any]:
        claims = self._verify(token)
        session = self._live_session(claims) if claims else None
        if claims is None or session is None:
            return 401, {"errorText": "Access is denied"}
        user = self.users[session.user]
        if user.accounts_denied:  # live: a key whose scope denies accounts, a changed device
            return 401, {"errorText": "Access is denied"}
        return 200, answers.account_items(user)

    def _take_fault(self, path: str, user: str | None) -> Fault | None:
        queue = self._faults.get(path)
        fault = next((f for f in queue or () if f.user in (None, user)), None)
        if queue is None or fault is None:
            return None
        fault.count -= 1
        if fault.count <= 0:
            queue.remove(fault)
        return fault

    def answer(
        self, method: str, path: str, body: Any, token: str | None, address: str = "127.0.0.1"
    ) -> tuple[int, Any]:
        """Tradovate's answer to a client at `address`: (status, JSON value | bytes of HTML |
        Hang | Reset)."""
        path = path.split("?", 1)[0]  # the TradingView route asks with ?locale=en
        with self._lock:
            return self._record(path, self._answer(method, path, body, token, address))

    def _answer(
        self, method: str, path: str, body: Any, token: str | None, address: str
    ) -> tuple[int, Any]:
        if path == LOGIN_PATH and isinstance(body, dict):
            self.seen.login_bodies.append(body)
            self.seen.device_ids[(str(body.get("name")), str(body.get("deviceId")))] += 1
            user: str | None = str(body.get("name"))
        elif path == AUTHORIZE_PATH and isinstance(body, dict):
            user = str(body.get("login"))
        else:
            claims = self._verify(token) if token else None
            user = str(claims.get("sub")) if claims else None
        fault = self._take_fault(path, user)
        if fault is not None and fault.kind == "penalty":
            ticket = secrets.token_hex(8)
            resend = body if isinstance(body, dict) else {}
            self._tickets[ticket] = {"body": resend, "due": self.clock() + fault.p_time_s}
            self.seen.penalties[path] += 1
            return 200, {"p-ticket": ticket, "p-time": fault.p_time_s}
        if fault is not None:
            return fault_answer(fault)
        if method == "POST" and path == LOGIN_PATH and isinstance(body, dict):
            return self._login(body, address)
        if method == "POST" and path == AUTHORIZE_PATH and isinstance(body, dict):
            return self._authorize(body, address)
        if method == "GET" and path == RENEW_PATH:
            return self._renew(token or "", address)
        if method == "GET" and path == ACCOUNTS_PATH:
            return self._accounts(token or "")
        if method == "GET" and path == TV_ACCOUNTS_PATH:
            return tradingview.tv_accounts(*self._accounts(token or ""))
        return 404, {"errorText": f"no route {method} {path}"}

    def _record(self, path: str, answer: tuple[int, Any]) -> tuple[int, Any]:
        self.seen.requests.append((path, answer[0]))
        return answer
