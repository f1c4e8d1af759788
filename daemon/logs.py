"""structlog set up once per process: JSON or console, stdlib records (APScheduler, httpx, redis)
rendered the same way, and every secret scrubbed before anything is written."""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import re
import sys
import threading
import urllib.parse
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

# A JWT anywhere in a log line: header.payload.signature, the header always starting {" -> eyJ.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Secrets shorter than this are redacted only where a whole value equals one: as a substring a
# one-letter password would cut pieces out of login names and ordinary words.
MIN_SUBSTRING_SECRET = 6
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_secrets_lock = threading.Lock()


def fingerprint(token: str) -> str:
    """How a token is named anywhere but its own Redis key: first 8 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def _forms(secret: str) -> set[str]:
    """The ways a secret shows up in text: as is, JSON-escaped (an `errorText` echoing it),
    URL-encoded (inside a URL or a form body). Case is folded by the pattern itself."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }


def register_secrets(*values: str) -> None:
    """Values scrubbed from every log line from now on (passwords, `sec`, Redis URL)."""
    global _pattern
    with _secrets_lock:
        _secrets.update(v for v in values if v)
        forms = {f for s in _secrets if len(s) >= MIN_SUBSTRING_SECRET for f in _forms(s)}
        alternatives = sorted(forms, key=len, reverse=True)
        _pattern = (
            re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE)
            if alternatives
            else None
        )


def forget_secrets() -> None:
    global _pattern
    with _secrets_lock:
        _secrets.clear()
        _pattern = None


def scrub(text: str) -> str:
    text = _JWT.sub(lambda m: f"<token {fingerprint(m.group(0))}>", text)
    with _secrets_lock:
        pattern, exact = _pattern, text.strip() in _secrets
    if exact:
        return "<redacted>"
    return pattern.sub("<redacted>", text) if pattern is not None else text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_value(v) for v in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if not key.startswith("_"):  # ProcessorFormatter's own bookkeeping
            event_dict[key] = _scrub_value(value)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


def configure_logging(
    log_format: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    file: str | None = None,
    max_bytes: int = 10 * 1024 * 1024,
    backups: int = 5,
) -> None:
    """Route structlog and the standard library through one handler: stderr, or a file rotated
    by size (ORCA_LOG_FILE, for nohup on a VM where nothing else rotates it)."""
    stream = stream or sys.stderr
    as_json = log_format == "json" or (log_format == "auto" and (file or not stream.isatty()))
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=not file and stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared = _shared_processors()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # structlog.testing.capture_logs must still work
    )
    handler: logging.Handler = (
        logging.handlers.RotatingFileHandler(
            file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        if file
        else logging.StreamHandler(stream)
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric_level = logging.getLevelName(level.upper())
    root.setLevel(numeric_level)
    # Their per-request and per-job INFO lines would drown the daemon's own events.
    quiet = logging.DEBUG if numeric_level <= logging.DEBUG else logging.WARNING
    for name in ("apscheduler", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    structlog.get_logger("daemon").critical("daemon.crashed", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    exc = args.exc_value or args.exc_type()
    structlog.get_logger("daemon").error(
        "thread.crashed",
        thread=args.thread.name if args.thread else None,
        exc_info=(args.exc_type, exc, args.exc_traceback),
    )
