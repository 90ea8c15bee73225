"""When a failing deployment is taken out of rotation, and for how long (COMPAT.md, Router).

A deployment that fails more than `allowed_fails` times within a sliding minute, with errors that say the
deployment itself is in trouble (429, 401, 404, 408, 5xx, connection errors, timeouts; see
`UpstreamError.counts_for_cooldown`), is skipped for `cooldown_time_s`, or for the upstream's Retry-After.
A bad request (400) says nothing about the deployment and never counts.
"""

from __future__ import annotations

import math
import re

from edgeproxy.config import Deployment, RouterSettings
from edgeproxy.errors import UpstreamError
from edgeproxy.router.state import RouterState

FAILURE_WINDOW_S = 60.0
_MAX_MESSAGE_CHARS = 500
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def scrub(message: str, deployment: Deployment) -> str:
    """An error message safe for /health and admin pages: no api key, no user:password in URLs."""
    text = message.replace(deployment.api_base, deployment.public_api_base)
    if deployment.api_key and len(deployment.api_key) >= 4:
        text = text.replace(deployment.api_key, "****")
    text = _URL_CREDENTIALS.sub(r"\1", text)
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."


def error_text(exc: BaseException, deployment: Deployment) -> str:
    message = exc.message if isinstance(exc, UpstreamError) else (str(exc) or type(exc).__name__)
    return scrub(message, deployment)


class Cooldowns:
    def __init__(self, settings: RouterSettings, state: RouterState, never_cool: frozenset[str]) -> None:
        self._settings = settings
        self._state = state
        # Deployment ids that are the only member of a group without fallbacks: cooling one down would turn
        # a flaky upstream into a hard outage with nothing to fall back to, so it keeps being tried.
        self._never_cool = never_cool

    def record_failure(self, deployment: Deployment, err: UpstreamError, now: float) -> bool:
        """Count a failed call; return True when it started a cooldown."""
        deployment_id = deployment.deployment_id
        if not err.counts_for_cooldown:
            return False  # the request's fault (400...), not the deployment's: not worth showing on /health
        self._state.set_last_error(deployment_id, error_text(err, deployment))
        if deployment_id in self._never_cool:
            return False
        fails = self._state.add_failure(deployment_id, now, FAILURE_WINDOW_S)
        if fails <= self._settings.allowed_fails:
            return False
        duration = err.retry_after_s if err.retry_after_s is not None else self._settings.cooldown_time_s
        if duration <= 0:
            return False
        self._state.set_cooldown(deployment_id, now + duration)
        # A fresh start after the cooldown: old failures must not cool it down again on its first error.
        self._state.clear_failures(deployment_id)
        return True

    def cooling_until(self, deployment: Deployment, now: float) -> float | None:
        """When the deployment's cooldown ends, or None if it is not cooling down."""
        until = self._state.cooldown_until(deployment.deployment_id)
        if until is None:
            return None
        if until <= now:
            self._state.set_cooldown(deployment.deployment_id, None)
            return None
        return until

    def is_cooling(self, deployment: Deployment, now: float) -> bool:
        return self.cooling_until(deployment, now) is not None

    def end(self, deployment: Deployment) -> None:
        """End a cooldown early (a health probe succeeded) and forget the failures behind it."""
        self._state.set_cooldown(deployment.deployment_id, None)
        self._state.clear_failures(deployment.deployment_id)

    def retry_after_s(self, deployments: tuple[Deployment, ...] | list[Deployment], now: float) -> float:
        """Seconds until the first of these deployments' cooldowns ends (for a 429's retry-after)."""
        ends = [u for u in (self.cooling_until(d, now) for d in deployments) if u is not None]
        return max(0.0, min(ends) - now) if ends else 0.0


def retry_after_header(seconds: float) -> dict[str, str]:
    # Never tell a client to come back in 0 s: it would just hammer us while nothing has changed.
    return {"retry-after": str(max(1, math.ceil(seconds)))}
