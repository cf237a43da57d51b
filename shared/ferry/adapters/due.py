"""Due times in Redis: a sorted set of members scored by when they are due, and a wake-up list,
so that a worker sleeps until the earliest one instead of scanning on a timer.

Any replica may claim a due member; the claim is atomic (ZREM), so exactly one handles it.
Adding a member pushes a wake-up, so a replica asleep until a later time looks again."""

from __future__ import annotations

from datetime import datetime

from ferry.adapters.bus import Bus

_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local claimed = {}
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then table.insert(claimed, member) end
end
return claimed
"""

# A replica never sleeps longer than this, so that it notices a stop request soon enough.
MAX_SLEEP_S = 2.0


class DueTimes:
    """The due times of one worker type (KEY <prefix>due:<name>, wake-ups at ...:wake)."""

    def __init__(self, bus: Bus, name: str) -> None:
        self.bus = bus
        self.key = bus.settings.key("due", name)
        self.wake_key = bus.settings.key("due", name, "wake")
        self._claim = bus.redis.register_script(_CLAIM)

    def set(self, member: str, when: datetime) -> None:
        """MEMBER is due at WHEN (replacing an earlier due time of the same member)."""
        with self.bus.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key, {member: when.timestamp()})
            pipe.rpush(self.wake_key, "1")
            pipe.ltrim(self.wake_key, -16, -1)
            pipe.execute()

    def cancel(self, *members: str) -> None:
        if members:
            self.bus.redis.zrem(self.key, *members)

    def when(self, member: str) -> float | None:
        score = self.bus.redis.zscore(self.key, member)
        return float(score) if score is not None else None

    def claim(self, now: datetime, limit: int = 100) -> list[str]:
        """The members due at NOW, removed: the caller handles them (or sets them again)."""
        return [m.decode() for m in self._claim(keys=[self.key], args=[now.timestamp(), limit])]

    def sleep(self, now: datetime) -> None:
        """Block until the earliest due time, a wake-up, or MAX_SLEEP_S, whichever comes first."""
        first = self.bus.redis.zrange(self.key, 0, 0, withscores=True)
        wait = MAX_SLEEP_S if not first else first[0][1] - now.timestamp()
        wait = min(max(wait, 0.0), MAX_SLEEP_S)
        if wait < 0.01:
            return
        self.bus.redis.blpop([self.wake_key], timeout=wait)
