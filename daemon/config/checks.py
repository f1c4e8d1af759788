"""What a valid configuration still exposes, said at every start of every command."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from daemon.config.model import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unsafe_choices(settings: Settings) -> list[tuple[str, dict[str, object]]]:
    """What this configuration exposes, said at every start of every command: (event, fields)."""
    found: list[tuple[str, dict[str, object]]] = []
    if settings.redis.uses_tls and settings.redis.ssl_cert_reqs == "none":
        found.append(
            ("redis.tls_unverified", {"hint": "REDIS_SSL_CERT_REQS=none: set it to required"})
        )
    if settings.health_addr is not None and not is_loopback(settings.health_addr[0]):
        found.append(
            (
                "health.exposed",
                {
                    "address": settings.health_addr[0],
                    "hint": "/metrics and /readyz are open beyond this machine",
                },
            )
        )
    loose = loose_credential_files(settings)
    if loose:
        found.append(("config.credential_file_loose", {"files": loose, "hint": "chmod 600 them"}))
    return found


def loose_credential_files(settings: Settings) -> list[str]:
    """Credential files that others than their owner may read (group or world bits)."""
    loose = []
    for name in settings.credential_files:
        try:
            mode = Path(name).stat().st_mode
        except OSError:
            continue
        if mode & 0o077:
            loose.append(f"{name} (mode {stat.S_IMODE(mode):04o})")
    return loose
