"""Is this host's daemon ready (`orca-tokens health`, the container's HEALTHCHECK): its
/readyz says 200, or, with the health endpoint disabled, every configured login has a valid
token in Redis."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import redis

from daemon.config import Settings
from daemon.store.tokens import login_tokens

READYZ_TIMEOUT_S = 5


def health_report(settings: Settings, client: redis.Redis) -> tuple[bool, dict[str, Any]]:
    if settings.health_addr is not None:
        host, port = settings.health_addr
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 (a client)
        url = f"http://[{host}]:{port}/readyz" if ":" in host else f"http://{host}:{port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=READYZ_TIMEOUT_S) as response:  # noqa: S310 (our http URL)
                return True, json.load(response)
        except urllib.error.HTTPError as error:
            return False, json.load(error)
        except (OSError, ValueError) as error:
            return False, {"error": f"{url}: {error}"}
    names = [login.name for login in settings.logins]
    found = login_tokens(client, names, time.time())
    states = {name: state for name, (_, state) in found.items()}
    ready = bool(names) and all(state.usable for state in states.values())
    return ready, {"ready": ready, "logins": states}
