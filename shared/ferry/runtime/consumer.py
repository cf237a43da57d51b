"""The consumer loop of one worker replica, on FastStream: each stream gets two subscribers in
the worker's group, one reading new entries (XREADGROUP >) and one reclaiming entries idle longer
than FERRY_CLAIM_IDLE_MS (XAUTOCLAIM), because a FastStream subscriber given min_idle_time only
claims. It also heals a lost group and runs the worker's tick."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import redis

from ferry.adapters.bus import Bus
from ferry.runtime.dispatcher import Dispatcher
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


async def serve(
    spec: WorkerSpec,
    settings: Settings,
    url: str,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run one replica of worker SPEC until STOP is set (or the task is cancelled)."""
    from faststream.redis.annotations import RedisStreamMessage

    log = get_logger(worker=spec.name, consumer=settings.consumer)
    bus = Bus(settings, url)
    ctx = WorkerContext(name=spec.name, settings=settings, bus=bus, log=log)
    if spec.setup:
        spec.setup(ctx)
    dispatcher = Dispatcher(spec, ctx)

    def consumer_for(short: str, reclaim: bool) -> Callable[..., Any]:
        async def consume(message: RedisStreamMessage) -> None:
            raw_id = message.raw_message["message_ids"][0]
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            try:
                deliveries = await message.get_delivery_count() if reclaim else 1
                # The dispatcher decodes the fields itself: a failure there is a dead letter.
                await asyncio.to_thread(
                    dispatcher.process, short, entry_id, message.raw_message["data"], deliveries
                )
            except Exception as e:  # noqa: BLE001 - Redis failed us; the entry stays pending
                log.warning(
                    "entry left pending; it will be reclaimed",
                    stream=bus.stream(short),
                    entry_id=entry_id,
                    error=one_reason(f"{type(e).__name__}: {e}"),
                )

        return consume

    for short in spec.joins:
        bus.ensure_group(short, spec.name)
    for short in spec.handlers:
        bus.ensure_group(short, spec.name)
    broker, subscribers = build_broker(spec, settings, url, consumer_for)

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
    if ready:
        ready()
    stop = stop or asyncio.Event()
    next_tick = time.monotonic() + settings.tick_s
    next_heal = time.monotonic() + HEAL_S
    try:
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
        if background is not None:
            await asyncio.to_thread(background.join, 10)
        if http is not None:
            http.close()
        if subscribers:
            await broker.stop()
        log.info("worker stopped")


# The handler of one subscriber, given the stream's short name and whether it reclaims.
Receive = Callable[[str, bool], Callable[[Any], Awaitable[None]]]


def build_broker(
    spec: WorkerSpec, settings: Settings, url: str, receive: Receive
) -> tuple[Any, list[tuple[str, Any]]]:
    """The FastStream broker of one replica of SPEC and its subscribers, not connected: two per
    stream (new entries, and entries idle past FERRY_CLAIM_IDLE_MS), each handing the message to
    the handler RECEIVE(short stream name, reclaim?) makes. `serve` starts it; `ferry docs asyncapi`
    describes it: each subscriber's payload is the stream's event model (core/events.py)."""
    from faststream import AckPolicy
    from faststream.redis import RedisBroker, StreamSub

    # Ferry logs every decision itself; FastStream's own per-message lines would only repeat them.
    broker = RedisBroker(url, logger=None, log_level=logging.DEBUG)  # type: ignore[arg-type]
    subscribers = []
    for short in spec.handlers:
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
                parser=_fields_untouched,
                title=f"{settings.stream(short)}:{spec.name}" + (":reclaim" if reclaim else ""),
                description=_described(spec, settings, short),
                include_in_schema=not reclaim,
            )
            sub(_described_handler(short, receive(short, reclaim)))
            subscribers.append((short, sub))
    return broker, subscribers


def _described_handler(short: str, handle: Callable[[Any], Awaitable[None]]) -> Callable[..., Any]:
    """A subscriber's handler. Its first parameter takes no part at run time (the parser hands
    over an empty body; the dispatcher decodes the entry), but it carries the JSON schema of the
    stream's event model, so the AsyncAPI document describes Ferry's events, not bytes."""
    from faststream.redis.annotations import RedisStreamMessage
    from pydantic import Field, WithJsonSchema

    from ferry.core.events import MODELS

    model = MODELS[short]

    async def consume(event: Any, message: Any) -> None:
        await handle(message)

    consume.__annotations__ = {
        "event": Annotated[
            Any, WithJsonSchema(model.model_json_schema()), Field(title=model.__name__)
        ],
        "message": RedisStreamMessage,
        "return": None,
    }
    return consume


def _described(spec: WorkerSpec, settings: Settings, short: str) -> str:
    from ferry.core.events import MODELS

    return (
        f"{spec.name} ({spec.description}) reads {settings.stream(short)} in consumer group "
        f"{spec.name}, one consumer per replica; a second subscriber reclaims entries idle longer "
        f"than FERRY_CLAIM_IDLE_MS (XAUTOCLAIM). An entry is acknowledged after its effects; "
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


async def _fields_untouched(message: dict[str, Any], original: Callable[..., Any]) -> Any:
    """FastStream's parser would encode the entry's fields as JSON before our handler runs: a field
    name that is not UTF-8 makes that raise outside the handler, so the entry would stay pending
    with no dead letter, for ever, and a megabyte entry is encoded for nothing. Parse an empty
    body instead and hand the handler the entry as read; the dispatcher decodes it."""
    parsed = await original({**message, "data": {}})
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
