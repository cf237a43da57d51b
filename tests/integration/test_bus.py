"""The bus on a real server, driven by a small worker of the test's own: retries, dead letters
after N deliveries, immediate dead letters for what can never succeed, publish-once."""

from __future__ import annotations

import pytest

from ferry.adapters.bus import Bus
from ferry.core.errors import Rejected
from ferry.core.events import CiResult, Event, decode_fields
from ferry.runtime.dispatcher import Dispatcher
from ferry.runtime.logging import get_logger
from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerContext, WorkerSpec
from tests.helpers import digest_of, running, wait_until

D = digest_of("bus")


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path) -> Settings:  # noqa: ANN001
    return Settings(
        redis_url=redis_url,
        stream_prefix=prefix,
        home=tmp_path,
        consumer="bus-test",
        claim_idle_ms=300,
        lock_ttl_ms=200,
        max_deliveries=3,
    )


@pytest.fixture
def bus(settings: Settings, redis_url: str) -> Bus:
    return Bus(settings, redis_url)


def letters(bus: Bus) -> list[dict[str, str]]:
    return [decode_fields(f) for _, f in bus.redis.xrange(bus.stream("dlq"))]


def test_failing_entry_is_retried_then_dead_lettered_with_count_and_error(
    settings: Settings, bus: Bus, redis_url: str
) -> None:
    attempts: dict[str, int] = {}

    def handler(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult)
        attempts[event.service] = attempts.get(event.service, 0) + 1
        if event.service == "flaky" and attempts["flaky"] < 2:
            raise ConnectionError("forge timed out")
        if event.service == "broken":
            raise RuntimeError("values file is locked by another tool")
        if event.service == "refused":
            raise Rejected("image 'x' is not the repository of 'refused'")

    spec = WorkerSpec(name="bus-test", handlers={"ci": handler})
    for service in ("flaky", "broken", "refused", "fine"):
        bus.publish(CiResult(service=service, digest=D))
    with running(spec, settings, redis_url):
        wait_until(
            lambda: len(letters(bus)) == 2 and attempts.get("flaky") == 2,
            20,
            "two dead letters and the flaky retry",
        )
    assert attempts == {"flaky": 2, "broken": 3, "refused": 1, "fine": 1}
    by_service = {
        letter["payload"].split('"service":"')[1].split('"')[0]: letter for letter in letters(bus)
    }
    assert by_service["broken"]["deliveries"] == "3"
    assert by_service["broken"]["error"] == (
        "failed 3 times, last: RuntimeError: values file is locked by another tool"
    )
    assert by_service["refused"]["deliveries"] == "1"
    assert by_service["refused"]["error"] == "image 'x' is not the repository of 'refused'"
    assert bus.redis.xpending(bus.stream("ci"), "bus-test")["pending"] == 0


def test_an_entry_that_keeps_killing_workers_is_given_up(settings: Settings, bus: Bus) -> None:
    handled: list[str] = []
    spec = WorkerSpec(name="bus-test", handlers={"ci": lambda e, c: handled.append(e.event_id)})
    bus.ensure_group("ci", "bus-test")
    entry = bus.publish(CiResult(service="api", digest=D))
    ctx = WorkerContext(name="bus-test", settings=settings, bus=bus, log=get_logger())
    fields = decode_fields(bus.redis.xrange(bus.stream("ci"))[0][1])
    # Delivered max_deliveries times already, each time the replica died before acking.
    outcome = Dispatcher(spec, ctx).process("ci", entry, fields, deliveries=4)
    assert outcome == "dead" and handled == []
    [letter] = letters(bus)
    assert letter["error"] == "gave up: a worker died 3 times while handling this entry"


def test_publish_once_writes_one_entry_per_key(bus: Bus) -> None:
    event = CiResult(service="api", digest=D, event_id="once")
    first = bus.publish_once("k1", event)
    assert first is not None
    assert bus.publish_once("k1", event) is None
    assert bus.publish_once("k2", event) is not None
    assert bus.redis.xlen(bus.stream("ci")) == 2


def test_lock_serialises_and_expires(bus: Bus) -> None:
    from ferry.adapters.bus import LockTimeout

    with bus.lock("svc:env"), pytest.raises(LockTimeout):
        with bus.lock("svc:env", wait_s=0.05):
            pass
    with bus.lock("svc:env", wait_s=0.05):
        pass  # released after the first holder left
    bus.redis.set(bus.settings.key("lock", "dead"), "someone", px=100)
    with bus.lock("dead", wait_s=2):
        pass  # a crashed holder's lock expires


def test_a_lock_held_past_its_ttl_is_renewed_while_the_work_goes_on(
    settings: Settings, redis_url: str
) -> None:
    from ferry.adapters.bus import LockTimeout

    mine, other = Bus(settings, redis_url), Bus(settings, redis_url)  # two replicas
    key = settings.key("lock", "svc:env")
    with mine.lock("svc:env") as held:
        # Five TTLs (200 ms each) of slow work: the other replica never gets the lock.
        with pytest.raises(LockTimeout):
            with other.lock("svc:env", wait_s=1.0):
                pass
        assert mine.redis.get(key) == held.token.encode()
        mine.check_locks()  # still ours: the work may commit its effects
    assert mine.redis.get(key) is None  # released at the end, and renewed no more
    with other.lock("svc:env", wait_s=0.5):
        pass


def test_a_lost_lock_stops_the_work_before_its_next_effect(
    settings: Settings, redis_url: str
) -> None:
    from ferry.adapters.bus import LockLost

    bus = Bus(settings, redis_url)
    with bus.lock("svc:env") as held:
        # What Redis away longer than the TTL does: the key expired and another replica took it.
        bus.redis.set(held.key, "another-replica", px=5000)
        wait_until(lambda: held.lost, 5, "the keeper to notice")
        with pytest.raises(LockLost, match="lock 'svc:env' was lost"):
            bus.check_locks()
    assert bus.redis.get(held.key) == b"another-replica"  # not released: it is not ours


def test_settings_refuse_a_lock_that_outlives_the_reclaim(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="FERRY_LOCK_TTL_MS .* must be below FERRY_CLAIM_IDLE_MS"):
        Settings(home=tmp_path, claim_idle_ms=1000, lock_ttl_ms=1000)


def test_dead_consumers_are_forgotten_only_when_nothing_is_pending(bus: Bus) -> None:
    import time

    stream = bus.stream("ci")
    bus.ensure_group("ci", "g")
    bus.publish(CiResult(service="api", digest=D))
    bus.redis.xreadgroup("g", "holds-an-entry", {stream: ">"}, count=1)
    bus.redis.xreadgroup("g", "read-nothing", {stream: ">"}, count=1)
    time.sleep(0.3)
    assert bus.prune_consumers("ci", "g", idle_ms=60_000) == []  # not idle long enough
    assert bus.prune_consumers("ci", "g", idle_ms=100) == ["read-nothing"]
    names = [c["name"].decode() for c in bus.redis.xinfo_consumers(stream, "g")]
    assert names == ["holds-an-entry"]
    assert bus.redis.xpending(stream, "g")["pending"] == 1
