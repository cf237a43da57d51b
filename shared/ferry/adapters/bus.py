"""The reliable bus (DESIGN.md §4): Redis streams, one consumer group per worker type, one
consumer per replica, acknowledgement only after the effect is durable, reclaim of entries a dead
replica left pending, a dead-letter stream, and publish-once for idempotent effects.

Publishing is plain XADD of flat fields (see ferry.core.events). Consuming runs on FastStream: each
stream gets two subscribers in the worker's group, one reading new entries (XREADGROUP >) and one
reclaiming entries idle longer than FERRY_CLAIM_IDLE_MS (XAUTOCLAIM), because a FastStream
subscriber given min_idle_time only claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog

from ferry.core.errors import Rejected
from ferry.core.events import AuditRecord, DeadLetter, Event, InvalidEvent, decode_fields, parse
from ferry.runtime.health import Metrics, start_http
from ferry.runtime.logging import get_logger, scrub_text
from ferry.runtime.settings import Settings

# Each heal tick (2 s) prunes dead consumers with this chance: about once a minute per replica.
PRUNE_CHANCE = 1 / 30
# A consumer idle this long (and at least 10 x the claim idle time) belongs to a dead replica.
CONSUMER_IDLE_MIN_MS = 15 * 60 * 1000

# Keep streams long: trimming must never overtake the reclaim threshold (DESIGN.md §4 pitfalls).
STREAM_MAXLEN = 1_000_000
ONCE_TTL_S = 30 * 24 * 3600

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


class LockTimeout(RuntimeError):
    """A per-subject lock stayed taken longer than we wait; the entry is retried later."""


class Bus:
    """Synchronous access to Ferry's streams and state keys (thread-safe: one connection pool)."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        # Typed as Any: redis-py's stubs do not know the connection hands out bytes.
        self.redis: Any = redis.Redis.from_url(url, health_check_interval=30)
        self._once = self.redis.register_script(_PUBLISH_ONCE)
        self._unlock = self.redis.register_script(_UNLOCK)
        self._prune = self.redis.register_script(_PRUNE)

    def stream(self, short: str) -> str:
        return self.settings.stream(short)

    def publish(self, event: Event) -> str:
        """XADD EVENT to its stream; returns the entry id."""
        entry = self.redis.xadd(
            self.stream(event.on_stream), event.to_fields(), maxlen=STREAM_MAXLEN, approximate=True
        )
        return entry.decode()

    def publish_once(self, key: str, event: Event) -> str | None:
        """XADD EVENT unless KEY was already used: the marker and the entry are written in one
        atomic step, so a redelivered message never publishes its effect twice."""
        args: list[Any] = [ONCE_TTL_S, STREAM_MAXLEN, event.event_id]
        for k, v in event.to_fields().items():
            args += [k, v]
        entry = self._once(
            keys=[self.settings.key("once", key), self.stream(event.on_stream)], args=args
        )
        return entry.decode() if entry else None

    def forget_once(self, key: str) -> None:
        """Let KEY be published once more (a failed effect that may be re-driven)."""
        self.redis.delete(self.settings.key("once", key))

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

    def ack(self, short: str, group: str, entry_id: str) -> None:
        self.redis.xack(self.stream(short), group, entry_id)

    def dead_letter(
        self,
        short: str,
        group: str,
        entry_id: str,
        fields: dict[str, str],
        error: str,
        deliveries: int,
    ) -> None:
        """Move an entry to the DLQ and acknowledge it, in one transaction."""
        letter = DeadLetter(
            event_id=f"dlq:{group}:{short}:{entry_id}",
            stream=self.stream(short),
            entry_id=entry_id,
            payload=fields,
            error=scrub_text(error),
            deliveries=deliveries,
            worker=group,
        )
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.stream("dlq"), letter.to_fields(), maxlen=STREAM_MAXLEN, approximate=True
            )
            pipe.xack(self.stream(short), group, entry_id)
            pipe.delete(self._error_key(group, short, entry_id))
            pipe.execute()

    def audit(
        self,
        worker: str,
        action: str,
        subject: str,
        outcome: str,
        reason: str,
        caused_by: str | None = None,
    ) -> None:
        self.publish(
            AuditRecord(
                worker=worker,
                action=action,
                subject=subject,
                outcome=outcome,
                reason=reason,
                caused_by=caused_by,
            )
        )

    def _error_key(self, group: str, short: str, entry_id: str) -> str:
        return self.settings.key("error", group, short, entry_id)

    def remember_error(self, group: str, short: str, entry_id: str, error: str) -> None:
        self.redis.set(self._error_key(group, short, entry_id), scrub_text(error), ex=7 * 24 * 3600)

    def last_error(self, group: str, short: str, entry_id: str) -> str | None:
        value = self.redis.get(self._error_key(group, short, entry_id))
        return value.decode() if value else None

    @contextlib.contextmanager
    def lock(self, name: str, *, wait_s: float = 10.0) -> Iterator[None]:
        """Serialise decisions about one subject across replicas: a short Redis lock with an
        expiry (a crashed holder frees it after FERRY_LOCK_TTL_MS) and a token so only the holder
        releases it."""
        key = self.settings.key("lock", name)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        while not self.redis.set(key, token, nx=True, px=self.settings.lock_ttl_ms):
            if time.monotonic() > deadline:
                raise LockTimeout(f"lock {name!r} still held after {wait_s:.0f}s")
            time.sleep(0.01)
        try:
            yield
        finally:
            self._unlock(keys=[key], args=[token])


@dataclass
class WorkerContext:
    """What a handler gets besides the event: settings, the bus, and the worker's own resources."""

    name: str
    settings: Settings
    bus: Bus
    log: Any
    resources: dict[str, Any] = field(default_factory=dict)

    def audit(
        self, action: str, subject: str, outcome: str, reason: str, event: Event | None
    ) -> None:
        """Record a decision (EVENT is what caused it; None for a timer)."""
        self.log.info("decision", action=action, subject=subject, outcome=outcome, reason=reason)
        caused_by = event.event_id if event is not None else None
        self.bus.audit(self.name, action, subject, outcome, reason, caused_by=caused_by)


Handler = Callable[[Event, WorkerContext], None]


@dataclass
class WorkerSpec:
    """A worker type: its name (= consumer group), the streams it reads and how it handles each."""

    name: str
    handlers: dict[str, Handler]
    setup: Callable[[WorkerContext], None] | None = None
    description: str = ""
    # Streams whose group this worker joins without reading them yet, so that a later version
    # finds the backlog there instead of skipping it.
    joins: tuple[str, ...] = ()
    # Called every FERRY_TICK_S (in a thread) for what time, not an event, moves on.
    tick: Callable[[WorkerContext], None] | None = None


class Dispatcher:
    """Validate -> count deliveries -> handle -> ack, with dead letters for what cannot succeed."""

    def __init__(
        self, spec: WorkerSpec, ctx: WorkerContext, metrics: Metrics | None = None
    ) -> None:
        self.spec = spec
        self.ctx = ctx
        self.metrics = metrics or Metrics()

    def process(self, short: str, entry_id: str, fields: dict[str, str], deliveries: int) -> str:
        """Handle one entry; returns what happened ("done", "dead", "retry")."""
        started = time.perf_counter()
        outcome = self._process(short, entry_id, fields, deliveries)
        self.metrics.observe(self.spec.name, short, outcome, time.perf_counter() - started)
        return outcome

    def _process(self, short: str, entry_id: str, fields: dict[str, str], deliveries: int) -> str:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            worker=self.spec.name,
            stream=self.ctx.bus.stream(short),
            entry_id=entry_id,
            deliveries=deliveries,
        )
        bus, group, log = self.ctx.bus, self.spec.name, self.ctx.log
        try:
            event = parse(short, fields, entry_id=entry_id)
        except InvalidEvent as e:
            log.warning("invalid entry", error=str(e))
            bus.dead_letter(short, group, entry_id, fields, f"invalid entry: {e}", deliveries)
            return "dead"
        structlog.contextvars.bind_contextvars(
            event_id=event.event_id, promotion_id=getattr(event, "promotion_id", None)
        )
        max_deliveries = self.ctx.settings.max_deliveries
        if deliveries > max_deliveries:
            last = bus.last_error(group, short, entry_id)
            reason = (
                f"gave up after {deliveries - 1} deliveries: {last}"
                if last
                else f"gave up: a worker died {deliveries - 1} times while handling this entry"
            )
            log.error("dead letter", error=reason)
            bus.dead_letter(short, group, entry_id, fields, reason, deliveries - 1)
            return "dead"
        try:
            self.spec.handlers[short](event, self.ctx)
        except Rejected as e:
            log.warning("rejected", error=str(e))
            bus.dead_letter(short, group, entry_id, fields, str(e), deliveries)
            return "dead"
        except Exception as e:  # noqa: BLE001 - any other failure is retried, then dead-lettered
            error = f"{type(e).__name__}: {e}"
            if deliveries >= max_deliveries:
                log.error("dead letter", error=error)
                bus.dead_letter(
                    short,
                    group,
                    entry_id,
                    fields,
                    f"failed {deliveries} times, last: {error}",
                    deliveries,
                )
                return "dead"
            log.warning("handler failed; left pending for retry", error=error, exc_info=True)
            bus.remember_error(group, short, entry_id, error)
            return "retry"
        bus.ack(short, group, entry_id)
        return "done"


async def serve(
    spec: WorkerSpec,
    settings: Settings,
    url: str,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run one replica of worker SPEC until STOP is set (or the task is cancelled)."""
    from faststream import AckPolicy
    from faststream.redis import RedisBroker, StreamSub
    from faststream.redis.annotations import RedisStreamMessage

    log = get_logger(worker=spec.name, consumer=settings.consumer)
    bus = Bus(settings, url)
    ctx = WorkerContext(name=spec.name, settings=settings, bus=bus, log=log)
    if spec.setup:
        spec.setup(ctx)
    dispatcher = Dispatcher(spec, ctx)
    # Ferry logs every decision itself; FastStream's own per-message lines would only repeat them.
    broker = RedisBroker(url, logger=None, log_level=logging.DEBUG)  # type: ignore[arg-type]
    subscribers = []

    def consumer_for(short: str, reclaim: bool) -> Callable[..., Any]:
        async def consume(message: RedisStreamMessage) -> None:
            raw_id = message.raw_message["message_ids"][0]
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            fields = decode_fields(message.raw_message["data"])
            deliveries = await message.get_delivery_count() if reclaim else 1
            await asyncio.to_thread(dispatcher.process, short, entry_id, fields, deliveries)

        return consume

    for short in spec.joins:
        bus.ensure_group(short, spec.name)
    for short in spec.handlers:
        bus.ensure_group(short, spec.name)
        for reclaim in (False, True):
            sub = broker.subscriber(
                stream=StreamSub(
                    settings.stream(short),
                    group=spec.name,
                    consumer=settings.consumer,
                    polling_interval=settings.poll_ms
                    if not reclaim
                    else max(settings.poll_ms, 500),
                    min_idle_time=settings.claim_idle_ms if reclaim else None,
                    max_records=None if reclaim else settings.read_count,
                ),
                ack_policy=AckPolicy.MANUAL,
                no_reply=True,
            )
            sub(consumer_for(short, reclaim))
            subscribers.append((short, sub))

    if subscribers:
        await broker.start()
    http = None
    if settings.http_port is not None:

        async def readiness() -> str | None:
            stopped = [bus.stream(s) for s, sub in subscribers if not getattr(sub, "running", True)]
            if stopped:
                return f"not consuming {', '.join(stopped)}"
            try:
                await asyncio.to_thread(bus.redis.ping)
            except redis.RedisError as e:
                return f"redis unreachable: {e}"
            return None

        http = await start_http(
            settings.http_host, settings.http_port, dispatcher.metrics, readiness
        )
        log.info("serving /healthz /readyz /metrics", port=http.sockets[0].getsockname()[1])
    log.info(
        "worker started",
        streams=[settings.stream(s) for s in spec.handlers],
        joined=[settings.stream(s) for s in spec.joins],
        group=spec.name,
        redis=scrub_text(url),
    )
    if ready:
        ready()
    stop = stop or asyncio.Event()
    next_tick = time.monotonic() + settings.tick_s
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(2.0, settings.tick_s))
            await _heal(bus, spec, subscribers, log)
            if spec.tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + settings.tick_s
                try:
                    await asyncio.to_thread(spec.tick, ctx)
                except Exception as e:  # noqa: BLE001 - a failed tick is retried at the next one
                    log.warning("tick failed", error=f"{type(e).__name__}: {e}")
    finally:
        if http is not None:
            http.close()
        if subscribers:
            await broker.stop()
        log.info("worker stopped")


async def _heal(bus: Bus, spec: WorkerSpec, subscribers: list[tuple[str, Any]], log: Any) -> None:
    """After Redis lost its data, XREADGROUP answers NOGROUP for ever and FastStream stops the
    subscriber: recreate the group and start the subscriber again (idempotency covers re-reads).
    Now and then, forget the consumers of replicas that died with nothing pending."""
    if random.random() < PRUNE_CHANCE:
        idle = max(CONSUMER_IDLE_MIN_MS, 10 * bus.settings.claim_idle_ms)
        for short in spec.handlers:
            try:
                removed = await asyncio.to_thread(bus.prune_consumers, short, spec.name, idle)
            except redis.RedisError:
                continue
            if removed:
                log.info("forgot idle consumers", stream=bus.stream(short), consumers=removed)
    for short, sub in subscribers:
        if getattr(sub, "running", True):
            continue
        try:
            await asyncio.to_thread(bus.ensure_group, short, spec.name)
            await sub.start()
            log.warning(
                "consumer group recreated and subscriber restarted", stream=bus.stream(short)
            )
        except Exception as e:  # noqa: BLE001 - Redis may still be down; try again next tick
            log.warning("could not restart subscriber yet", error=str(e))
