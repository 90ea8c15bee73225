"""The alert channel and its sender: producers call `emit` (never waits), one task posts to the webhook."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import httpx
import trio

from edgeproxy.alerts.dedup import Dedup
from edgeproxy.opsconfig import OpsSettings

log = logging.getLogger("edgeproxy.alerts")
QUEUE_SIZE = 1000  # alerts waiting for the webhook; beyond this they are dropped (and logged)
WEBHOOK_TIMEOUT_S = 10.0
DELIVERY_ATTEMPTS = 2
RETRY_DELAY_S = 2.0


@dataclass(frozen=True, slots=True)
class Alert:
    type: str  # budget_alerts | outage_alerts | db_exceptions (LiteLLM's alert_types)
    text: str
    key: str  # de-duplication: one alert per key (per ttl) across every process sharing the dedup store
    ttl_s: float
    clears: tuple[str, ...] = ()  # keys this alert ends: "back up" clears "down", so the next "down" is sent


class Alerter:
    def __init__(
        self,
        settings: OpsSettings,
        dedup: Dedup | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        assert settings.webhook_url is not None
        self._url = settings.webhook_url
        self._types = frozenset(settings.alert_types)
        self.dedup = dedup or Dedup()
        self._transport = transport
        self._send, self._receive = trio.open_memory_channel[Alert](QUEUE_SIZE)
        self.instance = socket.gethostname()  # which machine speaks, when several instances share a channel
        self.sent = 0

    def emit(self, alert: Alert) -> None:
        """Queue an alert (sync and non-blocking: the budget ledger calls it while settling a request)."""
        if alert.type not in self._types:
            return
        try:
            self._send.send_nowait(alert)
        except trio.WouldBlock:
            log.warning("alert dropped, %d already waiting for the webhook: %s", QUEUE_SIZE, alert.text)

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send queued alerts until cancelled. The client is created here, inside the trio run."""
        timeout = httpx.Timeout(WEBHOOK_TIMEOUT_S)
        # trust_env=False as for upstreams: an HTTP(S)_PROXY meant for something else must not reroute alerts.
        async with httpx.AsyncClient(timeout=timeout, transport=self._transport, trust_env=False) as client:
            task_status.started()
            async for alert in self._receive:
                if await self.dedup.claim(alert.key, alert.ttl_s, alert.clears):
                    await self._deliver(client, alert)

    async def _deliver(self, client: httpx.AsyncClient, alert: Alert) -> None:
        log.warning("alert: %s", alert.text)
        body = {"text": f"edgeproxy@{self.instance}: {alert.text}"}
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                response = await client.post(self._url, json=body)
            except httpx.HTTPError as exc:
                # Never the URL: a Slack webhook URL is a secret.
                problem = f"could not reach the webhook ({type(exc).__name__})"
            else:
                if response.status_code < 300:
                    self.sent += 1
                    return
                problem = f"the webhook answered HTTP {response.status_code}"
            if attempt < DELIVERY_ATTEMPTS:
                await trio.sleep(RETRY_DELAY_S)
        log.warning("alert not delivered: %s", problem)
