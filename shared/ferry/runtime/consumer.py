"""The consumer loop of one worker replica: each stream's new entries are read in the worker's
group (XREADGROUP > COUNT FERRY_READ_COUNT), handled in stream order and acknowledged together
after their effects. By default (FERRY_READER=ferry, and always on a Redis Cluster) a read loop of
Ferry's own per stream does it, in a thread that handles each read itself; FERRY_READER=faststream
reads through FastStream's batch subscribers instead, the same handler behind them (their broker,
`build_broker`, is also what the AsyncAPI document describes). While a batch is handled, its
entries are kept from other replicas (their idle time reset). And a loop of our own reclaims
entries idle longer than FERRY_CLAIM_IDLE_MS, which also turns an entry trimmed from the stream
while pending into a dead letter (FastStream's reclaiming subscriber drops those silently). It
also heals a lost group and runs the worker's tick."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

import redis

from ferry.adapters.bus import Bus, connect_redis
from ferry.runtime import failpoints
from ferry.runtime.dispatcher import BatchInterrupted, Dispatcher, Entry
from ferry.runtime.health import start_http
from ferry.runtime.logging import get_logger, one_reason, scrub_text
from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerContext, WorkerSpec

# How often the loop checks its subscribers (and recreates a lost group).
HEAL_S = 2.0
# Each heal tick (2 s) prunes dead consumers with this chance: about once a minute per replica.
PRUNE_CHANCE = 1 / 30
# A consumer idle this long (and at least 10 x the claim idle time) belongs to a dead replica.
CONSUMER_IDLE_MIN_MS = 15 * 60 * 1000
# Each read of new entries by Ferry's own readers waits at most this long for one: how long a
# stopping replica may wait for its readers.
READ_BLOCK_MS = 1000
# After a failed read (a node away, a connection reset), the reader tries again this much later.
READ_RETRY_S = 0.5
# A read with no answer this long after its BLOCK ended (a node hung) fails, and is tried again.
READ_TIMEOUT_S = READ_BLOCK_MS / 1000 + 5
# The most entries one reclaim step looks at (one script, atomic on the server: kept short).
CLAIM_COUNT_MAX = 1000
# While a batch is handled, its entries' idle time is reset this often, in claim idle times.
KEEP_EVERY = 1 / 3


async def serve(
    spec: WorkerSpec,
    settings: Settings,
    url: str,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run one replica of worker SPEC until STOP is set (or the task is cancelled)."""
    log = get_logger(worker=spec.name, consumer=settings.consumer)
    bus = Bus(settings, url)
    ctx = WorkerContext(name=spec.name, settings=settings, bus=bus, log=log)
    if spec.setup:
        spec.setup(ctx)
    dispatcher = Dispatcher(spec, ctx)
    # Keeps the entries being handled from other replicas (see `Keeper`).
    keeper = Keeper(bus, spec.name, log)

    def handle_now(short: str, entries: list[Entry]) -> None:
        """Handle one read's ENTRIES in this thread (the dispatcher decodes the fields itself: a
        failure there is a dead letter)."""
        try:
            with keeper.holding(short, [e[0] for e in entries]):
                dispatcher.process_batch(short, entries)
        except BatchInterrupted as e:  # Redis failed us; the entries stay pending
            log.warning(
                "entries left pending; they will be reclaimed",
                stream=bus.stream(short),
                entry_id=e.entry_id,
                left=e.left,
                error=one_reason(str(e.__cause__)),
            )

    async def handle(short: str, entries: list[Entry]) -> None:
        await asyncio.to_thread(handle_now, short, entries)

    def consumer_for(short: str) -> Callable[[Any], Awaitable[None]]:
        async def consume(message: Any) -> None:
            raw = message.raw_message
            # Read with `>`: every entry is delivered for the first time.
            entries: list[Entry] = [
                (_text(i), data, 1) for i, data in zip(raw["message_ids"], raw["data"], strict=True)
            ]
            await handle(short, entries)

        return consume

    for short in spec.joins:
        bus.ensure_group(short, spec.name)
    for short in spec.handlers:
        bus.ensure_group(short, spec.name)
    broker: Any = None
    subscribers: list[tuple[str, Any]] = []
    readers: list[StreamReader] = []
    halt_readers = threading.Event()
    reads: Any = None
    own = settings.redis_cluster or settings.reader == "ferry"
    if own and spec.handlers:
        # The readers' own client (on a cluster, a cluster client), whose reads time out (Ferry's
        # other calls do not); each reader thread holds one connection of it.
        reads = connect_redis(url, cluster=settings.redis_cluster, socket_timeout=READ_TIMEOUT_S)
        readers = [StreamReader(bus, reads, spec, s, handle_now, log) for s in spec.handlers]
    elif not own:
        broker, subscribers = build_broker(spec, settings, url, consumer_for)
    reclaimers = [
        asyncio.create_task(_reclaim_loop(bus, spec, short, handle, dispatcher, log))
        for short in spec.handlers
    ]
    keeping = threading.Thread(target=keeper.run, name=f"{spec.name}-keep", daemon=True)
    keeping.start()

    if subscribers:
        await broker.start()
    http = None
    if settings.http_port is not None:

        async def readiness() -> str | None:
            stopped = [bus.stream(s) for s, sub in subscribers if not getattr(sub, "running", True)]
            stopped += [bus.stream(r.short) for r in readers if r.failing or not r.alive]
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
        reader="ferry" if own else "faststream",
    )
    background = None
    halt = threading.Event()
    if spec.background is not None:
        background = threading.Thread(
            target=_run_background,
            args=(spec, ctx, halt, log),
            name=f"{spec.name}-due",
            daemon=True,
        )
        background.start()
    stop = stop or asyncio.Event()
    next_tick = time.monotonic() + settings.tick_s
    next_heal = time.monotonic() + HEAL_S
    try:
        # Started here, so that the threads (not daemons) are stopped whatever happens.
        for r in readers:
            r.start(halt_readers)
        if ready:
            ready()
        while not stop.is_set():
            sleep = min(HEAL_S, settings.tick_s, max(0.0, next_heal - time.monotonic()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(sleep, 0.001))
            if stop.is_set():
                break
            if time.monotonic() >= next_heal:
                next_heal = time.monotonic() + HEAL_S
                await _heal(bus, spec, subscribers, log)
            if spec.tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + settings.tick_s
                try:
                    await asyncio.to_thread(spec.tick, ctx)
                except Exception as e:  # noqa: BLE001 - a failed tick is retried at the next one
                    log.warning("tick failed", error=f"{type(e).__name__}: {e}")
    finally:
        halt.set()
        halt_readers.set()  # first: a replica asked to stop reads nothing more
        if background is not None:
            await asyncio.to_thread(background.join, 10)
        if http is not None:
            http.close()
        for task in reclaimers:
            task.cancel()
        await asyncio.gather(*reclaimers, return_exceptions=True)
        if subscribers:
            await broker.stop()
        # Each read returns within READ_BLOCK_MS and its batch is handled; a batch still under
        # way then finishes in its thread (acknowledged: the threads are not daemons, so the
        # process waits for them before it exits).
        for r in readers:
            await asyncio.to_thread(r.join, READ_BLOCK_MS / 1000 + 1)
        keeper.halt.set()
        if reads is not None and not any(r.alive for r in readers):
            with contextlib.suppress(Exception):
                reads.close()
        log.info("worker stopped")


class StreamReader:
    """The new entries of one stream SHORT, read in the worker's group by a loop of Ferry's own in a
    thread of its own: a blocking XREADGROUP of this one key through CLIENT, the readers' client (on
    a Redis Cluster, a cluster client, which sends the read to the node that serves the stream's
    slot and follows MOVED there), up to FERRY_READ_COUNT entries, each batch handed to HANDLE in
    the same thread: handled in stream order and acknowledged after its effects, dead letters
    alike; after a full read, the next rides with its XACK, or for quick work with its first
    round trip, the XACK then riding with the next read's first (see `run`). A failed read is
    logged and tried again; a lost group is created again. It is FastStream's subscriber without the
    event loop's hops between the read and the handler (FERRY_READER=ferry, the default; on a
    cluster, always)."""

    def __init__(
        self,
        bus: Bus,
        client: Any,
        spec: WorkerSpec,
        short: str,
        handle: Callable[[str, list[Entry]], None],
        log: Any,
    ) -> None:
        self.bus, self.client, self.spec, self.short = bus, client, spec, short
        self.handle, self.log = handle, log
        self.count = bus.settings.read_count or spec.read_count
        # Why the last read failed, until one succeeds (readiness says so).
        self.failing: str | None = None
        self.thread: threading.Thread | None = None

    def start(self, halt: threading.Event) -> None:
        # Not a daemon: a stopping process finishes (and acknowledges) the batch under way.
        self.thread = threading.Thread(
            target=self.run, args=(halt,), name=f"{self.spec.name}-read-{self.short}"
        )
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def run(self, halt: threading.Event) -> None:
        stream = self.bus.stream(self.short)
        handle, short, group = self.handle, self.short, self.spec.name
        # Entries read with the last batch's XACK (`Bus.reading_ahead`): this replica's now, so
        # handled even by a replica asked to stop.
        ahead: list[Entry] = []

        def more() -> bool:  # a replica asked to stop reads no more
            return not halt.is_set()

        # Quick work (a worker that reads many entries at a time, such as gate-evaluator): the
        # next read rides with a batch's first round trip, and the batch's XACK, queued behind
        # its writes, with the next batch's first (`Bus.reading_ahead`, `Bus.ack`). Slow work
        # reads the next entries only once a batch is done, so that other replicas share them.
        early = self.spec.read_count > 1
        with self.bus.deferring():  # what a batch leaves queued waits for the next one
            while ahead or not halt.is_set():
                if not ahead:
                    self.send_queued()  # before a read that may block
                entries, ahead = ahead or self.read_or_wait(halt), []
                if not entries:
                    continue
                # A full read: more may be waiting, so the next read rides with a round trip of
                # this one's instead of one of its own (after a short one, the next read blocks).
                full = len(entries) >= self.count
                with self.bus.reading_ahead(
                    short, group, self.count, more if full else _no_more, early=early
                ) as answers:
                    try:
                        handle(short, entries)
                    except Exception as e:  # noqa: BLE001 - pending, to be reclaimed; keep on
                        self.log.error(
                            "could not handle a read; its entries stay pending",
                            stream=stream,
                            error=one_reason(f"{type(e).__name__}: {e}"),
                        )
                ahead = [e for answer in answers for e in _new_entries(answer)]
            self.send_queued()

    def send_queued(self) -> None:
        """Send what the last batch left queued (its XACK behind its writes), if anything; if
        that fails, its entries stay pending, to be reclaimed."""
        try:
            self.bus.flush()
        except Exception as e:  # noqa: BLE001 - pending, to be reclaimed; keep reading
            self.log.error(
                "could not acknowledge a read; its entries stay pending",
                stream=self.bus.stream(self.short),
                error=one_reason(f"{type(e).__name__}: {e}"),
            )

    def read_or_wait(self, halt: threading.Event) -> list[Entry]:
        """The next read's entries; none after a failed read, logged once per reason, half a
        second later (a lost group created again first)."""
        stream = self.bus.stream(self.short)
        try:
            entries = self.read()
        except Exception as e:  # noqa: BLE001 - a node away, a reset, a lost group: again
            reason = one_reason(f"{type(e).__name__}: {e}")
            if reason != self.failing:  # once per reason, not once a second
                self.log.warning("could not read new entries yet", stream=stream, error=reason)
            self.failing = reason
            if "NOGROUP" in str(e):
                with contextlib.suppress(Exception):
                    self.bus.ensure_group(self.short, self.spec.name)
                    self.log.warning("consumer group recreated", stream=stream)
            halt.wait(READ_RETRY_S)
            return []
        if self.failing:
            self.log.info("reading new entries again", stream=stream)
            self.failing = None
        return entries

    def read(self) -> list[Entry]:
        """One XREADGROUP of new entries (`>`: each delivered for the first time)."""
        return _new_entries(
            self.client.xreadgroup(
                self.spec.name,
                self.bus.settings.consumer,
                {self.bus.stream(self.short): ">"},
                count=self.count,
                block=READ_BLOCK_MS,
            )
        )


def _no_more() -> bool:
    return False


def _new_entries(answer: Any) -> list[Entry]:
    """The entries of an XREADGROUP's ANSWER (`>`: each delivered for the first time)."""
    if isinstance(answer, dict):  # RESP3
        answer = list(answer.items())
    return [(_text(i), data, 1) for _, messages in answer or [] for i, data in messages]


class Keeper:
    """Keeps the entries this replica is handling from the others: every third of
    FERRY_CLAIM_IDLE_MS, the idle time of the entries a batch holds is reset (XCLAIM JUSTID,
    which counts no delivery), so that a handler slower than the claim idle time (a slow push, a
    forge call) keeps its entries instead of a live replica claiming them, counting a delivery
    each time, toward a dead letter. An entry another replica took over meanwhile (this one
    stalled longer than the claim idle time) is left to it, not taken back: both handle it, and
    its effects are done once. One thread per process (`run`) looks at the held batches a few
    times per interval; holding a batch (`holding`) costs a dict entry, no thread and no call
    to Redis, so a batch shorter than the interval, nearly all of them, costs next to
    nothing."""

    def __init__(self, bus: Bus, group: str, log: Any) -> None:
        self.bus, self.group, self.log = bus, group, log
        self.every = bus.settings.claim_idle_ms * KEEP_EVERY / 1000
        # token -> (stream short name, the ids still kept, when they are kept next)
        self.held: dict[int, tuple[str, list[str], float]] = {}
        self.tokens = itertools.count()
        self.lock = threading.Lock()
        self.halt = threading.Event()

    @contextlib.contextmanager
    def holding(self, short: str, entry_ids: list[str]) -> Iterator[None]:
        token = next(self.tokens)
        self.held[token] = (short, entry_ids, time.monotonic() + self.every)
        try:
            yield
        finally:
            with self.lock:
                self.held.pop(token, None)

    def run(self) -> None:
        while not self.halt.wait(self.every / 4):
            now = time.monotonic()
            for token, (short, ids, due) in list(self.held.items()):
                if due <= now:
                    self.keep(token, short, ids)

    def keep(self, token: int, short: str, held: list[str]) -> None:
        try:
            kept, taken = self.bus.keep_claimed(short, self.group, held)
        except Exception as e:  # noqa: BLE001 - Redis away: tried again at the next turn
            self.log.warning("could not keep entries being handled yet", error=one_reason(str(e)))
            return
        if taken:
            self.log.warning(
                "entries being handled here were taken over by another replica; left to it",
                stream=self.bus.stream(short),
                entry_ids=taken,
            )
        # Acknowledged, taken over or trimmed: no longer kept.
        with self.lock:
            if token in self.held and kept:
                self.held[token] = (short, kept, time.monotonic() + self.every)
            else:
                self.held.pop(token, None)


# The handler of one subscriber, given the stream's short name.
Receive = Callable[[str], Callable[[Any], Awaitable[None]]]


def build_broker(
    spec: WorkerSpec, settings: Settings, url: str, receive: Receive
) -> tuple[Any, list[tuple[str, Any]]]:
    """The FastStream broker of one replica of SPEC and its subscribers, not connected: one per
    stream, reading new entries in batches of up to FERRY_READ_COUNT (the worker's own by
    default), each batch handed to the handler RECEIVE(short stream name) makes. `serve` starts
    it; `ferry docs asyncapi` describes it: each subscriber's payload is the stream's event model
    (core/events.py)."""
    from faststream import AckPolicy
    from faststream.redis import RedisBroker, StreamSub

    # Ferry logs every decision itself; FastStream's own per-message lines would only repeat them.
    broker = RedisBroker(url, logger=None, log_level=logging.DEBUG)  # type: ignore[arg-type]
    subscribers = []
    for short in spec.handlers:
        sub = broker.subscriber(
            stream=StreamSub(
                settings.stream(short),
                group=spec.name,
                consumer=settings.consumer,
                polling_interval=settings.poll_ms,
                batch=True,
                max_records=settings.read_count or spec.read_count,
            ),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            parser=_fields_untouched,
            title=f"{settings.stream(short)}:{spec.name}",
            description=_described(spec, settings, short),
        )
        sub(_described_handler(short, receive(short)))
        subscribers.append((short, sub))
    return broker, subscribers


def _described_handler(short: str, handle: Callable[[Any], Awaitable[None]]) -> Callable[..., Any]:
    """A subscriber's handler. Its first parameter takes no part at run time (the parser hands
    over an empty body; the dispatcher decodes the entry), but it carries the JSON schema of the
    stream's event model, so the AsyncAPI document describes Ferry's events, not bytes."""
    from faststream.redis.annotations import RedisBatchStreamMessage
    from pydantic import Field, WithJsonSchema

    from ferry.core.events import MODELS

    model = MODELS[short]

    async def consume(event: Any, message: Any) -> None:
        await handle(message)

    consume.__annotations__ = {
        "event": Annotated[
            Any, WithJsonSchema(model.model_json_schema()), Field(title=model.__name__)
        ],
        "message": RedisBatchStreamMessage,
        "return": None,
    }
    return consume


def _described(spec: WorkerSpec, settings: Settings, short: str) -> str:
    from ferry.core.events import MODELS

    count = settings.read_count or spec.read_count
    return (
        f"{spec.name} ({spec.description}) reads {settings.stream(short)} in consumer group "
        f"{spec.name}, one consumer per replica, up to {_entries(count)} per read "
        f"(FERRY_READ_COUNT); a reclaim loop claims entries idle longer than FERRY_CLAIM_IDLE_MS "
        f"(XCLAIM), while a replica keeps the entries it is handling (XCLAIM JUSTID). An entry is "
        f"acknowledged after its effects; "
        f"after FERRY_MAX_DELIVERIES deliveries, or at once if it is not a valid "
        f"{MODELS[short].__name__}, it becomes a dead letter on {settings.stream('dlq')}."
    )


def _run_background(spec: WorkerSpec, ctx: WorkerContext, halt: threading.Event, log: Any) -> None:
    """The worker's background loop, started again after a failure (Redis away, a bug)."""
    assert spec.background is not None
    while not halt.is_set():
        try:
            spec.background(ctx, halt)
        except Exception as e:  # noqa: BLE001 - keep going; the due times are still in Redis
            log.warning(
                "background loop failed; starting it again", error=f"{type(e).__name__}: {e}"
            )
            halt.wait(1.0)


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _reclaim_loop(
    bus: Bus,
    spec: WorkerSpec,
    short: str,
    handle: Callable[[str, list[Entry]], Awaitable[None]],
    dispatcher: Dispatcher,
    log: Any,
) -> None:
    """Claim entries of SHORT idle longer than FERRY_CLAIM_IDLE_MS (a replica died holding them)
    and handle them with their delivery counts. An entry trimmed from the stream while pending
    is named apart and left pending until its dead letter is written and acknowledged, so a
    crash in between leaves it to be named again (and its letter is published once)."""
    settings = bus.settings
    pause = max(settings.poll_ms, 500) / 1000
    count = min(settings.read_count or spec.read_count, CLAIM_COUNT_MAX)
    after: str | None = None
    while True:
        try:
            after, claimed, trimmed = await asyncio.to_thread(
                bus.claim_idle, short, spec.name, after, count
            )
        except Exception as e:  # noqa: BLE001 - Redis away or the group lost; the heal recreates it
            log.warning("could not reclaim entries yet", stream=bus.stream(short), error=str(e))
            await asyncio.sleep(max(pause, HEAL_S))
            continue
        if trimmed:
            failpoints.hit(f"{spec.name}.trimmed-found")
        for entry_id in trimmed:
            try:
                await asyncio.to_thread(dispatcher.trimmed, short, entry_id)
            except Exception as e:  # noqa: BLE001 - still pending: named again at the next pass
                log.error(
                    "could not dead-letter a trimmed entry yet",
                    stream=bus.stream(short),
                    entry_id=entry_id,
                    error=str(e),
                )
        if claimed:
            await handle(short, claimed)
        if after is None and not claimed:
            await asyncio.sleep(pause)


async def _fields_untouched(message: dict[str, Any], original: Callable[..., Any]) -> Any:
    """FastStream's parser would encode the entry's fields as JSON before our handler runs: a field
    name that is not UTF-8 makes that raise outside the handler, so the entry would stay pending
    with no dead letter, for ever, and a megabyte entry is encoded for nothing. Parse an empty
    body instead and hand the handler the entry as read; the dispatcher decodes it."""
    parsed = await original({**message, "data": [] if message.get("type") == "bstream" else {}})
    parsed.raw_message = message
    return parsed


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
