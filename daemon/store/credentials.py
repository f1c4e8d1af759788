"""Redis credentials read from their file at every new connection. Azure gives a cache two access
keys; the usual rotation moves clients to the secondary, then regenerates the primary. With the
key in `REDIS_PASSWORD_FILE` (or `REDIS_URL_FILE`), rewriting the file is all a rotation needs:
redis-py asks a `CredentialProvider` at every connection it opens, so the next connection (a
reconnect after AUTH failed, or after SIGHUP dropped the idle ones) uses the new key. A
Microsoft Entra ID token provider (`redis-entraid`) plugs into the same seam."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import structlog
from redis.credentials import CredentialProvider

from daemon.config import RedisSettings

log = structlog.get_logger("daemon.redis")


class FileCredentials(CredentialProvider):
    """The password (and user) in a file, read at every call; the last good ones while the
    file cannot be read (a rotation rewriting it), said once, naming the file, never the value."""

    def __init__(self, path: str, *, username: str | None, url: bool) -> None:
        self.path = path
        self._username = username
        self._url = url
        self._last: tuple[str | None, str] | None = None
        self._said_unreadable = False
        self._lock = threading.Lock()

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        username, password = self._read()
        return (password,) if username is None else (username, password)

    def _read(self) -> tuple[str | None, str]:
        with self._lock:
            try:
                text = Path(self.path).read_text(encoding="utf-8").strip()
                found = self._parse(text)
            except (OSError, ValueError) as error:
                if self._last is None:
                    raise ValueError(f"cannot read Redis credentials from {self.path}") from None
                if not self._said_unreadable:
                    self._said_unreadable = True
                    log.warning(
                        "redis.credentials_unreadable",
                        file=self.path,
                        error=type(error).__name__,
                        hint="the last password read is used until the file can be read",
                    )
                return self._last
            self._said_unreadable = False
            self._last = found
            return found

    def _parse(self, text: str) -> tuple[str | None, str]:
        if not text:
            raise ValueError("empty")
        if not self._url:
            return self._username, text
        parts = urlsplit(text)
        if parts.password is None:
            raise ValueError("no password in the URL")
        return (unquote(parts.username) if parts.username else None), unquote(parts.password)


def credentials_for(settings: RedisSettings) -> FileCredentials | None:
    """A provider where the password comes from a file; None where it is given whole."""
    if settings.url_file is not None:
        return FileCredentials(settings.url_file, username=None, url=True)
    if settings.password_file is not None:
        return FileCredentials(settings.password_file, username=settings.username, url=False)
    return None


def without_credentials(url: str) -> str:
    """The URL with its user and password taken out (a provider gives them)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()
