"""Rate limits on keys, users and teams: `rpm_limit`, `tpm_limit`, `max_parallel_requests` (COMPAT.md, Errors).

With Redis, a key without `max_parallel_requests` is admitted in this process against leases: requests reserved
in Redis a second at a time by one script call per entity (`leases.py`, exact: never more than the limit across
instances). A key with a parallel limit is admitted by one EVALSHA per request against every limit of its key,
user and team at once, and settles its slot (and tokens) with one more when the call ends, deferred so that the
answer does not wait for it (`RedisBackend.defer`). Either call goes in one pipeline with the response cache's
lookup when there is one. Without Redis, or while it is down, the same algorithm runs on per-process counters.
A refusal is a 429 `rate_limit_error` with `retry-after`; every answer to a limited key carries OpenAI's
`x-ratelimit-limit-*`, `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` headers (requests and tokens) for its
tightest limit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from edgeproxy.auth import Principal
from edgeproxy.errors import RateLimitError
from edgeproxy.limits.leases import Leases
from edgeproxy.limits.windows import ADMIT_LUA, RELEASE_LUA, WINDOW_S, LocalWindows, Reply, decoded, limit_arg
from edgeproxy.redisclient import Command, RedisBackend, RedisUnavailable, ReplyError

log = logging.getLogger("edgeproxy.limits")
_ENTITIES = (("key", "token"), ("user", "user_id"), ("team", "team_id"))


@dataclass(frozen=True, slots=True)
class Limit:
    """The limits of one entity behind a key; None means no limit."""

    entity: str  # "key" | "user" | "team"
    id: str
    label: str
    rpm: int | None
    tpm: int | None
    parallel: int | None


def limits_of(principal: Principal) -> list[Limit]:
    """Every limited entity behind a virtual key (none for the master key)."""
    found: list[Limit] = []
    for entity, id_field in _ENTITIES:
        row = getattr(principal, entity)
        if row is None or row.get(id_field) is None:
            continue
        rpm, tpm, par = row.get("rpm_limit"), row.get("tpm_limit"), row.get("max_parallel_requests")
        if rpm is None and tpm is None and par is None:
            continue
        name = (row.get("key_alias") or row.get("key_name")) if entity == "key" else row[id_field]
        found.append(Limit(entity, str(row[id_field]), f"{entity} {name}", rpm, tpm, par))
    return found


def _duration(seconds: int) -> str:
    """OpenAI's reset format: 1s, 6m0s."""
    seconds = max(0, seconds)
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def _reset_s(oldest: int, now: int) -> int:
    """Seconds until the oldest counted bucket leaves the window (when the next slot frees up)."""
    return max(1, oldest + WINDOW_S - now) if oldest >= 0 else 0


@dataclass(slots=True)
class Ticket:
    """An admitted request: its headers, and the slot and token count to settle when it ends."""

    limiter: RateLimiter | None = None
    plan: _Plan | None = None
    call_id: str = ""
    shared: bool = False  # admitted by Redis (settle there) or by this process
    headers: dict[str, str] = field(default_factory=dict)
    released: bool = False
    # Replies to the commands passed to `admit(also=...)`, when they went with the admission (else None).
    also: list[Any] | None = None
    leased: bool = False  # admitted against this process's leases (settle in them)

    async def release(self, tokens: int) -> None:
        """Free the parallel slot and count the call's tokens (once; call it in a `finally`).

        With Redis this sends nothing itself: the settlement goes with this process's next pipeline, or a
        moment later (`RedisBackend.defer`), so the answer does not wait for it.
        """
        if self.released or self.limiter is None:
            return
        self.released = True
        await self.limiter.settle(self, tokens)


NO_LIMITS = Ticket(released=True)
MAX_PLANS = 10_000  # principals' plans kept (one per key in use); past that the table starts again


@dataclass(frozen=True, slots=True)
class _Plan:
    """What admitting a key's requests takes, worked out once per load of its rows (KeyAuth caches them)."""

    rows: tuple[object, object, object]  # the key, user and team rows it was made from (compared by identity)
    limits: tuple[Limit, ...]
    keys: tuple[tuple[str, str, str], ...]  # per limit: requests, tokens and parallel counters
    lease_keys: tuple[tuple[str, str], ...]  # per limit: requests and tokens counters
    rpm_tpm: tuple[tuple[int | None, int | None], ...]
    leased: bool  # no parallel limit: admitted against leases when there is Redis
    tpm_keys: tuple[tuple[str, str], ...]  # requests and tokens counters of the limits with a tpm


class RateLimiter:
    def __init__(self, backend: RedisBackend | None, prefix: str, lease_s: float, local: LocalWindows | None = None):
        self._backend = backend
        self._prefix = prefix
        self._lease_ms = max(1000, round(lease_s * 1000))
        self._local = local or LocalWindows()
        self._admit = backend.lua(ADMIT_LUA) if backend is not None else None
        self._release = backend.lua(RELEASE_LUA) if backend is not None else None
        self._leases = Leases(backend) if backend is not None else None
        self._closing = trio.Event()
        self._plans: dict[str | None, _Plan] = {}
        self._final_timeout_s = backend.settings.socket_timeout_s if backend is not None else 0.0

    async def serve(self) -> None:
        """With Redis: give back leases' unused requests and send their calls' tokens, until `close`."""
        if self._leases is not None:
            await self._leases.serve(self._closing, self._final_timeout_s)

    async def flush(self, *, everything: bool = False) -> None:
        """Send what the leases owe Redis now (`serve` does every second): unused requests of seconds that are
        over (`everything`: of every lease, which then end), calls' tokens."""
        if self._leases is not None:
            await self._leases.flush(everything=everything)

    def close(self) -> None:
        """End `serve` after a last flush that gives back every lease's unused requests."""
        self._closing.set()

    def _keys(self, limit: Limit) -> tuple[str, str, str]:
        # One hash tag for all: the admission script reads a key's, user's and team's counters at once, and in a
        # Redis cluster a script's keys must share a slot (so there every limit lives on one node; they are small).
        base = f"{self._prefix}:{{limits}}:{limit.entity}:{limit.id}"
        # "requests" and "tokens", not the "rpm" and "tpm" of versions whose hashes had no running sum: during a
        # rolling upgrade the two kinds of instance must not read each other's counters.
        return f"{base}:requests", f"{base}:tokens", f"{base}:parallel"

    def _plan(self, principal: Principal) -> _Plan | None:
        """The principal's plan, None without limits (the master key)."""
        if principal.key is None:
            return None
        plan = self._plans.get(principal.token)
        rows = (principal.key, principal.user, principal.team)
        if plan is None or any(a is not b for a, b in zip(plan.rows, rows, strict=True)):
            limits = tuple(limits_of(principal))
            keys = tuple(self._keys(limit) for limit in limits)
            plan = _Plan(
                rows,
                limits,
                keys,
                tuple(k[:2] for k in keys),
                tuple((limit.rpm, limit.tpm) for limit in limits),
                all(limit.parallel is None for limit in limits),
                tuple(k[:2] for limit, k in zip(limits, keys, strict=True) if limit.tpm is not None),
            )
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            self._plans[principal.token] = plan
        return plan if plan.limits else None

    async def admit(self, principal: Principal, call_id: str, also: Sequence[Command] = ()) -> Ticket:
        """Count the request against its limits, or raise RateLimitError (429, retry-after).

        `also`: Redis commands to pipeline with the admission (the response cache's lookup): one round trip for
        both. Their replies are on `ticket.also`, None when they were not sent (no limits, Redis down, or a lease
        that admitted the request without a call).
        """
        plan = self._plan(principal)
        if plan is None:
            return NO_LIMITS
        limits = plan.limits
        if plan.leased and self._leases is not None:
            try:
                reply, others = await self._leases.admit(plan.rpm_tpm, plan.lease_keys, also)
            except RedisUnavailable as error:
                log.debug("rate limits fall back to this process: %s", error)
            else:
                if reply[0] != 1:
                    raise _refusal(limits, reply)
                return Ticket(self, plan, call_id, True, _headers(limits, reply), also=others, leased=True)
        keys = [k for names in plan.keys for k in names]
        args: list[int | str] = [call_id, self._lease_ms]
        for limit in limits:
            args += [limit_arg(limit.rpm), limit_arg(limit.tpm), limit_arg(limit.parallel)]
        reply, others = await self._run_admit(keys, args, also)
        if int(reply[0]) != 1:
            raise _refusal(limits, reply)
        return Ticket(self, plan, call_id, others is not None, _headers(limits, reply), also=others)

    async def _run_admit(
        self, keys: list[str], args: list[int | str], also: Sequence[Command]
    ) -> tuple[Reply, list[Any] | None]:
        if self._backend is not None and self._admit is not None:
            try:
                reply, *others = await _send(self._backend, self._admit.command(keys, args), also)
                return decoded(reply), others
            except RedisUnavailable as error:
                log.debug("rate limits fall back to this process: %s", error)
        return self._local.admit(keys, args), None

    async def settle(self, ticket: Ticket, tokens: int) -> None:
        plan = ticket.plan
        if plan is None:
            return
        if ticket.leased and self._leases is not None:
            if tokens > 0:
                for requests_key, tokens_key in plan.tpm_keys:
                    self._leases.add_tokens(requests_key, tokens_key, tokens)
            return
        wanted = [(limit.tpm is not None and tokens > 0, limit.parallel is not None) for limit in plan.limits]
        if not any(tpm or par for tpm, par in wanted):
            return  # rpm only: nothing to settle
        keys: list[str] = []
        args: list[int | str] = [ticket.call_id, max(0, tokens)]
        for names, (tpm, par) in zip(plan.keys, wanted, strict=True):
            keys += names[1:]
            args += ["1" if tpm else "0", "1" if par else "0"]
        if ticket.shared and self._backend is not None and self._release is not None:
            # If Redis is down by then, the slot's lease runs out by itself and these tokens go uncounted.
            self._backend.defer([self._release.command(keys, args)])
            return
        self._local.release(keys, args)


async def _send(backend: RedisBackend, command: Command, also: Sequence[Command]) -> list[Any]:
    """Our script and the caller's commands in one round trip; RedisUnavailable if our script failed."""
    replies = await backend.execute([command, *also])
    if isinstance(replies[0], ReplyError):
        raise RedisUnavailable(f"Redis refused the command: {replies[0]}")
    return replies


def _headers(limits: Sequence[Limit], reply: Reply) -> dict[str, str]:
    now = int(reply[1])
    requests: tuple[int, int, int] | None = None  # (remaining, limit, reset seconds) of the tightest limit
    tokens: tuple[int, int, int] | None = None
    for i, limit in enumerate(limits):
        at = 2 + 5 * i  # this limit's requests, their oldest bucket, tokens, theirs
        if limit.rpm is not None:
            # This request is counted now; the oldest bucket is this second's when it was the first.
            remaining = limit.rpm - int(reply[at]) - 1
            if requests is None or remaining < requests[0]:
                oldest = int(reply[at + 1])
                requests = (remaining, limit.rpm, _reset_s(oldest if oldest >= 0 else now, now))
        if limit.tpm is not None:
            remaining = max(0, limit.tpm - int(reply[at + 2]))
            if tokens is None or remaining < tokens[0]:
                tokens = (remaining, limit.tpm, _reset_s(int(reply[at + 3]), now))
    headers: dict[str, str] = {}
    if requests is not None:
        _add_triple(headers, _REQUESTS, *requests)
    if tokens is not None:
        _add_triple(headers, _TOKENS, *tokens)
    return headers


def _header_names(kind: str) -> tuple[str, str, str]:
    return f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}"


_REQUESTS, _TOKENS = _header_names("requests"), _header_names("tokens")
# Every reset a window allows, written once: these headers go with every answer to a limited key.
_DURATIONS = tuple(_duration(seconds) for seconds in range(WINDOW_S + 1))


def _add_triple(headers: dict[str, str], names: tuple[str, str, str], remaining: int, limit: int, reset_s: int) -> None:
    headers[names[0]] = str(limit)
    headers[names[1]] = str(max(0, remaining))
    headers[names[2]] = _DURATIONS[reset_s] if 0 <= reset_s <= WINDOW_S else _duration(reset_s)


def _refusal(limits: Sequence[Limit], reply: Reply) -> RateLimitError:
    now, index, kind, used, oldest = int(reply[1]), int(reply[2]), str(reply[3]), int(reply[4]), int(reply[5])
    limit = limits[index - 1]
    headers: dict[str, str] = {}
    if kind == "parallel":
        # A slot frees when some call ends: no way to know when, so ask for a short wait.
        retry_after = 1
        message = f"{used} requests in flight, max_parallel_requests is {limit.parallel}"
    elif kind == "rpm":
        retry_after = _reset_s(oldest, now)
        message = f"{used} requests in the last minute, rpm_limit is {limit.rpm}"
        _add_triple(headers, _REQUESTS, 0, limit.rpm or 0, retry_after)
    else:
        retry_after = _reset_s(oldest, now)
        message = f"{used} tokens in the last minute, tpm_limit is {limit.tpm}"
        _add_triple(headers, _TOKENS, 0, limit.tpm or 0, retry_after)
    headers["retry-after"] = str(retry_after)
    message = f"rate limit exceeded for {limit.label}: {message}; retry after {retry_after} s"
    return RateLimitError(message, headers=headers)
