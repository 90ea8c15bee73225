"""The rate-limit algorithm, twice: as one Lua script for Redis and as plain Python for one process.

Requests and tokens are counted in a sliding minute made of 60 one-second buckets (a hash field per second), so
a limit holds across minute boundaries, memory per limited entity stays bounded, and "when does a slot free up"
has an exact answer: when the oldest bucket leaves the window. In Redis the hash also keeps the buckets' sum and
the oldest bucket, so an admission reads two fields instead of summing 60 (measured: the script's time in Redis
went from ~50 to ~17 µs a call with a busy minute). Requests count when admitted; tokens when the
call ends (the usage is only known then). Parallel requests are leases in a sorted set scored by their start
time: a slot is released when its call ends, and a slot whose instance died is forgotten after `lease_ms`.

Admission checks every limit of every entity (key, user, team) and counts only if all pass, atomically: the
script runs in one EVALSHA, so two instances cannot both take the last slot. Both versions return the same flat
list, decoded in `limiter.py`:
  admitted: [1, now_s, then per limit: requests, requests_oldest_s, tokens, tokens_oldest_s, in_flight]
            (counts as they were before this request; oldest -1 when nothing is counted)
  refused:  [0, now_s, limit index (1-based), "rpm" | "tpm" | "parallel", used, oldest_s]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

WINDOW_S = 60
BUCKET_TTL_S = 2 * WINDOW_S  # a counter hash outlives its last bucket, then Redis drops it by itself

# A window's hash: one field per second ("<second>": count), plus "n", the sum of those fields, and "o", the
# oldest second among them. Reading a window is then two fields, not the minute's 60: buckets that left the
# window are subtracted and deleted when a read finds "o" behind it (about once a second per busy counter).
WINDOW_LUA = """
local function rebuild(key, first)
  local fields = redis.call('HGETALL', key)
  local total, oldest, stale = 0, -1, {}
  for j = 1, #fields, 2 do
    local bucket = tonumber(fields[j])
    if bucket == nil or bucket < first then
      stale[#stale + 1] = fields[j]
    else
      total = total + tonumber(fields[j + 1])
      if oldest < 0 or bucket < oldest then oldest = bucket end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  if oldest >= 0 then redis.call('HSET', key, 'n', total, 'o', oldest) end
  return total, oldest
end

local function window(key, first, sec)
  local head = redis.call('HMGET', key, 'n', 'o')
  local total, oldest = tonumber(head[1]), tonumber(head[2])
  if total == nil or oldest == nil then
    if redis.call('EXISTS', key) == 1 then return rebuild(key, first) end
    return 0, -1
  end
  if oldest >= first then return total, oldest end
  -- Far behind (writes without reads, a clock step): read it all rather than ask for every second since.
  if first - oldest > BUCKET_TTL_S then return rebuild(key, first) end
  local stale = {}
  for b = oldest, first - 1 do stale[#stale + 1] = b end
  local counts = redis.call('HMGET', key, unpack(stale))
  for j = 1, #counts do total = total - (tonumber(counts[j]) or 0) end
  redis.call('HDEL', key, unpack(stale))
  local live = {}
  for b = first, sec do live[#live + 1] = b end
  local present = redis.call('HMGET', key, unpack(live))
  oldest = -1
  for j = 1, #present do
    if present[j] then oldest = first + j - 1 break end
  end
  if oldest < 0 then
    redis.call('HDEL', key, 'n', 'o')
    return 0, -1
  end
  redis.call('HSET', key, 'n', total, 'o', oldest)
  return total, oldest
end
""".replace("BUCKET_TTL_S", str(BUCKET_TTL_S))

ADD_LUA = """
local function add(key, sec, amount)
  redis.call('HINCRBY', key, sec, amount)
  redis.call('HINCRBY', key, 'n', amount)
  redis.call('HSETNX', key, 'o', sec)
  redis.call('EXPIRE', key, BUCKET_TTL_S)
end
""".replace("BUCKET_TTL_S", str(BUCKET_TTL_S))

ADMIT_LUA = (
    WINDOW_LUA
    + ADD_LUA
    + """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now_ms = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local first = sec - 59
local lease_ms = tonumber(ARGV[2])
local n = #KEYS / 3

local out = {1, sec}
for i = 1, n do
  local rpm, tpm, par = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local req, req_oldest, tok, tok_oldest, busy = 0, -1, 0, -1, 0
  if rpm >= 0 then
    req, req_oldest = window(KEYS[3 * i - 2], first, sec)
    if req >= rpm then return {0, sec, i, 'rpm', req, req_oldest} end
  end
  if tpm >= 0 then
    tok, tok_oldest = window(KEYS[3 * i - 1], first, sec)
    if tok >= tpm then return {0, sec, i, 'tpm', tok, tok_oldest} end
  end
  if par >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3 * i], '-inf', now_ms - lease_ms)
    busy = redis.call('ZCARD', KEYS[3 * i])
    if busy >= par then return {0, sec, i, 'parallel', busy, -1} end
  end
  out[#out + 1] = req
  out[#out + 1] = req_oldest
  out[#out + 1] = tok
  out[#out + 1] = tok_oldest
  out[#out + 1] = busy
end
for i = 1, n do
  if tonumber(ARGV[3 * i]) >= 0 then add(KEYS[3 * i - 2], sec, 1) end
  if tonumber(ARGV[3 * i + 2]) >= 0 then
    redis.call('ZADD', KEYS[3 * i], now_ms, ARGV[1])
    redis.call('PEXPIRE', KEYS[3 * i], lease_ms)
  end
end
return out
"""
)

# KEYS: 2 per limit (tokens hash, parallel set). ARGV: call id, tokens, then per limit "1"/"0": has tpm, has parallel.
RELEASE_LUA = (
    ADD_LUA
    + """
local sec = tonumber(redis.call('TIME')[1])
local tokens = tonumber(ARGV[2])
for i = 1, #KEYS / 2 do
  if ARGV[1 + 2 * i] == '1' and tokens > 0 then add(KEYS[2 * i - 1], sec, tokens) end
  if ARGV[2 + 2 * i] == '1' then redis.call('ZREM', KEYS[2 * i], ARGV[1]) end
end
return 1
"""
)

Reply = list[int | str]


def limit_arg(value: int | None) -> int:
    """A limit as the scripts take it: -1 for none."""
    return -1 if value is None else int(value)


def decoded(reply: list[object]) -> Reply:
    """A script's reply as the scripts' Python twin returns it: numbers as they are, strings decoded."""
    return [v.decode() if isinstance(v, bytes) else v if isinstance(v, int | str) else str(v) for v in reply]


class LocalWindows:
    """The same algorithm for one process: used without Redis, and while Redis is down."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[str, dict[int, int]] = {}
        self._leases: dict[str, dict[str, float]] = {}

    def _window(self, key: str, sec: int) -> tuple[int, int]:
        buckets = self._buckets.get(key)
        if not buckets:
            return 0, -1
        for stale in [b for b in buckets if b < sec - (WINDOW_S - 1)]:
            del buckets[stale]
        return sum(buckets.values()), min(buckets, default=-1)

    def _in_flight(self, key: str, now_ms: float, lease_ms: int) -> int:
        leases = self._leases.setdefault(key, {})
        for call_id in [c for c, started in leases.items() if started <= now_ms - lease_ms]:
            del leases[call_id]
        return len(leases)

    def admit(self, keys: Sequence[str], args: Sequence[int | str]) -> Reply:
        """Same KEYS/ARGV and reply as ADMIT_LUA."""
        now = self._clock()
        sec, now_ms = int(now), now * 1000
        call_id, lease_ms = str(args[0]), int(args[1])
        out: Reply = [1, sec]
        for i in range(len(keys) // 3):
            rpm, tpm, par = (int(a) for a in args[2 + 3 * i : 5 + 3 * i])
            requests_key, tokens_key, parallel_key = keys[3 * i : 3 * i + 3]
            req, req_oldest = self._window(requests_key, sec) if rpm >= 0 else (0, -1)
            if rpm >= 0 and req >= rpm:
                return [0, sec, i + 1, "rpm", req, req_oldest]
            tok, tok_oldest = self._window(tokens_key, sec) if tpm >= 0 else (0, -1)
            if tpm >= 0 and tok >= tpm:
                return [0, sec, i + 1, "tpm", tok, tok_oldest]
            busy = self._in_flight(parallel_key, now_ms, lease_ms) if par >= 0 else 0
            if par >= 0 and busy >= par:
                return [0, sec, i + 1, "parallel", busy, -1]
            out += [req, req_oldest, tok, tok_oldest, busy]
        for i in range(len(keys) // 3):
            if int(args[2 + 3 * i]) >= 0:
                buckets = self._buckets.setdefault(keys[3 * i], {})
                buckets[sec] = buckets.get(sec, 0) + 1
            if int(args[4 + 3 * i]) >= 0:
                self._leases.setdefault(keys[3 * i + 2], {})[call_id] = now_ms
        return out

    def release(self, keys: Sequence[str], args: Sequence[int | str]) -> None:
        """Same KEYS/ARGV as RELEASE_LUA."""
        sec = int(self._clock())
        call_id, tokens = str(args[0]), int(args[1])
        for i in range(len(keys) // 2):
            if args[2 + 2 * i] == "1" and tokens > 0:
                buckets = self._buckets.setdefault(keys[2 * i], {})
                buckets[sec] = buckets.get(sec, 0) + tokens
            if args[3 + 2 * i] == "1":
                self._leases.get(keys[2 * i + 1], {}).pop(call_id, None)
