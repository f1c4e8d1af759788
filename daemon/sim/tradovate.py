"""A small simulated Tradovate on 127.0.0.1, for the demo, end-to-end tests, chaos runs and
benchmarks. It keeps Tradovate's rules that matter to the daemon: a login opens a session and a
user keeps only two (a third closes the oldest, killing its tokens); renewal stays in the session;
tokens carry a real `exp`; faults of every kind can be injected per endpoint.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import itertools
import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

LOGIN_PATH = "/v1/auth/accesstokenrequest"
RENEW_PATH = "/v1/auth/renewaccesstoken"
ACCOUNTS_PATH = "/v1/account/list"

# Faults a retry recovers from with the same session: the daemon must ride them out.
RECOVERABLE_FAULTS = (
    "http_500",
    "http_503",
    "html",
    "not_json",
    "no_token",
    "empty_token",
    "malformed_token",
    "expired_token",
    "reset",
    "hang",
)
# Every kind of answer a fault can replace a real one with.
FAULT_KINDS = (*RECOVERABLE_FAULTS, "http_429", "http_401", "error_text", "penalty", "captcha")

DEMO_SEC = "demo-sec"
REAL_TOKEN_LIFETIME_S = 4_800.0
BUDGET_WINDOW_S = 3_600.0
PENALTY_S = 15.0
RENEW_BUDGET = 15
LOGIN_FAILURE_BUDGET = 5
REFERENCE_DESK = {"APEX_266668": 4, "APEX_272045": 5, "APEX_136189": 3, "APEX_265995": 1}


class QuietHTTPServer(ThreadingHTTPServer):
    """A client hanging up (a daemon killed, a refused oversized answer) is no error here."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class FakeUser:
    name: str
    password: str
    accounts: list[str]
    user_id: int = 0


def reference_desk(password_prefix: str = "demo-") -> list[FakeUser]:
    """The reference's four APEX logins and their 13 accounts (PAAPEX2666680000001, ...)."""
    return [
        FakeUser(
            name=login,
            password=f"{password_prefix}{login}",
            accounts=[f"PA{login.replace('_', '')}{n:07d}" for n in range(1, count + 1)],
        )
        for login, count in REFERENCE_DESK.items()
    ]


@dataclass
class _Session:
    id: int
    user: str
    opened_at: float
    open: bool = True


@dataclass
class Fault:
    kind: str
    count: int = 1
    p_time_s: float = 1.0  # penalty
    hang_s: float = 30.0  # hang
    user: str | None = None  # only requests of this login; None: anyone's


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
        # Spends per client address: instances bound to 127.0.0.x each have budgets of their own.
        self._renewals: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._failed_logins: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self.clock = clock
        self.seen = Observations()
        self._opaque: dict[str, dict[str, Any]] = {}
        self._key = secrets.token_bytes(32)
        self._sessions: dict[int, _Session] = {}
        self._session_ids = itertools.count(1)
        self._token_ids = itertools.count(1)
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
    def base_url(self) -> str:
        if self._server is None:
            return "https://fake.tradovate.invalid/v1"  # answered through respx, never a socket
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeTradovate:
        """Serve over HTTP on a free loopback port."""
        self._server = QuietHTTPServer(("127.0.0.1", 0), self._handler_class())
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
        now = self.clock()
        expires_at = now + self.token_lifetime_s
        claims = {
            "sub": session.user,
            "sid": session.id,
            "jti": next(self._token_ids),
            "use": purpose,
            "iat": int(now),
            "exp": int(expires_at),
        }
        if self.opaque_tokens:
            token = secrets.token_urlsafe(48)
            self._opaque[token] = claims
            return token, float(int(expires_at))
        header = _b64({"alg": "HS256", "typ": "JWT"})
        payload = _b64(claims)
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
        return token, float(int(expires_at))

    def _verify(self, token: str) -> dict[str, Any] | None:
        if self.opaque_tokens:
            found = self._opaque.get(token)
            return found if found is not None and found["exp"] > self.clock() else None
        try:
            header, payload, signature = token.split(".")
            expected = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            if not hmac.compare_digest(expected, given):
                return None
            claims: dict[str, Any] = json.loads(
                base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            )
        except ValueError:
            return None
        return claims if claims.get("exp", 0) > self.clock() else None

    def _live_session(self, claims: dict[str, Any]) -> _Session | None:
        session = self._sessions.get(claims.get("sid", -1))
        return session if session is not None and session.open else None

    def _grant(self, session: _Session) -> dict[str, Any]:
        token, expires_at = self._issue(session, "access")
        md_token, _ = self._issue(session, "md")
        user = self.users[session.user]
        return {
            "accessToken": token,
            "mdAccessToken": md_token,
            "expirationTime": datetime.fromtimestamp(expires_at, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "userId": user.user_id,
            "userStatus": "Active",
            "name": user.name,
            "hasLive": False,
        }

    # -- endpoints -------------------------------------------------------------------------------

    def _login(self, body: dict[str, Any], address: str) -> tuple[int, Any]:
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
                return 200, {"errorText": "Invalid or early p-ticket"}
            self.penalty_resends_ok += 1
        if ticket is None:
            penalty = self._over_budget(
                self._failed_logins[address], LOGIN_FAILURE_BUDGET, LOGIN_PATH
            )
            if penalty is not None:
                self._tickets[penalty["p-ticket"]] = {"body": body, "due": now + penalty["p-time"]}
                return 200, penalty
        user = self.users.get(str(body.get("name")))
        if user is None or body.get("password") != user.password or body.get("sec") != self.sec:
            self._failed_logins[address].append(now)  # only failed requests count
            self.seen.failed_login_times.append(now)
            return 200, {
                "errorText": "Incorrect username or password. "
                "Please try again, noting that passwords are case-sensitive."
            }
        session = _Session(next(self._session_ids), user.name, now)
        self._sessions[session.id] = session
        self.seen.sessions_opened[user.name] += 1
        open_sessions = sorted(
            (s for s in self._sessions.values() if s.user == user.name and s.open),
            key=lambda s: s.opened_at,
        )
        for oldest in open_sessions[: max(0, len(open_sessions) - self.max_sessions)]:
            oldest.open = False  # Tradovate logs the trader out of their own platform here
        return 200, self._grant(session)

    @property
    def time_scale(self) -> float:
        """This simulation's time against Tradovate's: tokens live 80 minutes there."""
        return min(1.0, self.token_lifetime_s / REAL_TOKEN_LIFETIME_S)

    @property
    def budget_window_s(self) -> float:
        return BUDGET_WINDOW_S * self.time_scale

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
        penalty = self._over_budget(self._renewals[address], RENEW_BUDGET, RENEW_PATH)
        self._renewals[address].append(self.clock())  # every request counts, answered or not
        if penalty is not None:
            return 200, penalty
        claims = self._verify(token)
        session = self._live_session(claims) if claims else None
        if claims is None or session is None:
            return 401, {"errorText": "Access is denied"}
        self.seen.renewals[session.user] += 1
        self.seen.renewal_times.append(self.clock())
        return 200, self._grant(session)

    def _accounts(self, token: str) -> tuple[int, Any]:
        claims = self._verify(token)
        session = self._live_session(claims) if claims else None
        if claims is None or session is None:
            return 401, {"errorText": "Access is denied"}
        user = self.users[session.user]
        return 200, [
            {"id": user.user_id * 100 + n, "name": name, "userId": user.user_id, "active": True}
            for n, name in enumerate(user.accounts, start=1)
        ]

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
        with self._lock:
            return self._record(path, self._answer(method, path, body, token, address))

    def _answer(
        self, method: str, path: str, body: Any, token: str | None, address: str
    ) -> tuple[int, Any]:
        if path == LOGIN_PATH and isinstance(body, dict):
            self.seen.login_bodies.append(body)
            user: str | None = str(body.get("name"))
        else:
            claims = self._verify(token) if token else None
            user = str(claims.get("sub")) if claims else None
        fault = self._take_fault(path, user)
        if fault is not None and fault.kind == "penalty" and isinstance(body, dict):
            ticket = secrets.token_hex(8)
            self._tickets[ticket] = {"body": body, "due": self.clock() + fault.p_time_s}
            return 200, {"p-ticket": ticket, "p-time": fault.p_time_s}
        if fault is not None:
            return _fault_answer(fault)
        if method == "POST" and path == LOGIN_PATH and isinstance(body, dict):
            return self._login(body, address)
        if method == "GET" and path == RENEW_PATH:
            return self._renew(token or "", address)
        if method == "GET" and path == ACCOUNTS_PATH:
            return self._accounts(token or "")
        return 404, {"errorText": f"no route {method} {path}"}

    def _record(self, path: str, answer: tuple[int, Any]) -> tuple[int, Any]:
        self.seen.requests.append((path, answer[0]))
        return answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY every answer
            # waits out the client's 40 ms delayed ACK, which is not Tradovate's latency.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the daemon's own logs tell the story."""

            def _serve(self, method: str) -> None:
                with fake._lock:
                    fake.seen.received += 1
                    fake.seen.arrivals.append((time.monotonic(), self.path.split("?")[0]))
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
                status, answer = fake.answer(method, self.path, body, token, self.client_address[0])
                if isinstance(answer, Hang):
                    time.sleep(answer.seconds)
                    status, answer = 504, {"errorText": "late"}
                if isinstance(answer, Reset):
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if isinstance(answer, bytes):
                    payload, content_type = answer, "text/html"
                else:
                    payload, content_type = json.dumps(answer).encode(), "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up waiting: what it should do

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler


@dataclass(frozen=True)
class Hang:
    """Answer nothing for this long (a client times out first)."""

    seconds: float


class Reset:
    """Drop the connection without an answer."""


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _fault_answer(fault: Fault) -> tuple[int, Any]:
    expired_claims = _b64({"exp": 1_000_000_000})
    answers: dict[str, tuple[int, Any]] = {
        "http_500": (500, {"errorText": "Internal Server Error"}),
        "http_503": (503, b"<html><body>Service Unavailable</body></html>"),
        "http_429": (429, {"errorText": "Too Many Requests"}),
        "http_401": (401, {"errorText": "Access is denied"}),
        "html": (200, b"<html><body>Maintenance</body></html>"),
        "not_json": (200, b"{not json"),
        "no_token": (200, {"userStatus": "Active"}),
        "empty_token": (200, {"accessToken": "", "expirationTime": "2030-01-01T00:00:00Z"}),
        "malformed_token": (200, {"accessToken": "abc.def", "expirationTime": None}),
        "expired_token": (200, {"accessToken": f"eyJhbGciOiJub25lIn0.{expired_claims}.sig"}),
        "error_text": (200, {"errorText": "Incorrect username or password."}),
        "captcha": (200, {"p-ticket": "captcha-ticket", "p-time": 0, "p-captcha": True}),
        "reset": (0, Reset()),
        "hang": (0, Hang(fault.hang_s)),
    }
    return answers[fault.kind]


def numbered_desk(logins: int, accounts: int) -> list[FakeUser]:
    """LOGIN_0000.. with `accounts` accounts each, password pw-<n>: for benchmarks and trials."""
    return [
        FakeUser(f"LOGIN_{n:04d}", f"pw-{n}", [f"PA{n:04d}{a:02d}" for a in range(accounts)])
        for n in range(logins)
    ]


def main(argv: list[str] | None = None) -> None:
    """python -m daemon.sim.tradovate: serve a numbered desk on 127.0.0.1 until killed."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m daemon.sim.tradovate")
    parser.add_argument("--logins", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--lifetime", type=float, default=4_800.0, help="token seconds")
    parser.add_argument(
        "--no-budgets", action="store_true", help="no per-address budgets (throughput runs)"
    )
    args = parser.parse_args(argv)
    fake = FakeTradovate(
        numbered_desk(args.logins, args.accounts),
        latency_s=args.latency,
        token_lifetime_s=args.lifetime,
        address_budgets=not args.no_budgets,
    ).start()
    print(fake.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
