"""What the router remembers about each deployment, behind one small class.

Everything here is per process. A later step shares usage and cooldowns between instances through Redis; it
can do so by subclassing `RouterState` (or providing the same methods) without touching strategy or retry
code, which only ever talk to this interface. The methods are synchronous on purpose: they sit on the hot
path, and a shared implementation is expected to keep a local view and sync it in the background rather
than make a round trip per pick.

Times passed in are `trio.current_time()` values (so tests can run under `MockClock`); the only wall-clock
values are the ISO strings in `HealthRecord`, which exist for people reading `/health`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# Latency-based routing averages over this many recent calls: enough to smooth one slow answer, few enough
# that a deployment which got faster (model loaded, load went away) is noticed within a handful of calls.
LATENCY_WINDOW = 10


@dataclass(slots=True)
class HealthRecord:
    """The latest result of the background probe for one deployment."""

    healthy: bool | None = None  # None: not probed yet
    last_error: str | None = None
    last_latency_s: float | None = None
    since: str | None = None  # wall-clock ISO time the current health status began
    last_checked: str | None = None  # wall-clock ISO time of the last probe


@dataclass(slots=True)
class DeploymentState:
    in_flight: int = 0
    minute: int = -1  # which minute `requests`/`tokens` count (trio time // 60)
    requests: int = 0
    tokens: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    failures: deque[float] = field(default_factory=deque)  # times of failures that count for cooldown
    cooldown_until: float | None = None
    last_error: str | None = None  # from requests (probes keep theirs in `health`)
    health: HealthRecord = field(default_factory=HealthRecord)


def minute_of(now: float) -> int:
    return int(now // 60)


class RouterState:
    """Per-process counters keyed by deployment id."""

    def __init__(self) -> None:
        self._states: dict[str, DeploymentState] = {}

    def of(self, deployment_id: str) -> DeploymentState:
        state = self._states.get(deployment_id)
        if state is None:
            state = self._states[deployment_id] = DeploymentState()
        return state

    # ---------------------------------------------------------------- in-flight calls (least-busy)

    def in_flight(self, deployment_id: str) -> int:
        return self.of(deployment_id).in_flight

    def start_call(self, deployment_id: str, now: float) -> None:
        """A call begins: one more in flight, one more request this minute (rpm)."""
        state = self._this_minute(deployment_id, now)
        state.in_flight += 1
        state.requests += 1

    def end_call(self, deployment_id: str) -> None:
        state = self.of(deployment_id)
        state.in_flight = max(0, state.in_flight - 1)

    # ---------------------------------------------------------------- usage this minute (usage-based)

    def add_tokens(self, deployment_id: str, tokens: int, now: float) -> None:
        self._this_minute(deployment_id, now).tokens += max(0, tokens)

    def usage(self, deployment_id: str, now: float) -> tuple[int, int]:
        """(requests, tokens) used in the minute containing `now`."""
        state = self._this_minute(deployment_id, now)
        return state.requests, state.tokens

    def _this_minute(self, deployment_id: str, now: float) -> DeploymentState:
        state = self.of(deployment_id)
        minute = minute_of(now)
        if state.minute != minute:
            state.minute, state.requests, state.tokens = minute, 0, 0
        return state

    # ---------------------------------------------------------------- latency (latency-based)

    def add_latency(self, deployment_id: str, seconds_per_token: float) -> None:
        self.of(deployment_id).latencies.append(seconds_per_token)

    def average_latency(self, deployment_id: str) -> float | None:
        latencies = self.of(deployment_id).latencies
        return sum(latencies) / len(latencies) if latencies else None

    # ---------------------------------------------------------------- failures and cooldowns

    def add_failure(self, deployment_id: str, now: float, window_s: float) -> int:
        """Note a failure; return how many fell within the last `window_s` seconds, this one included."""
        failures = self.of(deployment_id).failures
        failures.append(now)
        while failures and failures[0] <= now - window_s:
            failures.popleft()
        return len(failures)

    def clear_failures(self, deployment_id: str) -> None:
        self.of(deployment_id).failures.clear()

    def cooldown_until(self, deployment_id: str) -> float | None:
        return self.of(deployment_id).cooldown_until

    def set_cooldown(self, deployment_id: str, until: float | None) -> None:
        self.of(deployment_id).cooldown_until = until

    def set_last_error(self, deployment_id: str, message: str | None) -> None:
        self.of(deployment_id).last_error = message

    def last_error(self, deployment_id: str) -> str | None:
        return self.of(deployment_id).last_error

    # ---------------------------------------------------------------- health probes

    def health(self, deployment_id: str) -> HealthRecord:
        return self.of(deployment_id).health
