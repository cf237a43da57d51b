"""Ferry's streams in Redis: publish, publish-once for idempotent effects,
consumer groups created at 0, dead letters, the audit stream and per-subject locks.

Publishing is plain XADD of flat fields (see ferry.core.events)."""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from ferry.core.events import AuditRecord, DeadLetter, Event
from ferry.runtime.logging import get_logger, one_reason, scrub_fields
from ferry.runtime.settings import Settings

# The default of FERRY_STREAM_MAXLEN: trimming must never overtake the reclaim threshold.
STREAM_MAXLEN = 1_000_000
# How often one process trims a stream it writes to by age (at most; less for a short max age).
TRIM_EVERY_S = 60.0
ONCE_TTL_S = 30 * 24 * 3600

# Trim KEYS[1] to the entries of the last ARGV[1] ms by the server's clock (MINID, approximate:
# whole nodes only, so it costs next to nothing when there is nothing to trim).
_TRIM_OLD = """
local now = redis.call('TIME')
local minid = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
if minid <= 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', minid)
"""

_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
end
return false
"""

# Remove consumers that left no pending entries and have not even tried to read for IDLE ms (dead
# replicas: a live one polls every FERRY_POLL_MS). Checked and deleted in one atomic step, because
# XGROUP DELCONSUMER also deletes the consumer's pending entries.
_PRUNE = """
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['pending'] == 0 and info['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(removed, info['name'])
  end
end
return removed
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Extend a lock's expiry, only while it still holds the holder's token.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def connect_redis(url: str, *, cluster: bool = False, **options: Any) -> Any:
    """A client for URL: one server, or with CLUSTER a Redis Cluster that URL is a node of (the
    client finds the others and sends each key's commands to the node that serves its slot).
    OPTIONS: more of redis-py's connection options (socket_timeout, ...)."""
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, health_check_interval=30, **options)
    return redis.Redis.from_url(url, health_check_interval=30, **options)


def _fields(event: Event) -> dict[str, str]:
    """EVENT's stream fields, scrubbed: no secret reaches a stream, whoever reads it later."""
    return scrub_fields(event.to_fields())


class LockTimeout(RuntimeError):
    """A per-subject lock stayed taken longer than we wait; the entry is retried later."""


class LockLost(RuntimeError):
    """A lock expired (or was taken) while its holder still worked, e.g. while Redis was away
    longer than FERRY_LOCK_TTL_MS: the holder stops before its next effect, and the entry is
    retried (the effects already done are found done: promotion ids, fences, publish-once)."""


@dataclass(eq=False)
class Held:
    """A lock this process holds: renewed by the bus's keeper while the work goes on."""

    name: str
    key: str
    token: str
    renewed: float = field(default_factory=time.monotonic)
    lost: bool = False

    def check(self) -> None:
        """Raise LockLost if the lock is no longer ours."""
        if self.lost:
            raise LockLost(f"lock {self.name!r} was lost while the work went on; retried later")


class _Keeper:
    """One thread per Bus that renews every held lock each third of FERRY_LOCK_TTL_MS, so that a
    slow git push or forge call keeps its lock however long it takes, while a crashed holder's
    lock still expires after the TTL. Idle (blocked on a condition) while no lock is held."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.ttl_ms = bus.settings.lock_ttl_ms
        self.held: set[Held] = set()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.log = get_logger()

    def add(self, held: Held) -> None:
        with self.cond:
            self.held.add(held)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="lock-keeper", daemon=True)
                self.thread.start()
            self.cond.notify()

    def remove(self, held: Held) -> None:
        with self.cond:
            self.held.discard(held)

    def _run(self) -> None:
        every = self.ttl_ms / 3000
        while True:
            with self.cond:
                while not self.held:
                    self.cond.wait()
                due = [h for h in self.held if time.monotonic() - h.renewed >= every]
            for held in due:
                self._renew(held)
            time.sleep(every / 2)

    def _renew(self, held: Held) -> None:
        try:
            kept = self.bus._renew(keys=[held.key], args=[held.token, self.ttl_ms])
        except redis.RedisError as e:
            self.log.warning("could not renew a lock yet", lock=held.name, error=one_reason(str(e)))
            return
        if kept:
            held.renewed = time.monotonic()
            return
        with self.cond:
            still_working = held in self.held
        if still_working and not held.lost:
            held.lost = True
            self.log.warning(
                "lock lost while its work went on; the work stops before its next effect",
                lock=held.name,
            )


class Bus:
    """Synchronous access to Ferry's streams and state keys (thread-safe: one connection pool)."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        # Typed as Any: redis-py's stubs do not know the connection hands out bytes.
        self.redis: Any = connect_redis(url, cluster=settings.redis_cluster)
        self._once = self.redis.register_script(_PUBLISH_ONCE)
        self._unlock = self.redis.register_script(_UNLOCK)
        self._renew = self.redis.register_script(_RENEW)
        self._trim_old = self.redis.register_script(_TRIM_OLD)
        self._next_trim: dict[str, float] = {}
        self._keeper = _Keeper(self)
        self._mine = threading.local()
        self._prune = self.redis.register_script(_PRUNE)

    def stream(self, short: str) -> str:
        return self.settings.stream(short)

    def publish(self, event: Event) -> str:
        """XADD EVENT to its stream; returns the entry id."""
        stream = self.stream(event.on_stream)
        entry = self.redis.xadd(stream, _fields(event), **self.trimming())
        self.trim_old(stream)
        return entry.decode()

    def publish_once(self, key: str, event: Event) -> str | None:
        """XADD EVENT unless KEY was already used: the marker and the entry are written in one
        atomic step, so a redelivered message never publishes its effect twice."""
        return self.publish_fields_once(key, event.on_stream, _fields(event), event.event_id)

    def publish_fields_once(
        self, key: str, short: str, fields: dict[str, str], marker: str = "1"
    ) -> str | None:
        """XADD FIELDS to stream SHORT unless KEY was already used there (see publish_once). The
        marker lives in the stream's hash slot, so the script runs on one Redis Cluster node."""
        args: list[Any] = [ONCE_TTL_S, self.settings.stream_maxlen, marker]
        for k, v in fields.items():
            args += [k, v]
        stream = self.stream(short)
        entry = self._once(keys=[self._once_key(key, short), stream], args=args)
        self.trim_old(stream)
        return entry.decode() if entry else None

    def _once_key(self, key: str, short: str) -> str:
        return self.settings.near(self.stream(short), "once", key)

    def trimming(self) -> dict[str, Any]:
        """The XADD arguments that keep a stream within FERRY_STREAM_MAXLEN (approximately)."""
        return {"maxlen": self.settings.stream_maxlen, "approximate": True}

    def trim_old(self, stream: str) -> None:
        """Trim entries of STREAM older than FERRY_STREAM_MAX_AGE_S: at most once every
        TRIM_EVERY_S (or a tenth of the age) per stream and process, after a write to it."""
        age_s = self.settings.stream_max_age_s
        now = time.monotonic()
        if not age_s or now < self._next_trim.get(stream, 0.0):
            return
        self._next_trim[stream] = now + min(TRIM_EVERY_S, age_s / 10)
        try:
            self._trim_old(keys=[stream], args=[age_s * 1000])
        except redis.exceptions.NoPermissionError:
            # A producer whose Redis user may only add (docs/redis.md): the stream's other
            # writers trim it; this process stops asking.
            self._next_trim[stream] = math.inf

    def emit(self, event: Event) -> str | None:
        """Publish EVENT once under its own once key (see `once_key` on the event models), or
        plainly when it has none; None when it was published before."""
        key = getattr(event, "once_key", None)
        return self.publish_once(key, event) if key else self.publish(event)

    def forget_once(self, key: str, short: str) -> None:
        """Let KEY be published once more on stream SHORT (a failed effect that may be
        re-driven)."""
        self.redis.delete(self._once_key(key, short))

    def ensure_group(self, short: str, group: str) -> None:
        """Create GROUP on the stream at id 0 (MKSTREAM): a group created at `$` would skip the
        backlog published while no worker of this type ran."""
        try:
            self.redis.xgroup_create(self.stream(short), group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def prune_consumers(self, short: str, group: str, idle_ms: int) -> list[str]:
        """Forget consumers of dead replicas: no pending entries, idle longer than IDLE_MS."""
        removed = self._prune(keys=[self.stream(short)], args=[group, idle_ms])
        return [name.decode() for name in removed]

    def ack(self, short: str, group: str, *entry_ids: str) -> None:
        """Acknowledge ENTRY_IDS (one XACK for all of them)."""
        self.redis.xack(self.stream(short), group, *entry_ids)

    def dead_letter(
        self,
        short: str,
        group: str,
        entry_id: str,
        fields: dict[str, str],
        error: str,
        deliveries: int,
    ) -> None:
        """Move an entry to the DLQ, then acknowledge it. The payload keeps the whole entry; the
        reason (ERROR) is one line of bounded length (see DeadLetter). The letter is published
        once under its id, so a replica that dies between the two steps leaves one letter and
        the entry pending: its redelivery finds the letter there and only acknowledges (the DLQ
        and the entry's stream may live on different Redis Cluster nodes)."""
        letter = DeadLetter(
            event_id=f"dlq:{group}:{short}:{entry_id}",
            stream=self.stream(short),
            entry_id=entry_id,
            payload=fields,
            error=one_reason(error),
            deliveries=deliveries,
            worker=group,
        )
        self.publish_once(letter.event_id, letter)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream(short), group, entry_id)
            pipe.delete(self._error_key(group, short, entry_id))
            pipe.execute()
        self.trim_old(self.stream("dlq"))

    def audit(
        self,
        worker: str,
        action: str,
        subject: str,
        outcome: str,
        reason: str,
        caused_by: str | None = None,
        *,
        pipe: Any = None,
    ) -> None:
        """Record a decision on the audit stream (PIPE: queue the XADD there, with other writes
        the caller executes in one round trip)."""
        record = AuditRecord(
            worker=worker,
            action=action,
            subject=subject,
            outcome=outcome,
            reason=reason,
            caused_by=caused_by,
        )
        if pipe is None:
            self.publish(record)
            return
        stream = self.stream(record.on_stream)
        pipe.xadd(stream, _fields(record), **self.trimming())
        self.trim_old(stream)

    def _error_key(self, group: str, short: str, entry_id: str) -> str:
        # In the entry's stream's slot: acknowledged and forgotten in one transaction.
        return self.settings.near(self.stream(short), "error", group, entry_id)

    def remember_error(self, group: str, short: str, entry_id: str, error: str) -> None:
        self.redis.set(self._error_key(group, short, entry_id), one_reason(error), ex=7 * 24 * 3600)

    def last_error(self, group: str, short: str, entry_id: str) -> str | None:
        value = self.redis.get(self._error_key(group, short, entry_id))
        return value.decode() if value else None

    @contextlib.contextmanager
    def lock(self, name: str, *, wait_s: float = 10.0) -> Iterator[Held]:
        """Serialise decisions about one subject across replicas: a short Redis lock with an
        expiry (a crashed holder frees it after FERRY_LOCK_TTL_MS) and a token so only the holder
        renews and releases it. While the block runs the lock is renewed, so a slow git push or
        forge call keeps it; call `check_locks` (or `Held.check`) before an effect to stop if it
        was lost all the same."""
        key = self.settings.key("lock", name)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        while not self.redis.set(key, token, nx=True, px=self.settings.lock_ttl_ms):
            if time.monotonic() > deadline:
                raise LockTimeout(f"lock {name!r} still held after {wait_s:.0f}s")
            time.sleep(0.01)
        held = Held(name, key, token)
        mine = self._held_here()
        mine.append(held)
        self._keeper.add(held)
        try:
            yield held
        finally:
            self._keeper.remove(held)
            mine.remove(held)
            self._unlock(keys=[key], args=[token])

    def check_locks(self) -> None:
        """Raise LockLost if a lock this thread holds expired or was taken meanwhile: called
        before an effect that must not be done twice at once (a push, a pull request, a merge)."""
        for held in self._held_here():
            held.check()

    def _held_here(self) -> list[Held]:
        if not hasattr(self._mine, "held"):
            self._mine.held = []
        held: list[Held] = self._mine.held
        return held
