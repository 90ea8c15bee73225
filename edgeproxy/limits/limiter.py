"""Rate limits on keys, users and teams: `rpm_limit`, `tpm_limit`, `max_parallel_requests` (COMPAT.md, Errors).

With Redis, one EVALSHA per request admits it against every limit of its key, user and team at once, exactly
across instances (pipelined with the response cache's lookup when there is one); a call that ends settles its
tokens and parallel slot with one more, only when the key has a tpm or parallel limit, deferred so that the
answer does not wait for it (`RedisBackend.defer`). Without Redis, or while it is down, the same algorithm runs
on per-process counters.
A refusal is a 429 `rate_limit_error` with `retry-after`; every answer to a limited key carries OpenAI's
`x-ratelimit-limit-*`, `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` headers (requests and tokens) for its
tightest limit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeproxy.auth import Principal
from edgeproxy.errors import RateLimitError
from edgeproxy.limits.windows import ADMIT_LUA, RELEASE_LUA, WINDOW_S, LocalWindows, Reply
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
    limits: Sequence[Limit] = ()
    call_id: str = ""
    shared: bool = False  # admitted by Redis (settle there) or by this process
    headers: dict[str, str] = field(default_factory=dict)
    released: bool = False
    # Replies to the commands passed to `admit(also=...)`, when they went with the admission (else None).
    also: list[Any] | None = None

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


class RateLimiter:
    def __init__(self, backend: RedisBackend | None, prefix: str, lease_s: float, local: LocalWindows | None = None):
        self._backend = backend
        self._prefix = prefix
        self._lease_ms = max(1000, round(lease_s * 1000))
        self._local = local or LocalWindows()
        self._admit = backend.lua(ADMIT_LUA) if backend is not None else None
        self._release = backend.lua(RELEASE_LUA) if backend is not None else None

    def _keys(self, limit: Limit) -> tuple[str, str, str]:
        # One hash tag for all: the admission script reads a key's, user's and team's counters at once, and in a
        # Redis cluster a script's keys must share a slot (so there every limit lives on one node; they are small).
        base = f"{self._prefix}:{{limits}}:{limit.entity}:{limit.id}"
        # "requests" and "tokens", not the "rpm" and "tpm" of versions whose hashes had no running sum: during a
        # rolling upgrade the two kinds of instance must not read each other's counters.
        return f"{base}:requests", f"{base}:tokens", f"{base}:parallel"

    async def admit(self, principal: Principal, call_id: str, also: Sequence[Command] = ()) -> Ticket:
        """Count the request against its limits, or raise RateLimitError (429, retry-after).

        `also`: Redis commands to pipeline with the admission (the response cache's lookup): one round trip for
        both. Their replies are on `ticket.also`, None when they were not sent (no limits, or Redis down).
        """
        limits = limits_of(principal)
        if not limits:
            return NO_LIMITS
        keys = [k for limit in limits for k in self._keys(limit)]
        args: list[int | str] = [call_id, self._lease_ms]
        for limit in limits:
            args += [_or_none(limit.rpm), _or_none(limit.tpm), _or_none(limit.parallel)]
        reply, others = await self._run_admit(keys, args, also)
        if int(reply[0]) != 1:
            raise _refusal(limits, reply)
        return Ticket(self, limits, call_id, others is not None, _headers(limits, reply), also=others)

    async def _run_admit(
        self, keys: list[str], args: list[int | str], also: Sequence[Command]
    ) -> tuple[Reply, list[Any] | None]:
        if self._backend is not None and self._admit is not None:
            try:
                reply, *others = await _send(self._backend, self._admit.command(keys, args), also)
                return [_text(v) for v in reply], others
            except RedisUnavailable as error:
                log.debug("rate limits fall back to this process: %s", error)
        return self._local.admit(keys, args), None

    async def settle(self, ticket: Ticket, tokens: int) -> None:
        wanted = [(limit.tpm is not None and tokens > 0, limit.parallel is not None) for limit in ticket.limits]
        if not any(tpm or par for tpm, par in wanted):
            return  # rpm only: nothing to settle
        keys: list[str] = []
        args: list[int | str] = [ticket.call_id, max(0, tokens)]
        for limit, (tpm, par) in zip(ticket.limits, wanted, strict=True):
            keys += self._keys(limit)[1:]
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


def _or_none(value: int | None) -> int:
    return -1 if value is None else int(value)


def _text(value: object) -> int | str:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, int | str) else str(value)


def _headers(limits: Sequence[Limit], reply: Reply) -> dict[str, str]:
    now = int(reply[1])
    requests: tuple[int, int, int] | None = None  # (remaining, limit, reset seconds) of the tightest limit
    tokens: tuple[int, int, int] | None = None
    for i, limit in enumerate(limits):
        req, req_oldest, tok, tok_oldest = (int(v) for v in reply[2 + 5 * i : 6 + 5 * i])
        if limit.rpm is not None:
            # This request is counted now; the oldest bucket is this second's when it was the first.
            entry = (limit.rpm - req - 1, limit.rpm, _reset_s(req_oldest if req_oldest >= 0 else now, now))
            requests = entry if requests is None or entry[0] < requests[0] else requests
        if limit.tpm is not None:
            entry = (max(0, limit.tpm - tok), limit.tpm, _reset_s(tok_oldest, now))
            tokens = entry if tokens is None or entry[0] < tokens[0] else tokens
    headers: dict[str, str] = {}
    if requests is not None:
        headers.update(_triple("requests", *requests))
    if tokens is not None:
        headers.update(_triple("tokens", *tokens))
    return headers


def _triple(kind: str, remaining: int, limit: int, reset_s: int) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(0, remaining)),
        f"x-ratelimit-reset-{kind}": _duration(reset_s),
    }


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
        headers.update(_triple("requests", 0, limit.rpm or 0, retry_after))
    else:
        retry_after = _reset_s(oldest, now)
        message = f"{used} tokens in the last minute, tpm_limit is {limit.tpm}"
        headers.update(_triple("tokens", 0, limit.tpm or 0, retry_after))
    headers["retry-after"] = str(retry_after)
    message = f"rate limit exceeded for {limit.label}: {message}; retry after {retry_after} s"
    return RateLimitError(message, headers=headers)
