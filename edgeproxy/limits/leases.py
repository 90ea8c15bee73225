"""Leases: a busy key's requests admitted in this process against requests reserved in Redis a second at a time.

Why: the exact admission (`windows.ADMIT_LUA`, one script call per request) was most of what Redis limits cost a
request: ~0.95 M instructions per call against 4.7 M for the whole call with the master key (callgrind,
`tests/benchmarks/instructions.py --scenario limits`), plus the script's time inside Redis. A lease turns that
into one call per limited entity (key, user, team) and second, for keys without `max_parallel_requests`, and
stays exact:
- One atomic script call checks the entity's limits as the exact path does and reserves requests in the counter
  of the current second of *Redis's* clock (at most half of what is left of the minute, so instances near a
  limit share what is left; near the limit a grant is one request, as on the exact path). The lease expires
  when that second does, measured from when the script was sent, so it is never used later: every request
  counts in the bucket of the second it was admitted in, as if admitted one by one.
- What a second's grant did not use is given back to that second's bucket, with the entity's next call or by
  the flusher (`serve`) within a second. Until then it counts: the error is on the side of refusing, never of
  admitting. A call that fails on the way drops what it gave back (the requests stay counted) and the tokens it
  carried (uncounted, as a settlement lost to an outage always was).
- A refusal holds in this process for the rest of that second: the minute's count cannot fall within a second
  except by what other instances give back.
What it costs: with several instances near a limit, one can refuse while another holds reserved requests for the
rest of the second; a call's tokens reach Redis with the entity's next call or within a second, so other
instances see them up to about two seconds later (this instance at once). The request counts other instances
see, and `x-ratelimit-remaining-requests`, are exact only to within what is reserved and not used yet.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from edgeproxy.limits.windows import ADD_LUA, WINDOW_LUA, Reply, decoded, limit_arg
from edgeproxy.redisclient import Command, RedisBackend, RedisUnavailable, ReplyError

log = logging.getLogger("edgeproxy.limits")

FLUSH_INTERVAL_S = 1.0  # how soon an idle entity's unused requests and its calls' tokens reach Redis
MAX_WANT = 100_000  # requests asked for in one grant, whatever the rate

_GIVE_BACK_LUA = """
local function give_back(key, bucket, count, first)
  if bucket < first then return end
  local have = tonumber(redis.call('HGET', key, bucket))
  if have == nil then return end
  if count < have then
    redis.call('HINCRBY', key, bucket, -count)
    if redis.call('HEXISTS', key, 'n') == 1 then redis.call('HINCRBY', key, 'n', -count) end
  else
    redis.call('HDEL', key, bucket)
    rebuild(key, first)
  end
end
"""

# KEYS: per entity, its requests and tokens hashes (windows.py). ARGV: per entity, six values: rpm, tpm (-1: no
# limit), requests wanted (0: only give back and count tokens), the second and count of requests given back, tokens
# of ended calls. Reply: [1, second, microseconds, then per entity: granted, requests, requests_oldest, tokens,
# tokens_oldest] (counts before the grant), or [0, second, microseconds, entity (1-based), "rpm" | "tpm", used,
# oldest] when an entity that wants requests is at its limit (nothing granted to any; what was given back and
# the tokens are counted either way).
LEASE_LUA = (
    WINDOW_LUA
    + ADD_LUA
    + _GIVE_BACK_LUA
    + """
local t = redis.call('TIME')
local sec, usec = tonumber(t[1]), tonumber(t[2])
local first = sec - 59
local n = #KEYS / 2
for i = 1, n do
  local back, tokens = tonumber(ARGV[6 * i - 1]), tonumber(ARGV[6 * i])
  if back > 0 then give_back(KEYS[2 * i - 1], tonumber(ARGV[6 * i - 2]), back, first) end
  if tokens > 0 then add(KEYS[2 * i], sec, tokens) end
end
local out = {1, sec, usec}
local grants = {}
for i = 1, n do
  local rpm, tpm, want = tonumber(ARGV[6 * i - 5]), tonumber(ARGV[6 * i - 4]), tonumber(ARGV[6 * i - 3])
  local grant, req, req_oldest, tok, tok_oldest = 0, 0, -1, 0, -1
  if want > 0 then
    grant = want
    if rpm >= 0 then
      req, req_oldest = window(KEYS[2 * i - 1], first, sec)
      if req >= rpm then return {0, sec, usec, i, 'rpm', req, req_oldest} end
      grant = math.max(1, math.min(want, math.floor((rpm - req) / 2)))
    end
    if tpm >= 0 then
      tok, tok_oldest = window(KEYS[2 * i], first, sec)
      if tok >= tpm then return {0, sec, usec, i, 'tpm', tok, tok_oldest} end
    end
  end
  grants[i] = grant
  out[#out + 1] = grant
  out[#out + 1] = req
  out[#out + 1] = req_oldest
  out[#out + 1] = tok
  out[#out + 1] = tok_oldest
end
for i = 1, n do
  if grants[i] > 0 and tonumber(ARGV[6 * i - 5]) >= 0 then add(KEYS[2 * i - 1], sec, grants[i]) end
end
return out
"""
)


@dataclass(slots=True)
class Lease:
    """One entity's reservation for one second of Redis's clock, and what this process owes Redis for it."""

    tokens_key: str
    second: int = -1
    deadline: float = -math.inf  # trio time by which that second is over (never later than Redis's)
    reserved: bool = False  # its requests are counted in Redis (the entity has an rpm limit)
    left: int = 0  # reserved and not used yet
    taken: int = 0  # requests admitted under this second's grants: how many to ask for next time
    requests: int = 0  # counted in the minute before this process's next request
    requests_oldest: int = -1
    tokens: int = 0  # counted in the minute at the grant
    tokens_oldest: int = -1
    pending_tokens: int = 0  # of calls that ended here, not sent yet (counted here at once)
    refusal: tuple[str, int, int] | None = None  # (kind, used, oldest): refused for the rest of the second
    refreshing: trio.Event | None = None  # set when the script call on its way for this entity is back

    def owed_back(self, now: float) -> int:
        """Reserved requests this lease will not use: its second is over."""
        return self.left if self.reserved and self.deadline <= now else 0


class Leases:
    """This process's leases, by the entity's requests counter; `serve` gives back and counts in the background."""

    def __init__(self, backend: RedisBackend, clock: Callable[[], float] = trio.current_time) -> None:
        self._backend = backend
        self._script = backend.lua(LEASE_LUA)
        self._clock = clock
        self._table: dict[str, Lease] = {}

    def _lease(self, requests_key: str, tokens_key: str) -> Lease:
        lease = self._table.get(requests_key)
        if lease is None:
            lease = self._table[requests_key] = Lease(tokens_key)
        return lease

    async def admit(
        self, rpm_tpm: Sequence[tuple[int | None, int | None]], keys: Sequence[tuple[str, str]], also: Sequence[Command]
    ) -> tuple[Reply, list[Any] | None]:
        """Admit one request against every entity's lease, asking Redis only for leases that need it.

        `rpm_tpm` and `keys` (requests and tokens counters) per entity. The reply has ADMIT_LUA's shape; the
        replies to `also` are second, None unless they went with a call this request made. Raises
        RedisUnavailable.
        """
        others: list[Any] | None = None
        while True:
            # Looked up on every pass: the flusher forgets leases that ended while this request waited.
            leases = [self._lease(*names) for names in keys]
            now = self._clock()
            stale: list[int] = []
            for i, ((rpm, tpm), lease) in enumerate(zip(rpm_tpm, leases, strict=True)):
                if lease.deadline <= now:
                    stale.append(i)
                    continue
                refusal = lease.refusal or _over_tpm(tpm, lease)
                if refusal is not None:
                    return [0, lease.second, i + 1, *refusal], others
                if rpm is not None and (not lease.reserved or lease.left <= 0):
                    stale.append(i)
            if not stale:
                return _take(rpm_tpm, leases), others
            on_its_way = next((leases[i].refreshing for i in stale if leases[i].refreshing is not None), None)
            if on_its_way is not None:
                await on_its_way.wait()
                continue
            sent = await self._refresh([rpm_tpm[i] for i in stale], [keys[i][0] for i in stale], also)
            if also:
                others, also = sent, ()

    async def _refresh(
        self, rpm_tpm: Sequence[tuple[int | None, int | None]], names: Sequence[str], also: Sequence[Command]
    ) -> list[Any]:
        now = self._clock()
        leases = [self._table[name] for name in names]
        keys: list[str] = []
        args: list[int | str] = []
        for (rpm, tpm), name, lease in zip(rpm_tpm, names, leases, strict=True):
            # A new second asks for what the last one took; running out within a second, for twice as much.
            expired = lease.deadline <= now
            want = min(MAX_WANT, max(1, lease.taken) * (1 if expired else 2))
            keys += [name, lease.tokens_key]
            args += [limit_arg(rpm), limit_arg(tpm), want, *self._settlement(lease, now)]
        done = trio.Event()
        for lease in leases:
            lease.refreshing = done
        try:
            reply, *others = await self._backend.execute([self._script.command(keys, args), *also])
            if isinstance(reply, ReplyError):
                raise RedisUnavailable(f"Redis refused the command: {reply}")
        finally:
            for lease in leases:
                lease.refreshing = None
            done.set()
        _apply(decoded(reply), rpm_tpm, leases, now)
        return others

    @staticmethod
    def _settlement(lease: Lease, now: float) -> tuple[int, int, int]:
        """(second, requests given back, tokens) for the next call, taken off the lease: sent once, or lost."""
        back = lease.owed_back(now)
        tokens, lease.pending_tokens = lease.pending_tokens, 0
        lease.left -= back
        return (lease.second if back else 0), back, tokens

    def add_tokens(self, requests_key: str, tokens_key: str, tokens: int) -> None:
        """Count an ended call's tokens: here at once, in Redis with the next call or flush."""
        self._lease(requests_key, tokens_key).pending_tokens += tokens

    async def flush(self, *, everything: bool = False) -> None:
        """Give back what leases whose second is over did not use and send pending tokens, in one call.

        `everything` (at shutdown): every lease's unused requests, and the leases end.
        """
        now = self._clock()
        keys: list[str] = []
        args: list[int | str] = []
        for name, lease in list(self._table.items()):
            if everything:
                lease.deadline = -math.inf
            if lease.owed_back(now) or lease.pending_tokens:
                keys += [name, lease.tokens_key]
                args += [-1, -1, 0, *self._settlement(lease, now)]
            elif lease.deadline <= now and lease.refreshing is None:
                del self._table[name]  # nothing owed, nothing on its way: forget it (and its rate)
        if not keys:
            return
        try:
            (reply,) = await self._backend.execute([self._script.command(keys, args)])
        except RedisUnavailable as error:
            log.debug("rate-limit leases: %d entities' settlements dropped: %s", len(keys) // 2, error)
            return
        if isinstance(reply, ReplyError):
            log.debug("rate-limit leases: Redis refused a settlement: %s", reply)

    async def serve(self, closing: trio.Event, final_timeout_s: float) -> None:
        """Flush every FLUSH_INTERVAL_S until `closing` is set, then give back everything."""
        try:
            while not closing.is_set():
                with trio.move_on_after(FLUSH_INTERVAL_S):
                    await closing.wait()
                await self.flush()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(final_timeout_s):
                await self.flush(everything=True)


def _over_tpm(tpm: int | None, lease: Lease) -> tuple[str, int, int] | None:
    used = lease.tokens + lease.pending_tokens
    if tpm is None or used < tpm:
        return None
    return "tpm", used, lease.tokens_oldest if lease.tokens_oldest >= 0 else lease.second


def _take(rpm_tpm: Sequence[tuple[int | None, int | None]], leases: Sequence[Lease]) -> Reply:
    """One request admitted under every lease: ADMIT_LUA's reply, counts as they were before it."""
    out: Reply = [1, leases[0].second]
    for (rpm, _), lease in zip(rpm_tpm, leases, strict=True):
        out += [lease.requests, lease.requests_oldest, lease.tokens + lease.pending_tokens, lease.tokens_oldest, 0]
        if rpm is not None:
            lease.left -= 1
            lease.requests += 1
            if lease.requests_oldest < 0:
                lease.requests_oldest = lease.second
        lease.taken += 1
    return out


def _apply(
    reply: Reply, rpm_tpm: Sequence[tuple[int | None, int | None]], leases: Sequence[Lease], sent_at: float
) -> None:
    """Renew the leases from the script's reply (see LEASE_LUA)."""
    second, microseconds = int(reply[1]), int(reply[2])
    # The script ran after we sent it, so its second ends no sooner than this.
    deadline = sent_at + (1_000_000 - microseconds) / 1_000_000
    for lease in leases:
        if lease.second != second:
            lease.taken = 0
        lease.second, lease.deadline, lease.refusal = second, deadline, None
    if int(reply[0]) != 1:
        refused = leases[int(reply[3]) - 1]
        refused.refusal = (str(reply[4]), int(reply[5]), int(reply[6]))
        refused.left = 0
        for lease in leases:
            if lease is not refused:
                lease.deadline = -math.inf  # granted nothing: ask again next time
        return
    for j, ((rpm, _), lease) in enumerate(zip(rpm_tpm, leases, strict=True)):
        grant, requests, requests_oldest, tokens, tokens_oldest = (int(v) for v in reply[3 + 5 * j : 8 + 5 * j])
        lease.reserved = rpm is not None
        lease.left = grant if lease.reserved else 0
        lease.requests, lease.requests_oldest = requests, requests_oldest
        lease.tokens, lease.tokens_oldest = tokens, tokens_oldest
