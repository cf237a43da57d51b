"""Ferry's streams in Redis: publish, publish-once for idempotent effects,
consumer groups created at 0, dead letters, the audit stream and per-subject locks.

Publishing is plain XADD of flat fields (see ferry.core.events)."""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from ferry.adapters import pipelined
from ferry.core.events import AuditRecord, DeadLetter, Event
from ferry.runtime import failpoints
from ferry.runtime.logging import get_logger, one_reason, scrub_fields
from ferry.runtime.settings import Settings

# The default of FERRY_STREAM_MAXLEN: trimming must never overtake the reclaim threshold.
STREAM_MAXLEN = 1_000_000
# How often one process trims a stream it writes to by age (at most; less for a short max age).
TRIM_EVERY_S = 60.0
ONCE_TTL_S = 30 * 24 * 3600
# How long the reads kept with a lock across a batch's decisions (Bus.keeping) serve: a bound on
# how late a decision sees what others wrote without the lock (a hold, a check's result).
KEPT_READS_S = 0.05

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


# Claim for consumer ARGV[2] of group ARGV[1] the entries of stream KEYS[1] pending longer than
# ARGV[3] ms (their replica died), from id ARGV[4] on, up to ARGV[5] of them. An entry trimmed from
# the stream meanwhile is not claimed (XCLAIM and XAUTOCLAIM would drop it from the group in the
# same step) but named apart and left pending until its dead letter is written. One atomic step,
# so nothing is trimmed between the look and the claim. Returns {the last id looked at, or '' at
# the end; {id, fields, deliveries} per claimed entry; the ids of the trimmed ones}.
_CLAIM_IDLE = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
local live, deliveries, gone = {}, {}, {}
for _, p in ipairs(pending) do
  if #redis.call('XRANGE', KEYS[1], p[1], p[1]) == 0 then
    table.insert(gone, p[1])
  else
    table.insert(live, p[1])
    deliveries[p[1]] = p[4] + 1
  end
end
local claimed = {}
if #live > 0 then
  for _, e in ipairs(redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(live))) do
    table.insert(claimed, {e[1], e[2], deliveries[e[1]]})
  end
end
local last = ''
if #pending == tonumber(ARGV[5]) then last = pending[#pending][1] end
return {last, claimed, gone}
"""

# Of the ids ARGV[3..], those still pending on consumer ARGV[2] of group ARGV[1] and still in the
# stream KEYS[1] have their idle time reset (XCLAIM JUSTID: no delivery counted), so no other
# replica claims an entry this one is still working on. One pending on another consumer (taken
# over) is left to it; a trimmed one is left pending (XCLAIM would drop it from the group).
# Returns {the ids kept, the ids taken over}.
_KEEP_CLAIMED = """
local args, taken = {KEYS[1], ARGV[1], ARGV[2], 0}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 then
    if p[1][2] ~= ARGV[2] then
      table.insert(taken, ARGV[i])
    elseif #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) > 0 then
      table.insert(args, ARGV[i])
    end
  end
end
local kept = {}
if #args > 4 then
  table.insert(args, 'JUSTID')
  kept = redis.call('XCLAIM', unpack(args))
end
return {kept, taken}
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


class LockBusy(LockTimeout):
    """A lock whose SET NX went out with other commands (see `Bus.lock`) was found held by
    another: the work done meanwhile only read, and is done again once the lock is free."""


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
    # Queued: its SET NX waits for this thread's next round trip. False once the answer says
    # another holds it.
    taken: bool | None = True
    bus: Bus | None = None

    def check(self) -> None:
        """Raise LockLost if the lock is no longer ours (LockBusy if it never was: its queued
        SET NX, sent now if it was still waiting, found another holder)."""
        if self.taken is None and self.bus is not None:
            self.bus.flush()
        if self.taken is False:
            raise LockBusy(f"lock {self.name!r} is held by another")
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


class _Queued(threading.local):
    """One thread's writes waiting for its next round trip (see `Bus.deferring`)."""

    def __init__(self) -> None:
        self.depth = 0
        self.ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        # Locks whose SET NX is queued: (index of the op, the lock).
        self.acquiring: list[tuple[int, Held]] = []
        # Locks whose release is queued: renewed by the keeper until it is sent.
        self.releasing: list[Held] = []
        # Whose writes the ops are (`Bus.owning`): (index of the first op, its owner), in
        # order; the owner of the writes queued now.
        self.spans: list[tuple[int, Any]] = []
        self.owner: Any = None
        # For each round trip that carried queued writes, in order: did it succeed? (Cleared
        # when the outermost `deferring` block ends, and as a `reading_ahead` block ends.)
        self.fates: list[bool] = []
        # XACKs queued behind their writes (see `Bus.ack`): (stream's short name, group, entry
        # ids, index of the XACK's op); the first `atomic` ops go in one MULTI/EXEC.
        self.acks: list[tuple[str, str, tuple[str, ...], int]] = []
        self.atomic = 0
        # Inside `Bus.keeping`: the lock kept after its work, and the reads made under it
        # (`Bus.kept_reads`: an object with `apply(name, args, kwargs)` for each queued write).
        self.keeping = False
        self.kept: Held | None = None
        self.reads: Any = None
        self.reads_until = 0.0  # monotonic: read again after that


class _Recorder:
    """A pipeline's face that queues the calls made on it (replayed on a real one later)."""

    def __init__(self, queued: _Queued) -> None:
        self._queued = queued

    def __getattr__(self, name: str) -> Callable[..., _Recorder]:
        def queue(*args: Any, **kwargs: Any) -> _Recorder:
            q = self._queued
            q.ops.append((name, args, kwargs))
            if q.reads is not None:
                q.reads.apply(name, args, kwargs)
            return self

        return queue


class _Ordered:
    """The Redis client as the bus hands it out: a command sent directly first sends the writes
    this thread has queued, so that the server sees every command in the order the code made it,
    queued or not. (Scripts registered through it go through it too.)"""

    def __init__(self, client: Any, bus: Bus) -> None:
        self._client = client
        self._bus = bus

    def __getattr__(self, name: str) -> Any:
        q = self._bus._queued
        q.reads = None  # a command sent directly may change what was read: read again
        if q.ops:
            self._bus.flush()
        return getattr(self._client, name)

    def register_script(self, script: str) -> Any:
        from redis.commands.core import Script

        return Script(cast(Any, self), script)


@dataclass
class _ReadAhead:
    """A read of new entries that rides with a batch's XACK, or with its first round trip when
    EARLY (see `Bus.reading_ahead`)."""

    stream: str
    group: str
    count: int
    more: Callable[[], bool]
    answers: list[Any]
    early: bool = False
    sent: bool = False  # the read went out

    def found(self) -> bool:
        """Did the read bring entries (an empty XREADGROUP answers nil)?"""
        return any(self.answers)


def _cross_slot(error: Exception) -> bool:
    return "CROSSSLOT" in str(error) or "same slot" in str(error)


class Bus:
    """Synchronous access to Ferry's streams and state keys (thread-safe: one connection pool)."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self._client: Any = connect_redis(url, cluster=settings.redis_cluster)
        self._queued = _Queued()
        # This thread's connection for its round trips (`pipelined.held`).
        self._conn = threading.local()
        # May a transaction span hash slots (the server is not in cluster mode)? None: not
        # asked yet.
        self._atomic: bool | None = None
        # Typed as Any: redis-py's stubs do not know the connection hands out bytes. On a
        # cluster nothing is ever queued (see `deferring`): the client itself.
        self.redis: Any = self._client if settings.redis_cluster else _Ordered(self._client, self)
        self._once = self.redis.register_script(_PUBLISH_ONCE)
        self._unlock = self.redis.register_script(_UNLOCK)
        self._renew = self.redis.register_script(_RENEW)
        self._trim_old = self.redis.register_script(_TRIM_OLD)
        self._next_trim: dict[str, float] = {}
        self._keeper = _Keeper(self)
        self._mine = threading.local()
        # This thread's `reading_ahead`, if any.
        self._ahead = threading.local()
        self._prune = self.redis.register_script(_PRUNE)
        self._claim_idle = self.redis.register_script(_CLAIM_IDLE)
        self._keep_claimed = self.redis.register_script(_KEEP_CLAIMED)

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

    def claim_idle(
        self, short: str, group: str, after: str | None, count: int
    ) -> tuple[str | None, list[tuple[str, Mapping[Any, Any], int]], list[str]]:
        """Claim for this replica the entries of SHORT pending in GROUP longer than
        FERRY_CLAIM_IDLE_MS, after id AFTER (None: from the start), up to COUNT of them: (the id
        to go on after, None once all were looked at; the claimed entries with their fields and
        delivery counts; the ids of entries trimmed from the stream while pending, which stay
        pending until `dead_letter` acknowledges them)."""
        last, claimed, gone = self._claim_idle(
            keys=[self.stream(short)],
            args=[
                group,
                self.settings.consumer,
                self.settings.claim_idle_ms,
                "-" if after is None else f"({after}",
                count,
            ],
        )
        entries: list[tuple[str, Mapping[Any, Any], int]] = [
            (i.decode(), dict(zip(fields[::2], fields[1::2], strict=True)), int(n))
            for i, fields, n in claimed
        ]
        return last.decode() or None, entries, [i.decode() for i in gone]

    def keep_claimed(
        self, short: str, group: str, entry_ids: list[str]
    ) -> tuple[list[str], list[str]]:
        """Reset the idle time of ENTRY_IDS, entries of SHORT this replica is working on, without
        counting a delivery, so that no other replica claims them: (the ids kept, still pending
        here and in the stream; the ids another replica took over, left to it)."""
        kept, taken = self._keep_claimed(
            keys=[self.stream(short)], args=[group, self.settings.consumer, *entry_ids]
        )
        return [i.decode() for i in kept], [i.decode() for i in taken]

    def ack(self, short: str, group: str, *entry_ids: str) -> None:
        """Acknowledge ENTRY_IDS (one XACK for all of them), after the writes this thread has
        queued, in the same round trip; and, inside `reading_ahead`, the next new entries. When
        an early read ahead already brought the next entries, the XACK is queued instead, behind
        the writes, and goes with the next round trip this thread makes (the next entries' first,
        as a rule) in one MULTI/EXEC with the writes before it, in front of that trip's own
        commands: an entry at a time then costs one round trip, not two."""
        stream = self.stream(short)
        ahead = getattr(self._ahead, "read", None)
        if ahead is not None and (ahead.stream != stream or ahead.group != group):
            ahead = None
        q = self._queued
        if ahead is not None and ahead.sent and ahead.found() and q.depth and self._atomic:
            self.write().xack(stream, group, *entry_ids)
            q.acks.append((short, group, entry_ids, len(q.ops) - 1))
            q.atomic = len(q.ops)
            return
        if ahead is not None and (ahead.sent or not ahead.more()):
            ahead = None
        if ahead is not None:
            ahead.sent = True

        def ack_then_read(pipe: Any) -> None:
            pipe.xack(stream, group, *entry_ids)
            if ahead is not None:
                pipe.xreadgroup(group, self.settings.consumer, {stream: ">"}, count=ahead.count)

        try:
            answers = self.round_trip(ack_then_read, atomic=True)
        except pipelined.ExecFailed as e:
            self._not_acked(short, group, entry_ids, e, ahead)
            raise
        if ahead is not None:
            ahead.answers.append(answers[1])

    def _not_acked(
        self,
        short: str,
        group: str,
        entry_ids: tuple[str, ...],
        failed: pipelined.ExecFailed,
        ahead: _ReadAhead | None,
    ) -> None:
        """A queued write failed as the transaction with the XACK of ENTRY_IDS ran (WRONGTYPE: a
        key of another type; a script's error): the entries whose write it was (see `owning`:
        (entry id, deliveries)) are put back in this consumer's pending list with their count
        (XCLAIM FORCE), with the error noted, to be redelivered, then dead-lettered, as if not
        acknowledged; `failed.pending` names them. The next entries read after the XACK are
        kept for the caller as usual."""
        failed.pending = []
        queued: int = failed.queued
        if queued in failed.failed:
            failed.pending = list(entry_ids)  # the XACK itself failed: nothing was acknowledged
            return
        reopen = self._acked_but_failed([(short, group, entry_ids, queued)], failed)
        self._reopen(reopen, failed)
        failed.pending = [entry_id for _, _, entry_id, _ in reopen]
        read = failed.answers[queued + 1] if ahead is not None else None
        if read is not None and not isinstance(read, Exception):
            ahead.answers.append(read)  # type: ignore[union-attr]

    @contextlib.contextmanager
    def reading_ahead(
        self, short: str, group: str, count: int, more: Callable[[], bool], *, early: bool = False
    ) -> Iterator[list[Any]]:
        """While the block runs, this thread's XACK of SHORT for GROUP (a batch's last round
        trip) also reads the next COUNT new entries for this consumer, after the XACK in the
        same round trip (XREADGROUP without BLOCK), when MORE() still says so: the block gets a
        list where that read's answer lands, for the caller to handle next. EARLY (for quick
        work: the entries read are this replica's while the batch is handled): the read goes
        with the first round trip this thread makes in the block instead, after its commands,
        so that the batch's XACK, when that read brought entries, can wait for the next batch's
        first round trip (`ack`; inside a `deferring` block that spans both batches). Not on a
        Redis Cluster."""
        answers: list[Any] = []
        if self.settings.redis_cluster:
            yield answers
            return
        self._ahead.read = _ReadAhead(self.stream(short), group, count, more, answers, early)
        try:
            yield answers
        finally:
            self._ahead.read = None
            self._queued.fates.clear()  # the batch's marks (`mark`) are done with

    # --- writes queued for the next round trip ---------------------------------------------

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """While the block runs, the writes this thread makes through `write`/`writes` (those
        that need no answer: evidence, the audit record, the due time) and its locks' releases
        are queued and sent in front of the next round trip it makes (`round_trip`: a batched
        read, an XACK: then in one MULTI/EXEC); any other command sends them first. So the server
        sees every command in the order the code made it, and a decision's writes cost no round
        trip of their own. Whatever is still queued is sent when the block ends. On a Redis
        Cluster, where commands to different nodes keep no order between them, nothing is
        queued."""
        q = self._queued
        if self.settings.redis_cluster:
            yield
            return
        q.depth += 1
        try:
            yield
        except BaseException:
            q.depth -= 1
            if q.depth == 0:  # the writes made before the failure, as if sent at once
                with contextlib.suppress(Exception):
                    self.flush()
                q.fates.clear()
            raise
        q.depth -= 1
        if q.depth == 0:
            try:
                self.flush()
            finally:
                q.fates.clear()

    def write(self) -> Any:
        """Where a write that needs no answer goes: queued while this thread is `deferring`,
        else the client (sent now)."""
        q = self._queued
        return _Recorder(q) if q.depth else self.redis

    @contextlib.contextmanager
    def writes(self) -> Iterator[Any]:
        """A pipeline for writes that need no answer: queued while this thread is `deferring`,
        else executed in one round trip when the block ends."""
        q = self._queued
        if q.depth:
            yield _Recorder(q)
            return
        with self.redis.pipeline(transaction=False) as pipe:
            yield pipe
            pipe.execute()

    def round_trip(self, build: Callable[[Any], None], *, atomic: bool = False) -> list[Any]:
        """The commands BUILD(pipe) queues on a pipeline, sent with this thread's queued writes
        in front of them; returns the answers to BUILD's commands. ATOMIC: in one MULTI/EXEC,
        so that BUILD's commands (an XACK) run only if the server accepted every queued write (a
        write refused as it is queued, out of memory or not permitted, aborts them all); a
        server in cluster mode refuses a transaction across hash slots: there the writes go in
        one round trip and BUILD's commands in the next. Queued XACKs (`ack`) go in one
        MULTI/EXEC with the writes before them, whatever ATOMIC says. Inside an early
        `reading_ahead` whose read has not gone yet, it goes last in this round trip."""
        ahead = getattr(self._ahead, "read", None)
        if ahead is None or not ahead.early or ahead.sent or not ahead.more():
            return self._round_trip(build, atomic)
        ahead.sent = True

        def then_read(pipe: Any) -> None:
            build(pipe)
            pipe.xreadgroup(
                ahead.group, self.settings.consumer, {ahead.stream: ">"}, count=ahead.count
            )

        answers = self._round_trip(then_read, atomic)
        ahead.answers.append(answers.pop())
        return answers

    def _round_trip(self, build: Callable[[Any], None], atomic: bool) -> list[Any]:
        if not self._queued.ops:
            return self._exchange(build, [], transaction=False)
        if atomic and self._atomic is None:
            self._atomic = not self._cluster_mode()
        if atomic and self._atomic:
            try:
                return self._send(build, transaction=True)
            except redis.ResponseError as e:
                if not _cross_slot(e):
                    raise
                self._atomic = False  # the transaction was refused whole: nothing ran
        if atomic:
            self._send(lambda _: None, transaction=False)
            return self._round_trip(build, False)
        return self._send(build, transaction=False)

    def _cluster_mode(self) -> bool:
        """Is the server in cluster mode (asked once, with a command every worker's Redis user
        may send)? When in doubt, yes."""
        try:
            self._client.execute_command("CLUSTER SLOTS")
        except redis.ResponseError as e:
            return "disabled" not in str(e)
        return True

    def _send(self, build: Callable[[Any], None], *, transaction: bool) -> list[Any]:
        q = self._queued
        try:
            for held in q.releasing:
                # Its work's writes are queued before its release: not sent under a lost lock.
                held.check()
        except LockLost:
            self._drop()
            raise
        ops, acquiring, releasing, acks = q.ops, q.acquiring, q.releasing, q.acks
        reopen: list[tuple[str, str, str, int]] = []
        failure: pipelined.ExecFailed | None = None
        try:
            answers = self._exchange(
                build, ops, transaction=transaction, prefix=0 if transaction else q.atomic
            )
        except pipelined.ExecFailed as e:
            # It ran, all but the failed commands: say whose writes those were.
            e.queued = len(ops)
            e.owners = self._owners([n for n in e.failed if n < len(ops)])
            reopen = self._acked_but_failed(acks, e)
            if transaction:
                self._drop()
                self._reopen(reopen, e)
                raise
            answers, failure = e.answers, e  # only queued writes failed: the others ran
        except redis.ResponseError as e:
            if transaction and _cross_slot(e):
                raise  # refused before anything ran: the queue stays for the next try
            self._drop()
            raise
        except BaseException:
            self._drop()
            raise
        self._emptied()
        q.fates.append(True)
        for held in releasing:
            self._keeper.remove(held)
        for n, held in acquiring:
            held.taken = bool(answers[n])
            if held.taken:
                held.renewed = time.monotonic()
                self._keeper.add(held)
        if failure is not None:
            self._reopen(reopen, failure)
        return list(answers[len(ops) :])

    def _acked_but_failed(
        self, acks: list[tuple[str, str, tuple[str, ...], int]], failed: pipelined.ExecFailed
    ) -> list[tuple[str, str, str, int]]:
        """Of the entries whose XACK was queued (ACKS) in the transaction that FAILED in part,
        those acknowledged though a write of theirs failed: (short, group, entry id,
        deliveries). An XACK that failed itself left its entries pending: none of those."""
        out = []
        for short, group, ids, at in acks:
            if at in failed.failed:
                continue
            for owner in failed.owners:
                if isinstance(owner, tuple) and owner[0] in ids:
                    out.append((short, group, owner[0], owner[1]))
        return out

    def _reopen(
        self, entries: list[tuple[str, str, str, int]], failed: pipelined.ExecFailed
    ) -> None:
        """Put ENTRIES, acknowledged with a queued XACK though one of their writes failed as
        FAILED says, back in this consumer's pending list (see `_not_acked`), the error noted."""
        error = f"{type(failed).__name__}: {failed}"
        for short, group, entry_id, deliveries in entries:
            self.redis.xclaim(
                self.stream(short),
                group,
                self.settings.consumer,
                0,
                [entry_id],
                force=True,
                retrycount=deliveries,
                justid=True,
            )
            self.remember_error(group, short, entry_id, error)
            get_logger().warning(
                "a write failed as its entry's XACK ran; the entry is pending again",
                stream=self.stream(short),
                entry_id=entry_id,
                error=one_reason(error),
            )

    def _exchange(
        self,
        build: Callable[[Any], None],
        ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]],
        *,
        transaction: bool,
        prefix: int = 0,
    ) -> list[Any]:
        """The answers to OPS (queued calls) then the commands BUILD(pipe) makes, in one round
        trip: packed by hand on one server (`pipelined.exchange`: redis-py's pipeline costs more
        CPU than the server's work for a decision's dozen commands), redis-py's pipeline on a
        cluster (where nothing is queued). PREFIX: the first PREFIX ops in one MULTI/EXEC."""

        def fill(pipe: Any) -> Any:
            for name, args, kwargs in ops:
                getattr(pipe, name)(*args, **kwargs)
            build(pipe)
            return pipe

        if self.settings.redis_cluster:
            with self._client.pipeline(transaction=transaction) as pipe:
                return list(fill(pipe).execute())
        commands = fill(pipelined.Commands()).commands
        conn = pipelined.held(self._client, self._conn)
        return pipelined.exchange(
            self._client, commands, transaction=transaction, conn=conn, prefix=prefix
        )

    def _drop(self) -> None:
        """Forget this thread's queue after a round trip that failed (what it sent may or may
        not have run): its locks' SET NX count as refused, its releases are left to the TTL."""
        q = self._queued
        q.reads = None
        if q.ops:
            q.fates.append(False)
        for _, held in q.acquiring:
            held.taken = False
        for held in q.releasing:
            self._keeper.remove(held)
        self._emptied()

    def flush(self) -> None:
        """Send the writes this thread has queued (one round trip; none if nothing is)."""
        if self._queued.ops:
            self.round_trip(lambda _: None)

    def mark(self) -> int:
        """Where this thread's queued writes are now: `all_sent(a, b)` says whether every write
        queued between marks A and B that went out reached the server (a failed round trip
        loses what it carried: nobody knows whether it ran)."""
        q = self._queued
        return len(q.fates) + (1 if q.ops else 0)

    def all_sent(self, a: int, b: int) -> bool:
        return all(self._queued.fates[a:b])

    def _emptied(self) -> None:
        """This thread's queue is sent (or dropped): a new one starts."""
        q = self._queued
        q.ops, q.acquiring, q.releasing = [], [], []
        q.acks, q.atomic = [], 0
        q.spans = [(0, q.owner)] if q.owner is not None else []

    @contextlib.contextmanager
    def owning(self, owner: Any) -> Iterator[None]:
        """The writes this thread queues while the block runs are OWNER's (an entry's): when one
        of them fails as the transaction that carries it runs (`ack`), OWNER is named."""
        q = self._queued
        before = q.owner
        q.owner = owner
        q.spans.append((len(q.ops), owner))
        try:
            yield
        finally:
            q.owner = before
            q.spans.append((len(q.ops), before))

    def _owners(self, indexes: list[int]) -> list[Any]:
        """The owners of the queued ops at INDEXES (None for ops nobody owns), in order."""
        spans = self._queued.spans
        starts = [n for n, _ in spans]
        owners: list[Any] = []
        for n in indexes:
            at = bisect.bisect_right(starts, n) - 1
            owner = spans[at][1] if at >= 0 else None
            if owner not in owners:
                owners.append(owner)
        return owners

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
        failpoints.hit(f"{group}.dead-letter-published")
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
        the caller executes in one round trip; else a write that needs no answer, see
        `write`)."""
        fields = AuditRecord.wire_fields(worker, action, subject, outcome, reason, caused_by)
        stream = self.stream(AuditRecord.on_stream)
        (pipe if pipe is not None else self.write()).xadd(
            stream, scrub_fields(fields), **self.trimming()
        )
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
    def lock(self, name: str, *, wait_s: float = 10.0, queued: bool = False) -> Iterator[Held]:
        """Serialise decisions about one subject across replicas: a short Redis lock with an
        expiry (a crashed holder frees it after FERRY_LOCK_TTL_MS) and a token so only the holder
        renews and releases it. While the block runs the lock is renewed, so a slow git push or
        forge call keeps it; call `check_locks` (or `Held.check`) before an effect to stop if it
        was lost all the same. While this thread is `deferring`, the release is queued after
        the block's writes; with QUEUED the SET NX is too, sent with the block's first round
        trip (its first batched read): the block must only read until `check_locks`, which
        raises LockBusy if another held it (see `locked`)."""
        key = self.settings.key("lock", name)
        token = os.urandom(16).hex()  # as unguessable as a uuid4, a quarter of its cost
        q = self._queued
        if q.kept is not None and q.kept not in self._held_here():
            self._let_go()  # one lock at a time: the one kept (see `keeping`) goes first
        keep = queued and q.keeping and q.depth > 0 and not self._held_here()
        if queued and q.depth:
            held = Held(name, key, token, taken=None, bus=self)
            q.acquiring.append((len(q.ops), held))
            q.ops.append(("set", (key, token), {"nx": True, "px": self.settings.lock_ttl_ms}))
            if keep:
                q.kept = held
        else:
            deadline = time.monotonic() + wait_s
            while not self.redis.set(key, token, nx=True, px=self.settings.lock_ttl_ms):
                if time.monotonic() > deadline:
                    raise LockTimeout(f"lock {name!r} still held after {wait_s:.0f}s")
                time.sleep(0.01)
            held = Held(name, key, token)
            self._keeper.add(held)
        mine = self._held_here()
        mine.append(held)
        done = False
        try:
            yield held
            done = True
        finally:
            mine.remove(held)
            if held.taken is None:
                self.flush()  # its SET NX never went out: send it, to know whether to release
            if q.kept is held and not (done and held.taken and not held.lost):
                q.kept, q.reads = None, None
            if held.taken and q.kept is not held:
                self._release(held)

    def _release(self, held: Held) -> None:
        """Let go of HELD: queued after this thread's writes while it is `deferring`."""
        if self._queued.depth:
            self._queued.ops.append(
                ("execute_command", ("EVAL", _UNLOCK, 1, held.key, held.token), {})
            )
            self._queued.releasing.append(held)
        else:
            self._keeper.remove(held)
            self._unlock(keys=[held.key], args=[held.token])

    @contextlib.contextmanager
    def keeping(self) -> Iterator[None]:
        """While the block runs (inside `deferring`; a worker's batch, entries about one service
        one after the other), the lock `locked` took is kept after its work, with the reads
        made under it (`kept_reads`), until this thread asks `locked` for another lock or the
        block ends: then its release is queued after the writes. The next decision about the
        same subject takes no lock and reads, from what was read (for KEPT_READS_S at most), only
        what it lacks. The kept reads follow this thread's queued writes (`apply`), and are
        dropped after a command sent directly (it may write) or a failed round trip. So at most
        one lock is kept at a time, never while another is taken: two replicas' batches cannot
        wait on each other. Nothing is kept on a Redis Cluster (nothing is queued there)."""
        q = self._queued
        if q.keeping or not q.depth or self.settings.redis_cluster:
            yield
            return
        q.keeping = True
        try:
            yield
        finally:
            q.keeping = False
            self._let_go()

    def _let_go(self) -> None:
        """Release the lock `keeping` kept, and forget the reads made under it."""
        q = self._queued
        held, q.kept, q.reads = q.kept, None, None
        if held is not None and held.taken:
            self._release(held)

    def kept_reads(self, make: Callable[[], Any]) -> Any:
        """The reads kept with the lock this thread holds through `keeping` (MAKE() when there
        are none yet), or None when it holds no such lock."""
        q = self._queued
        if q.kept is None or q.kept not in self._held_here():
            return None
        now = time.monotonic()
        if q.reads is None or now > q.reads_until:
            q.reads, q.reads_until = make(), now + KEPT_READS_S
        return q.reads

    def locked(self, name: str, work: Callable[[Held], Any], *, wait_s: float = 10.0) -> Any:
        """WORK(held) under lock NAME, its SET NX queued (see `lock`): WORK reads, calls
        `check_locks`, then acts. When another held the lock, WORK runs again once it is free.
        Inside `keeping`, a lock kept from an earlier WORK in this thread is used again."""
        deadline = time.monotonic() + wait_s
        q = self._queued
        while True:
            kept = q.kept
            if kept is not None and kept.name == name and not self._held_here():
                return self._with_kept(kept, work)
            try:
                with self.lock(name, wait_s=wait_s, queued=True) as held:
                    return work(held)
            except LockBusy:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"lock {name!r} still held after {wait_s:.0f}s") from None
                time.sleep(0.01)

    def _with_kept(self, held: Held, work: Callable[[Held], Any]) -> Any:
        mine = self._held_here()
        mine.append(held)
        try:
            held.check()  # lost since the last work: LockLost, retried later
            return work(held)
        except BaseException:
            self._let_go()
            raise
        finally:
            mine.remove(held)

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
