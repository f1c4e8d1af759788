"""The simulator itself: its users, the endpoints it answers (routed here, the logins in `signin`,
the sessions in `sessions`, the per-address budgets on the tokens' time-scale in `limits`),
injected faults, and what it saw (`Observations`) for the tests to judge."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from daemon.sim.tradovate import answers, tradingview
from daemon.sim.tradovate.desks import FakeUser, reference_desk
from daemon.sim.tradovate.faults import Fault, FaultQueue, fault_answer
from daemon.sim.tradovate.http import QuietHTTPServer, handler_class
from daemon.sim.tradovate.limits import AddressLimits
from daemon.sim.tradovate.market import CONTRACT_PATHS, MarketData
from daemon.sim.tradovate.observations import Observations
from daemon.sim.tradovate.rules import (
    ACCOUNTS_PATH,
    AUTHORIZE_PATH,
    BUDGET_WINDOW_S,
    DEMO_SEC,
    LOGIN_PATH,
    PENALTY_S,
    REAL_TOKEN_LIFETIME_S,
    RENEW_PATH,
    TV_ACCOUNTS_PATH,
)
from daemon.sim.tradovate.sessions import Session, Sessions
from daemon.sim.tradovate.signin import SignIns
from daemon.sim.tradovate.tokens import TokenMint


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
        self.latency_s = latency_s
        self.opaque_tokens = opaque_tokens  # random strings, not JWTs: Tradovate promises no format
        self.tv_expiration = tv_expiration  # False: /authorize says nothing of the lifetime
        # The published renewal schema has no mdAccessToken: renewals carry one only if asked.
        self.renew_md_tokens = renew_md_tokens
        self._budget_window_s = budget_window_s  # None: Tradovate's hour on the tokens' scale
        # Tradovate's per-address budgets (renewals 15, failed logins 5 per rolling hour, a 15 s
        # penalty ticket past them), on the same time-scale as the tokens' life, per /24 of the
        # client address: 127.0.0.x is one budget, 127.0.1.1 another.
        self.limits = AddressLimits(
            window_s=lambda: self.budget_window_s,
            penalty_s=lambda: PENALTY_S * self.time_scale,
            budgets=address_budgets,
            auth_per_minute=auth_limit_per_minute,
        )
        self.clock = clock
        self.seen = Observations()
        self._sessions = Sessions(
            TokenMint(lambda: self.clock(), opaque=opaque_tokens), max_sessions
        )
        self._faults = FaultQueue()
        self._sign_ins = SignIns(self.users, self.limits, self._sessions, self.seen)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        # The market-data socket, served beside the HTTP server; a live token authorizes it.
        self.market = MarketData(
            lambda t: self.user_of(t) if self.is_live(t) else None, clock=clock
        )

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
        self.market.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.market.stop()
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
        with self._lock:
            self._faults.add(path, Fault(kind, count, p_time_s, hang_s, user))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def open_sessions(self, user: str) -> int:
        with self._lock:
            return self._sessions.count_open(user)

    def close_sessions(self, user: str) -> int:
        """End every open session of `user`, as a third login elsewhere or a password change
        does: its tokens are refused from now on. Returns how many were closed."""
        with self._lock:
            return self._sessions.close_all(user)

    def user_of(self, token: str) -> str | None:
        """Whose token this is (None for anything this simulator did not issue)."""
        claims = self._sessions.claims(token)
        return str(claims["sub"]) if claims is not None else None

    def expiry_of(self, token: str) -> float | None:
        """When a token this simulator issued dies (None for anything else)."""
        claims = self._sessions.claims(token)
        return float(claims["exp"]) if claims is not None else None

    def is_live(self, token: str) -> bool:
        """Would Tradovate accept this token now: genuine, unexpired, its session still open."""
        return self._sessions.live(token) is not None

    # -- tokens ----------------------------------------------------------------------------------

    def _issue(self, session: Session, purpose: str) -> tuple[str, float]:
        return self._sessions.issue(session, purpose, self.token_lifetime_s)

    def _grant(self, session: Session, *, with_md: bool = True) -> dict[str, Any]:
        token, expires_at = self._issue(session, "access")
        md_token = self._issue(session, "md")[0] if with_md else None
        return answers.access_token_response(self.users[session.user], token, expires_at, md_token)

    # -- endpoints -------------------------------------------------------------------------------

    def _login(self, body: dict[str, Any], address: str) -> tuple[int, Any]:
        return self._sign_ins.answer(
            body,
            address,
            self.clock(),
            name=str(body.get("name")),
            key_ok=body.get("sec") == self.sec,
            failure=lambda text: answers.login_failure(self.users.get(str(body.get("name"))), text),
            success=self._grant,
        )

    def _authorize(self, form: dict[str, Any], address: str) -> tuple[int, Any]:
        """The TradingView route: name and password only, answered `{"s": ...}`."""
        self.seen.authorizations[str(form.get("login"))] += 1
        return self._sign_ins.answer(
            form,
            address,
            self.clock(),
            name=str(form.get("login")),
            key_ok=True,
            failure=tradingview.refused,
            success=lambda session: tradingview.authorized(
                *self._issue(session, "access"), with_expiration=self.tv_expiration
            ),
        )

    @property
    def time_scale(self) -> float:
        """This simulation's time against Tradovate's: tokens live 80 minutes there."""
        return min(1.0, self.token_lifetime_s / REAL_TOKEN_LIFETIME_S)

    @property
    def budget_window_s(self) -> float:
        return self._budget_window_s or BUDGET_WINDOW_S * self.time_scale

    def _renew(self, token: str, address: str) -> tuple[int, Any]:
        penalty = self.limits.renewal_penalty(address, self.clock())
        if penalty is not None:
            self.seen.penalties[RENEW_PATH] += 1
            return 200, penalty
        session = self._sessions.live(token)
        if session is None:
            return 401, {"errorText": "Access is denied"}
        self.seen.renewals[session.user] += 1
        self.seen.renewal_times.append(self.clock())
        return 200, self._grant(session, with_md=self.renew_md_tokens)

    def _accounts(self, token: str) -> tuple[int, Any]:
        session = self._sessions.live(token)
        if session is None:
            return 401, {"errorText": "Access is denied"}
        user = self.users[session.user]
        if user.accounts_denied:  # live: a key whose scope denies accounts, a changed device
            return 401, {"errorText": "Access is denied"}
        return 200, answers.account_items(user)

    def answer(
        self, method: str, path: str, body: Any, token: str | None, address: str = "127.0.0.1"
    ) -> tuple[int, Any]:
        """Tradovate's answer to a client at `address`: (status, JSON value | bytes of HTML |
        Hang | Reset)."""
        path, _, query = path.partition("?")  # the TradingView route asks with ?locale=en
        if path in CONTRACT_PATHS:  # the market's catalogue, for a live token
            answer = self.market.library_answer(path, dict(parse_qsl(query)), token or "")
            return self._record(path, answer)
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
            claims = self._sessions.claims(token) if token else None
            user = str(claims.get("sub")) if claims else None
        fault = self._faults.take(path, user)
        if fault is not None and fault.kind == "penalty":
            resend = body if isinstance(body, dict) else {}
            self.seen.penalties[path] += 1
            return 200, self.limits.ticket(resend, fault.p_time_s, self.clock())
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
