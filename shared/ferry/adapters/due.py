"""Due times in Redis, the one mechanism every worker's timers use: a sorted set of members
scored by when each is next looked at, a lease per claimed member, and a wake-up list, so that a
replica sleeps until the earliest due time instead of scanning on a timer.

A claim is a lease: the member's score moves to the lease's end and a lease key holds the
claimer's token. Of many replicas one handles a member; one that dies between claim and handling
leaves it due again when the lease ends, so no due time is lost. While a member is leased, a due
time set for it (by its holder or by an event elsewhere) is kept aside and applied when the holder
releases it, so a claimer never overwrites it with its lease. Setting a due time pushes a wake-up,
so a replica asleep until a later time looks again (removing one does not: nothing becomes due
sooner)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferry.adapters.bus import Bus

# While sleeping, the stop flag is checked this often.
STOP_CHECK_S = 0.5

# KEYS: zset, held hash; ARGV: now, lease_ms, limit, token, lease key prefix.
# A due member is ours when its lease key was free (what was kept aside for it is dropped: this
# handling looks at it afresh); one leased by another replica moves to its lease's end, so nobody
# spins on it.
_CLAIM = """
local out = {}
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  local lease = ARGV[5] .. member
  if redis.call('SET', lease, ARGV[4], 'NX', 'PX', ARGV[2]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]) / 1000, member)
    redis.call('HDEL', KEYS[2], member)
    table.insert(out, member)
  else
    local left = math.max(redis.call('PTTL', lease), 1)
    redis.call('ZADD', KEYS[1], now + left / 1000, member)
  end
end
return out
"""

# KEYS: zset, held hash, lease key, wake list; ARGV: member, when ('' = nothing due), token.
# The holder's word (its token) is final: it ends the lease. Another's word while the member is
# leased waits aside for the release.
_SET = """
local member, when = ARGV[1], ARGV[2]
local lease = redis.call('GET', KEYS[3])
if lease and lease ~= ARGV[3] then
  redis.call('HSET', KEYS[2], member, when)
else
  if lease then redis.call('DEL', KEYS[3]) end
  redis.call('HDEL', KEYS[2], member)
  if when == '' then redis.call('ZREM', KEYS[1], member)
  else redis.call('ZADD', KEYS[1], tonumber(when), member) end
end
if when ~= '' then
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], -16, -1)
end
return 1
"""

# KEYS: zset, held hash, lease key, wake list; ARGV: member, token.
# The holder is done: apply what was set aside while it held the member (nothing: not due).
_RELEASE = """
local member = ARGV[1]
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[3])
local when = redis.call('HGET', KEYS[2], member)
redis.call('HDEL', KEYS[2], member)
if not when or when == '' then redis.call('ZREM', KEYS[1], member)
else
  redis.call('ZADD', KEYS[1], tonumber(when), member)
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], -16, -1)
end
return 1
"""

# KEYS: zset, lease key; ARGV: member, token, lease_ms, now.
_RENEW = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[3]) / 1000, ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Claim:
    """Members claimed together, and the token that holds their leases."""

    token: str
    members: list[str]


def _epoch(when: datetime | float) -> float:
    return when.timestamp() if isinstance(when, datetime) else float(when)


class DueTimes:
    """The due times of one worker type: KEY <prefix>due:<name> (sorted set); beside it, in its
    Redis Cluster hash slot (the scripts touch them together), due times set while leased at
    <prefix>due:{KEY}:held, wake-ups at ...:wake and leases at ...:lease:<member>. ANCHOR, when
    given, is the key whose slot they all share instead (the preview records, written in one
    transaction with their due times)."""

    def __init__(self, bus: Bus, name: str, anchor: str | None = None) -> None:
        self.redis: Any = bus.redis
        settings = bus.settings
        if anchor is None:
            self.key = settings.key("due", name)
            anchor = self.key
        else:
            self.key = settings.near(anchor, "due", name)
        self.held_key = settings.near(anchor, "due", name, "held")
        self.wake_key = settings.near(anchor, "due", name, "wake")
        self._lease_prefix = settings.near(anchor, "due", name, "lease", "")
        self._scripts: dict[str, Any] = {}

    def _script(self, text: str) -> Any:
        """Script TEXT, registered when first used: a decision's DueStore only queues an EVAL."""
        if text not in self._scripts:
            self._scripts[text] = self.redis.register_script(text)
        return self._scripts[text]

    def lease_key(self, member: str) -> str:
        return self._lease_prefix + member

    def _keys(self, member: str) -> list[str]:
        return [self.key, self.held_key, self.lease_key(member), self.wake_key]

    def set(
        self,
        member: str,
        when: datetime | float | None,
        *,
        token: str | None = None,
        pipe: Any = None,
    ) -> None:
        """Look at MEMBER again at WHEN (None: nothing is due for it). With TOKEN (the holder's
        claim), this is the holder's last word about it: its lease ends. PIPE: queue the change in
        that pipeline or transaction instead of running it now."""
        args = [member, "" if when is None else repr(_epoch(when)), token or ""]
        if pipe is None:
            self._script(_SET)(keys=self._keys(member), args=args)
        else:
            # EVAL, not the registered script: redis-py checks a pipeline's scripts with SCRIPT
            # EXISTS before running it, a round trip of its own; the server caches it all the same.
            # (As a plain command: redis-py's cluster pipeline refuses its eval method.)
            pipe.execute_command("EVAL", _SET, 4, *self._keys(member), *args)

    def cancel(self, *members: str) -> None:
        """Nothing is due for MEMBERS any more."""
        for member in members:
            self.set(member, None)

    def claim(self, now: datetime | float, lease_ms: int, limit: int = 100) -> Claim:
        """Lease the members due at NOW for LEASE_MS: the caller handles each, then ends its lease
        with `release` or `set(..., token=)`; if it dies first, the member is due again when the
        lease ends."""
        token = uuid.uuid4().hex
        members = self._script(_CLAIM)(
            keys=[self.key, self.held_key],
            args=[repr(_epoch(now)), lease_ms, limit, token, self._lease_prefix],
        )
        return Claim(token, [m.decode() for m in members])

    def release(self, member: str, token: str) -> bool:
        """Handled: MEMBER is next due when it was set to while held (not at all if it was not).
        False when TOKEN no longer held it (the lease ran out and another replica took it)."""
        return bool(self._script(_RELEASE)(keys=self._keys(member), args=[member, token]))

    def renew(self, member: str, token: str, lease_ms: int, now: datetime | float) -> bool:
        """Hold MEMBER for LEASE_MS more from NOW, if TOKEN still holds it."""
        args = [member, token, lease_ms, repr(_epoch(now))]
        return bool(self._script(_RENEW)(keys=[self.key, self.lease_key(member)], args=args))

    def when(self, member: str) -> float | None:
        """When MEMBER is next looked at (epoch seconds; a lease's end while it is handled)."""
        score = self.redis.zscore(self.key, member)
        return float(score) if score is not None else None

    def next_due(self) -> float | None:
        """When the earliest member is due (epoch seconds), or None."""
        first = self.redis.zrange(self.key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def members(self) -> list[str]:
        return [m.decode() for m in self.redis.zrange(self.key, 0, -1)]

    def wait(self, longest_s: float, stop: threading.Event) -> None:
        """Block until the earliest due time, a wake-up, LONGEST_S or STOP, whichever is first."""
        due = self.next_due()
        deadline = time.time() + longest_s if due is None else min(due, time.time() + longest_s)
        while not stop.is_set():
            left = deadline - time.time()
            if left < 0.005:
                return
            # A blocking pop of one wake-up: it returns as soon as a due time is set anywhere.
            if self.redis.blpop([self.wake_key], timeout=min(left, STOP_CHECK_S)) is not None:
                return
