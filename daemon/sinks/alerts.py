"""Webhook alerts (ORCA_ALERT_WEBHOOK_URL): one message when a login starts failing and one when
it recovers. Sent from a thread of their own, so a webhook that is down never slows a refresh."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import structlog

from daemon.constants import ALERT_QUEUE_SIZE, ALERT_TIMEOUT_S
from daemon.logs import scrub
from daemon.sinks.background import BackgroundSink

log = structlog.get_logger("daemon.sinks.alerts")


def payload_for(url: str, text: str) -> dict[str, str]:
    """Discord wants {"content"}, Slack {"text"}; anything else gets both."""
    host = urlsplit(url).hostname or ""
    if host.endswith(("discord.com", "discordapp.com")):
        return {"content": text}
    if host.endswith("slack.com"):
        return {"text": text}
    return {"content": text, "text": text}


class Alerter(BackgroundSink[str]):
    def __init__(self, url: str, *, http: httpx.Client | None = None) -> None:
        self._url = url
        self._http = http or httpx.Client(timeout=ALERT_TIMEOUT_S)
        super().__init__("alerts", ALERT_QUEUE_SIZE)

    def send(self, text: str) -> None:
        """Queue a message; never blocks. The text is scrubbed of secrets first."""
        if not self._queue_item(scrub(text)):
            log.warning("alert.dropped", reason="queue full")

    def close(self, timeout: float = 2.0) -> None:
        super().close(timeout)

    def deliver(self, item: str) -> None:
        try:
            response = self._http.post(self._url, json=payload_for(self._url, item))
            response.raise_for_status()
        except httpx.HTTPError as error:
            # The URL carries the webhook's own secret: name the failure, never the URL.
            log.warning("alert.failed", error=type(error).__name__)
        else:
            log.info("alert.sent")

    def closed(self) -> None:
        self._http.close()
