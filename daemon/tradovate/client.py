"""Tradovate's REST auth API: log in, renew, list accounts. Every answer becomes a grant or one
of the errors below; none of them carries a password, `sec` or token.

SPEC's facts: failures come as HTTP 200 with `errorText`; a `p-ticket` asks to wait `p-time`
seconds and resend the identical body plus the ticket; `p-captcha` cannot be answered; 429 means
back off an hour; each accesstokenrequest opens a session (a user keeps only two), renewal does not.
"""

from __future__ import annotations

import json as json_module
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx
import structlog

from daemon import __version__
from daemon.config import Login, TradovateSettings
from daemon.constants import ASSUMED_TOKEN_LIFETIME_S, TRADOVATE_CONNECT_TIMEOUT_S
from daemon.logs import fingerprint, scrub
from daemon.metrics import Metrics
from daemon.outcomes import Outcome
from daemon.token_format import (
    parse_expiration_time,
    token_expiry,
    token_problem,
)
from daemon.tradovate import tradingview
from daemon.tradovate.errors import (
    STATUS_ERRORS,
    UNCONFIRMED_STATUSES,
    AccountsDenied,
    CaptchaRequired,
    CredentialsRejected,
    InvalidResponse,
    PenaltyTicket,
    Stopped,
    TokenRefused,
    TradovateUnavailable,
    error_text,
    penalty_wait,
    user_status_error,
)

log = structlog.get_logger("daemon.tradovate")

LOGIN_ENDPOINT: Final = "/auth/accesstokenrequest"
RENEW_ENDPOINT: Final = "/auth/renewaccesstoken"
ACCOUNTS_ENDPOINT: Final = "/account/list"
_DEVICE_NAMESPACE: Final = uuid.UUID("5d3f4c1e-8f8a-4f39-9a51-0b6b0c2f7e11")
CLOCK_SKEW_TOLERANCE_S: Final = 60.0
HINT_MAX_CHARS: Final = 200
USER_AGENT: Final = f"orca-token-daemon/{__version__}"
MAX_ANSWER_BYTES: Final = 1_000_000  # Tradovate's auth answers are a few hundred bytes


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_at: float
    issued_at: float
    source: Outcome  # LOGIN, RENEW or ADOPTED
    md_access_token: str | None = None
    user_id: int | None = None
    # When the md token dies: its own JWT `exp`, else (opaque) the access token it came with.
    md_expires_at: float | None = None
    password_expires_at: float | None = None  # the answer's passwordExpirationTime
    hibp_hint: str | None = None  # e.g. EmailAndPasswordCompromised
    user_status: str | None = None  # the answer's userStatus, when it is not Active
    # False: Tradovate said nothing of its expiry (a TradingView login with neither `expiration`
    # nor a JWT `exp`). `expires_at` is then a guess to schedule by: renew at once to learn it,
    # and never write its keys with the guess.
    lifetime_known: bool = True
    lifetime_s: float = field(init=False)  # a field: read on every path, never a call

    def __post_init__(self) -> None:
        object.__setattr__(self, "lifetime_s", self.expires_at - self.issued_at)

    def __repr__(self) -> str:
        return (
            f"TokenGrant(token={fingerprint(self.access_token)}, source={self.source}, "
            f"expires_at={self.expires_at:.0f})"
        )


@dataclass(frozen=True)
class Account:
    id: int | None  # optional in Tradovate's schema: the name is what the keys are written under
    name: str
    active: bool


def device_id_for(login: str, configured: str | None) -> str:
    """TRADOVATE_DEVICE_ID when set, else a UUID5 of the login name alone: the same for every
    instance, restart, container and machine (Tradovate's live answers 401 when it changes)."""
    return configured or str(uuid.uuid5(_DEVICE_NAMESPACE, login))


class TradovateClient:
    """One HTTP client for every login; thread-safe like the httpx.Client beneath it."""

    def __init__(
        self,
        settings: TradovateSettings,
        *,
        metrics: Metrics | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self.clock_offset_s: float | None = None  # this clock minus Tradovate's, last seen
        # Set by a stop: no request starts after it (`stop_on`).
        self._stopping = threading.Event()
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(
                settings.timeout_s, connect=min(settings.timeout_s, TRADOVATE_CONNECT_TIMEOUT_S)
            ),
            # No browser impersonation: no Origin, Referer or Sec-Fetch-* headers, ever.
            headers={
                "Accept": "application/json",
                "User-Agent": f"orca-token-daemon/{__version__}",
            },
            # TRADOVATE_LOCAL_ADDRESS: the source address on hosts with several (Tradovate
            # counts its budgets per client address).
            transport=httpx.HTTPTransport(local_address=settings.local_address)
            if settings.local_address
            else None,
        )

    def close(self) -> None:
        self._http.close()

    def stop_on(self, stopping: threading.Event) -> None:
        """No request starts once `stopping` is set. One already sent is read to its end (or
        its deadline): a login's answer is a session Tradovate has opened, never thrown away."""
        self._stopping = stopping

    def login_body(self, login: Login, p_ticket: str | None = None) -> dict[str, Any]:
        if login.password is None or self._settings.sec is None:
            raise ValueError(f"login {login.name}: settings were read without credentials")
        body: dict[str, Any] = {
            "name": login.name,
            "password": login.password.reveal(),
            "appId": self._settings.app_id,
            "appVersion": self._settings.app_version,
            "cid": self._settings.cid,
            "sec": self._settings.sec.reveal(),
            "deviceId": device_id_for(login.name, self._settings.device_id),
        }
        if p_ticket is not None:
            body["p-ticket"] = p_ticket
        return body

    def login(self, login: Login, p_ticket: str | None = None) -> TokenGrant:
        """Opens a new Tradovate session, by the login's route: accesstokenrequest with the API
        key, or the TradingView route's /authorize. Use renew whenever possible."""
        if login.route == "tradingview":
            return self._authorize(login, p_ticket)
        data = self._call("POST", LOGIN_ENDPOINT, json=self.login_body(login, p_ticket))
        if not isinstance(data, dict):
            raise InvalidResponse(f"{LOGIN_ENDPOINT}: answer is not a JSON object")
        if data.get("p-captcha"):
            raise CaptchaRequired(f"{LOGIN_ENDPOINT}: Tradovate asks for a captcha")
        if data.get("p-ticket"):
            raise PenaltyTicket(str(data["p-ticket"]), penalty_wait(data))
        stopped = user_status_error(data, LOGIN_ENDPOINT)
        if stopped is not None:
            raise stopped
        if data.get("errorText"):
            raise CredentialsRejected(f"{LOGIN_ENDPOINT}: {error_text(data)}")
        grant = grant_from(
            data, LOGIN_ENDPOINT, source=Outcome.LOGIN, now=self._clock(), skew=self._skew
        )
        return keeping_md_token(grant, None)

    def _authorize(self, login: Login, p_ticket: str | None) -> TokenGrant:
        data = self._call(
            "POST",
            tradingview.AUTHORIZE_ENDPOINT,
            form=tradingview.authorize_form(login, p_ticket),
            params=tradingview.AUTHORIZE_QUERY,
            base_url=self._settings.tv_base_url,
        )
        now = self._clock()
        token, expires_at = tradingview.authorized(data, now)
        # Until a renewal brings an md token, the access token serves the market-data socket
        # (SPEC's Redis keys), as Tradovate's own market-data tutorial does.
        if expires_at is None:
            guess = now + ASSUMED_TOKEN_LIFETIME_S
            return TokenGrant(
                token, guess, now, Outcome.LOGIN, token, md_expires_at=guess, lifetime_known=False
            )
        return TokenGrant(
            token, expires_at, now, Outcome.LOGIN, md_access_token=token, md_expires_at=expires_at
        )

    def renew(self, access_token: str, *, held: TokenGrant | None = None) -> TokenGrant:
        """GET renewaccesstoken: a fresh token in the same session. An answer without
        `mdAccessToken` keeps `held`'s md token while it outlasts the new token
        (`keeping_md_token`)."""
        data = self._call("GET", RENEW_ENDPOINT, token=access_token)
        if not isinstance(data, dict):
            raise InvalidResponse(f"{RENEW_ENDPOINT}: answer is not a JSON object")
        if data.get("p-captcha"):
            raise CaptchaRequired(f"{RENEW_ENDPOINT}: Tradovate asks for a captcha")
        if data.get("p-ticket"):  # past the address's renewal budget
            raise PenaltyTicket(str(data["p-ticket"]), penalty_wait(data))
        if data.get("errorText"):
            raise TokenRefused(f"{RENEW_ENDPOINT}: {error_text(data)}")
        renewed = grant_from(
            data, RENEW_ENDPOINT, source=Outcome.RENEW, now=self._clock(), skew=self._skew
        )
        return keeping_md_token(renewed, held)

    def list_accounts(self, access_token: str) -> list[Account]:
        """The login's accounts that may trade: one that is not `active`, or is `closed` or
        `archived`, is left out (SPEC: it gets no token key)."""
        data = self._call("GET", ACCOUNTS_ENDPOINT, token=access_token)
        if isinstance(data, dict) and data.get("p-captcha"):
            raise CaptchaRequired(f"{ACCOUNTS_ENDPOINT}: Tradovate asks for a captcha")
        if isinstance(data, dict) and data.get("errorText"):
            raise AccountsDenied(f"{ACCOUNTS_ENDPOINT}: {error_text(data)}")
        if not isinstance(data, list):
            raise InvalidResponse(f"{ACCOUNTS_ENDPOINT}: answer is not a JSON list")
        accounts = []
        for item in data:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name:
                raise InvalidResponse(f"{ACCOUNTS_ENDPOINT}: an account lacks a name")
            assert isinstance(item, dict)
            account_id = item.get("id")
            usable = (
                item.get("active") is True and not item.get("closed") and not item.get("archived")
            )
            if usable:
                accounts.append(
                    Account(
                        id=account_id if type(account_id) is int else None, name=name, active=True
                    )
                )
        return accounts

    def get(self, endpoint: str, access_token: str, params: dict[str, str]) -> Any:
        """A GET of the REST API with a held token, bounded like every call; a 404 is None
        (a lookup that found nothing)."""
        return self._call("GET", endpoint, params=params, token=access_token, absent_ok=True)

    def _call(
        self,
        method: str,
        endpoint: str,
        *,
        json: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
        base_url: str | None = None,
        absent_ok: bool = False,
    ) -> Any:
        """One request, bounded as a whole: ORCA_TRADOVATE_TIMEOUT for all of it (not only per
        read, which a server dripping a byte at a time never trips), and MAX_ANSWER_BYTES for
        the body, refused while it streams in."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        deadline = time.monotonic() + self._settings.timeout_s
        if self._stopping.is_set():
            raise Stopped(f"{endpoint}: not sent, stopping")
        try:
            with self._http.stream(
                method,
                (base_url or self._settings.base_url) + endpoint,
                json=json,
                data=form,
                params=params,
                headers=headers,
            ) as response:
                body = self._read_bounded(response, endpoint, deadline)
        except httpx.TimeoutException as exc:
            self._count(endpoint, "timeout")
            raise TradovateUnavailable(f"{endpoint}: timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            self._count(endpoint, "error")
            raise TradovateUnavailable(f"{endpoint}: {type(exc).__name__}") from None
        status = response.status_code
        self._count(endpoint, str(status))
        self._note_clock(response)
        if status == 404 and absent_ok:
            return None
        if status in STATUS_ERRORS:
            kind, meaning = STATUS_ERRORS[status]
            raise kind(f"{endpoint}: HTTP {status} ({meaning})")
        if status in (401, 403):
            if endpoint in (LOGIN_ENDPOINT, tradingview.AUTHORIZE_ENDPOINT):
                raise CredentialsRejected(f"{endpoint}: HTTP {status}")
            if endpoint == ACCOUNTS_ENDPOINT:
                raise AccountsDenied(f"{endpoint}: HTTP {status}")
            raise TokenRefused(f"{endpoint}: HTTP {status}")
        if status != 200:
            raise TradovateUnavailable(f"{endpoint}: HTTP {status}")
        try:
            return json_module.loads(body)
        except (ValueError, RecursionError):
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            raise InvalidResponse(f"{endpoint}: answer is not JSON ({kind})") from None

    def _read_bounded(self, response: httpx.Response, endpoint: str, deadline: float) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            self._count(endpoint, "too_large")
            raise InvalidResponse(f"{endpoint}: answer larger than {MAX_ANSWER_BYTES} bytes")
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                self._count(endpoint, "too_large")
                raise InvalidResponse(f"{endpoint}: answer larger than {MAX_ANSWER_BYTES} bytes")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("the whole answer took too long", request=response.request)
        return bytes(body)

    def _note_clock(self, response: httpx.Response) -> None:
        """How far this clock is from Tradovate's (its Date header), for naming clock skew."""
        date = response.headers.get("date")
        if not date:
            return
        try:
            self.clock_offset_s = self._clock() - parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, OverflowError):
            return

    def _skew(self) -> str:
        offset = self.clock_offset_s
        if offset is None or abs(offset) <= CLOCK_SKEW_TOLERANCE_S:
            return ""
        return f" (clock skew: this clock is {offset:+.0f} s off Tradovate's Date)"

    def _count(self, endpoint: str, status: str) -> None:
        if self._metrics is not None:
            self._metrics.tradovate_requests.labels(endpoint=endpoint, status=status).inc()


def grant_from(
    data: dict[str, Any], endpoint: str, *, source: Outcome, now: float, skew: Callable[[], str]
) -> TokenGrant:
    """The grant a login or renewal answer carries, checked: a usable token that has not
    expired (`skew()` names the clock's offset from Tradovate's when it has)."""
    access_token = data.get("accessToken")
    problem = token_problem(access_token)
    if problem is not None or not isinstance(access_token, str):
        raise InvalidResponse(f"{endpoint}: unusable accessToken ({problem})")
    expires_at = token_expiry(access_token, data.get("expirationTime"))
    if expires_at is None:
        raise InvalidResponse(f"{endpoint}: no usable expirationTime for the token")
    if expires_at <= now:
        raise InvalidResponse(f"{endpoint}: the token has already expired{skew()}")
    md_token = data.get("mdAccessToken")
    md_problem = token_problem(md_token) if md_token is not None else None
    if md_problem is not None:
        log.warning("token.md_token_unusable", endpoint=endpoint, problem=md_problem)
    usable_md = md_token if isinstance(md_token, str) and not md_problem else None
    user_id = data.get("userId")
    user_status = data.get("userStatus")
    hibp = data.get("hibpHint")
    return TokenGrant(
        access_token=access_token,
        expires_at=expires_at,
        issued_at=now,
        source=source,
        md_access_token=usable_md,
        md_expires_at=None if usable_md is None else token_expiry(usable_md) or expires_at,
        user_id=user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None,
        password_expires_at=parse_expiration_time(data.get("passwordExpirationTime")),
        hibp_hint=scrub(hibp)[:HINT_MAX_CHARS] if isinstance(hibp, str) else None,
        user_status=user_status if user_status in UNCONFIRMED_STATUSES else None,
    )


def keeping_md_token(grant: TokenGrant, held: TokenGrant | None) -> TokenGrant:
    """A grant without `mdAccessToken`: the md token `held` serves on while its own expiry
    outlasts the new access token (so `mdtoken:*` never goes missing before the next renewal);
    else the access token itself, as Tradovate's market-data tutorial does."""
    if grant.md_access_token is not None:
        return grant
    md, md_expires_at = grant.access_token, grant.expires_at
    if held is not None and held.md_access_token not in (None, held.access_token):
        held_until = held.md_expires_at or held.expires_at
        if held_until >= grant.expires_at:
            md, md_expires_at = held.md_access_token, held_until
    return replace(grant, md_access_token=md, md_expires_at=md_expires_at)
