"""One read's entries through the dispatcher: each service's entries in stream order, different
services at once, one XACK for all that were handled, and a Redis failure leaves the failed entry
and the later ones about its service pending."""

from __future__ import annotations

import threading
import time

import pytest

from ferry.adapters.bus import Bus
from ferry.core.events import CiResult, Event
from ferry.runtime.dispatcher import BatchInterrupted, Dispatcher, Entry
from ferry.runtime.logging import get_logger
from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerContext, WorkerSpec
from tests.helpers import digest_of


@pytest.fixture
def bus(redis_url: str, prefix: str, tmp_path) -> Bus:  # noqa: ANN001
    return Bus(Settings(redis_url=redis_url, stream_prefix=prefix, home=tmp_path), redis_url)


def read(bus: Bus, n: int) -> list[Entry]:
    got = bus.redis.xreadgroup("batch", "c1", {bus.stream("ci"): ">"}, count=n)
    return [(i.decode(), fields, 1) for i, fields in got[0][1]]


def dispatcher(bus: Bus, handler) -> Dispatcher:  # noqa: ANN001
    spec = WorkerSpec(name="batch", handlers={"ci": handler})
    ctx = WorkerContext(name="batch", settings=bus.settings, bus=bus, log=get_logger())
    return Dispatcher(spec, ctx)


def test_each_services_entries_in_order_services_at_once_one_ack(bus: Bus) -> None:
    bus.ensure_group("ci", "batch")
    services = ["api", "web", "db"]
    published = [
        (s, bus.publish(CiResult(service=s, digest=digest_of(f"{s}-{i}"))))
        for i in range(8)
        for s in services
    ]
    seen: list[tuple[str, str]] = []
    threads: set[str] = set()

    def handle(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult)
        threads.add(threading.current_thread().name)
        time.sleep(0.005)  # a round trip's worth: the others go on meanwhile
        seen.append((event.service, event.digest))

    outcomes = dispatcher(bus, handle).process_batch("ci", read(bus, 100))
    assert outcomes == ["done"] * len(published)
    for s in services:
        assert [d for svc, d in seen if svc == s] == [digest_of(f"{s}-{i}") for i in range(8)]
    assert len(threads) > 1
    assert bus.redis.xpending(bus.stream("ci"), "batch")["pending"] == 0


def test_a_redis_failure_leaves_that_entry_and_its_services_later_ones_pending(bus: Bus) -> None:
    bus.ensure_group("ci", "batch")
    ids = {
        (s, i): bus.publish(CiResult(service=s, digest=digest_of(f"{s}-{i}")))
        for i in range(3)
        for s in ("api", "web")
    }
    # A real failure of Redis under the dispatcher: api-1 comes back after too many deliveries,
    # and reading its last error fails (WRONGTYPE: the key holds a hash).
    bus.remember_error("batch", "ci", ids[("api", 1)], "a worker died")
    [key] = [k for k in bus.redis.keys(f"*{ids[('api', 1)]}*")]
    bus.redis.delete(key)
    bus.redis.hset(key, "x", "y")
    entries = [
        (entry_id, fields, 9 if entry_id == ids[("api", 1)] else 1)
        for entry_id, fields, _ in read(bus, 100)
    ]
    handled: list[str] = []

    def handle(event: Event, ctx: WorkerContext) -> None:
        handled.append(event.event_id)

    with pytest.raises(BatchInterrupted) as caught:
        dispatcher(bus, handle).process_batch("ci", entries)
    assert caught.value.entry_id == ids[("api", 1)]
    assert "WRONGTYPE" in str(caught.value.__cause__)
    assert len(handled) == 4  # api-0 and web's three
    pending = {
        p["message_id"].decode()
        for p in bus.redis.xpending_range(bus.stream("ci"), "batch", "-", "+", 10)
    }
    # web's entries and api-0 were handled and acknowledged; api-2 waited behind api-1.
    assert pending == {ids[("api", 1)], ids[("api", 2)]}


def test_two_replicas_draining_one_backlog_never_wait_on_each_others_kept_locks(
    redis_url: str, prefix: str, tmp_path
) -> None:  # noqa: ANN001
    """Two replicas (each its own Bus, in its own thread) read one backlog 100 entries at a
    time, entries about 12 services interleaved; each entry adds 1 to its service's counter
    under the service's lock (read, then a queued write). A batch's threads each keep their
    service's lock until its entries are done: were the last release held back for the XACK,
    after every service of the batch, each replica could wait on a lock the other kept for a
    service it had finished (up to the lock wait, 10 s, then a retry). Every entry is handled
    once, first time, and no update is lost."""
    settings = Settings(redis_url=redis_url, stream_prefix=prefix, home=tmp_path)
    buses = [Bus(settings, redis_url) for _ in range(2)]
    buses[0].ensure_group("ci", "batch")
    services = [f"svc-{n:02d}" for n in range(12)]
    per_service = 25
    for i in range(per_service):
        for s in services:
            buses[0].publish(CiResult(service=s, digest=digest_of(f"{s}-{i}")))
    counter = settings.key("counter")

    def handle(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult)

        def work(_: object) -> None:
            [value] = ctx.bus.round_trip(lambda pipe: pipe.hget(counter, event.service))
            ctx.bus.check_locks()  # another replica held it: read again once it is free
            ctx.bus.write().hset(counter, event.service, int(value or 0) + 1)

        # Held up by such a wait, a decision gives up after 5 s (10 s in the workers).
        ctx.bus.locked(f"cell:{event.service}", work, wait_s=5)

    outcomes: list[str] = []

    def replica(bus: Bus, consumer: str) -> None:
        d = dispatcher(bus, handle)
        while True:
            got = bus.redis.xreadgroup("batch", consumer, {bus.stream("ci"): ">"}, count=100)
            if not got:
                return
            outcomes.extend(d.process_batch("ci", [(i.decode(), f, 1) for i, f in got[0][1]]))

    threads = [threading.Thread(target=replica, args=(b, f"c{n}")) for n, b in enumerate(buses)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert outcomes == ["done"] * (per_service * len(services))
    counts = buses[0].redis.hgetall(counter)
    assert {k.decode(): int(v) for k, v in counts.items()} == dict.fromkeys(services, per_service)
    assert buses[0].redis.xpending(buses[0].stream("ci"), "batch")["pending"] == 0
