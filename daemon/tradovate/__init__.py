"""Tradovate's REST auth API: the client, what can go wrong, and the pacing of logins."""

from daemon.tradovate.client import (
    ACCOUNTS_ENDPOINT,
    LOGIN_ENDPOINT,
    RENEW_ENDPOINT,
    Account,
    TokenGrant,
    TradovateClient,
    device_id_for,
)
from daemon.tradovate.errors import (
    AccountsDenied,
    CaptchaRequired,
    CredentialsRejected,
    InvalidResponse,
    LockoutWarning,
    PenaltyTicket,
    RateLimited,
    Stopped,
    TokenRefused,
    TradovateError,
    TradovateUnavailable,
)
from daemon.tradovate.pacing import AuthPacer

__all__ = [
    "ACCOUNTS_ENDPOINT",
    "LOGIN_ENDPOINT",
    "RENEW_ENDPOINT",
    "Account",
    "AccountsDenied",
    "AuthPacer",
    "CaptchaRequired",
    "CredentialsRejected",
    "InvalidResponse",
    "LockoutWarning",
    "PenaltyTicket",
    "RateLimited",
    "Stopped",
    "TokenGrant",
    "TokenRefused",
    "TradovateClient",
    "TradovateError",
    "TradovateUnavailable",
    "device_id_for",
]
