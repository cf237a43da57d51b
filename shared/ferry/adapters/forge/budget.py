"""The forge request budget, kept in Redis and shared by every replica that uses one token.

Three sliding windows (requests per hour, content-creating requests per minute and per hour) and
one "blocked until" time set from a 429, a secondary-limit 403 or an exhausted primary limit.
Each request takes a slot atomically (one Lua script, Redis's own clock), so replicas on several
machines together stay under the limits, and no replica sends anything before a Retry-After
another replica was told has passed.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis

from ferry.adapters.forge.base import TransientForgeError

# KEYS: blocked-until, requests/hour, writes/minute, writes/hour
# ARGV: is_write, requests/hour limit, writes/minute limit, writes/hour limit, member, take
# Returns 0 when the slot was taken (or, with take=0, would be), else the wait in ms.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local blocked = tonumber(redis.call('GET', KEYS[1]) or '0')
if blocked > now then return blocked - now end
local function wait(key, window, limit)
  if limit <= 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) < limit then return 0 end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now + 1
end
local w = wait(KEYS[2], 3600000, tonumber(ARGV[2]))
if ARGV[1] == '1' then
  w = math.max(w, wait(KEYS[3], 60000, tonumber(ARGV[3])),
               wait(KEYS[4], 3600000, tonumber(ARGV[4])))
end
if w > 0 or ARGV[6] ~= '1' then return w end
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('PEXPIRE', KEYS[2], 3600000)
if ARGV[1] == '1' then
  redis.call('ZADD', KEYS[3], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[3], 60000)
  redis.call('ZADD', KEYS[4], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[4], 3600000)
end
return 0
"""

# KEYS: blocked-until; ARGV: seconds to wait from now. Only ever moves the time later.
_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + math.floor(tonumber(ARGV[1]) * 1000)
if until_ms > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], until_ms, 'PX', math.max(1, until_ms - now))
end
return until_ms
"""


@dataclass(frozen=True)
class Limits:
    """0 means no limit of that kind."""

    writes_per_minute: int
    writes_per_hour: int
    requests_per_hour: int


# What each provider documents (GitHub: 5,000 requests an hour per token; at most 80
# content-creating requests a minute and 500 an hour). GitLab.com allows 2,000 authenticated API
# requests a minute and documents no separate write limit; Gitea and Forgejo set none by default.
DEFAULT_LIMITS = {
    "github": Limits(writes_per_minute=80, writes_per_hour=500, requests_per_hour=5000),
    "gitlab": Limits(writes_per_minute=0, writes_per_hour=0, requests_per_hour=120_000),
    "gitea": Limits(writes_per_minute=0, writes_per_hour=0, requests_per_hour=0),
}


class Budget:
    """The shared budget of one forge token, under KEY_PREFIX in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        key_prefix: str,
        limits: Limits,
        *,
        max_wait_s: float = 30.0,
    ) -> None:
        self.redis = client
        self.limits = limits
        self.max_wait_s = max_wait_s
        # One script takes a slot in all four: they share one Redis Cluster hash slot.
        tag = "{" + key_prefix + "budget}"
        self.keys = [
            f"{key_prefix}{tag}:blocked-until",
            f"{key_prefix}{tag}:requests-hour",
            f"{key_prefix}{tag}:writes-minute",
            f"{key_prefix}{tag}:writes-hour",
        ]
        self._acquire = client.register_script(_ACQUIRE)
        self._block = client.register_script(_BLOCK)

    def _ask(self, write: bool, take: bool) -> float:
        ms = self._acquire(
            keys=self.keys,
            args=[
                "1" if write else "0",
                self.limits.requests_per_hour,
                self.limits.writes_per_minute,
                self.limits.writes_per_hour,
                uuid.uuid4().hex,
                "1" if take else "0",
            ],
        )
        return int(ms) / 1000

    def acquire(self, *, write: bool) -> None:
        """Take one request (a content-creating one when WRITE) from the budget, waiting while
        it is spent; after max_wait_s, raise TransientForgeError with the time left."""
        deadline = time.monotonic() + self.max_wait_s
        while True:
            wait = self._ask(write, take=True)
            if wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                raise TransientForgeError(
                    f"forge budget spent: next request allowed in {wait:.0f} s",
                    retry_after=wait,
                )
            time.sleep(min(wait, 1.0))

    def wait_s(self, *, write: bool = True) -> float:
        """Seconds until a request (a content-creating one when WRITE) is allowed; 0: now."""
        return max(0.0, self._ask(write, take=False))

    def block(self, seconds: float) -> None:
        """No request with this token before SECONDS from now, from any replica."""
        if seconds > 0:
            self._block(keys=self.keys[:1], args=[seconds])
