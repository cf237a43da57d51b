"""What reads a worker's new entries on one server: a loop of Ferry's own by default
(FERRY_READER=ferry: a blocking XREADGROUP per stream in a thread that handles each read itself),
or FastStream's subscribers (FERRY_READER=faststream). Either way, a stream's entries are handled
in stream order and acknowledged after their effects, a lost group is created again, and a
replica asked to stop finishes the batch it is handling, acknowledges it and reads no more."""

from __future__ import annotations

import threading

import pytest

from ferry.adapters.bus import Bus
from ferry.core.events import CiResult, Event
from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerContext, WorkerSpec
from tests.helpers import digest_of, running, wait_until

READERS = ["ferry", "faststream"]


def settings_for(redis_url: str, prefix: str, reader: str, read_count: int = 1) -> Settings:
    return Settings(
        redis_url=redis_url,
        stream_prefix=prefix,
        consumer="reader-test",
        claim_idle_ms=30_000,
        reader=reader,
        read_count=read_count,
    )


def pending(bus: Bus) -> int:
    return int(bus.redis.xpending(bus.stream("ci"), "reader-test")["pending"])


def group_info(bus: Bus) -> dict[str, int]:
    [info] = bus.redis.xinfo_groups(bus.stream("ci"))
    return {k: v for k, v in info.items() if k in ("pending", "lag", "entries-read")}


@pytest.mark.parametrize("reader", READERS)
def test_entries_are_handled_in_stream_order_by_the_chosen_reader_and_acked_after_effects(
    redis_url: str, prefix: str, reader: str
) -> None:
    settings = settings_for(redis_url, prefix, reader, read_count=4)
    bus = Bus(settings, redis_url)
    handled: list[str] = []
    threads: set[str] = set()
    unacked: list[bool] = []

    def handler(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult)
        threads.add(threading.current_thread().name)
        # The entry being handled is still pending: its XACK comes after this, its effect.
        ids = [
            p["message_id"]
            for p in bus.redis.xpending_range(bus.stream("ci"), "reader-test", "-", "+", 100)
        ]
        unacked.append(bool(ids))
        handled.append(event.digest)

    spec = WorkerSpec(name="reader-test", handlers={"ci": handler})
    digests = [digest_of(f"order-{n}") for n in range(30)]
    for d in digests[:10]:
        bus.publish(CiResult(service="api", digest=d))
    with running(spec, settings, redis_url):
        for d in digests[10:]:  # some read as they come, some in batches
            bus.publish(CiResult(service="api", digest=d))
        wait_until(lambda: len(handled) == 30 and pending(bus) == 0, 20, "30 entries acked")
    assert handled == digests
    assert all(unacked)
    # FERRY_READER chooses what reads: Ferry's reader handles in its own thread, per stream.
    assert (threads == {"reader-test-read-ci"}) == (reader == "ferry")


@pytest.mark.parametrize("reader", READERS)
def test_a_lost_group_is_created_again_and_new_entries_are_handled(
    redis_url: str, prefix: str, reader: str
) -> None:
    settings = settings_for(redis_url, prefix, reader)
    bus = Bus(settings, redis_url)
    handled: list[str] = []
    spec = WorkerSpec(name="reader-test", handlers={"ci": lambda e, _: handled.append(e.digest)})
    with running(spec, settings, redis_url):
        bus.publish(CiResult(service="api", digest=digest_of("before")))
        wait_until(lambda: handled == [digest_of("before")], 10, "the first entry handled")
        # What Redis losing its data looks like to a reader: XREADGROUP answers NOGROUP.
        bus.redis.delete(bus.stream("ci"))
        wait_until(
            lambda: bus.redis.exists(bus.stream("ci")) and group_info(bus), 15, "group recreated"
        )
        bus.publish(CiResult(service="api", digest=digest_of("after")))
        wait_until(lambda: len(handled) == 2, 15, "an entry published after the loss handled")
    assert handled == [digest_of("before"), digest_of("after")]
    assert pending(bus) == 0


def test_a_replica_asked_to_stop_finishes_and_acks_its_batch_and_reads_no_more(
    redis_url: str, prefix: str
) -> None:
    # Ferry's reader: FastStream's subscriber, stopped in this process, may read one more entry.
    settings = settings_for(redis_url, prefix, "ferry")
    bus = Bus(settings, redis_url)
    entered, release = threading.Event(), threading.Event()
    handled: list[str] = []

    def handler(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult)
        entered.set()
        assert release.wait(10)
        handled.append(event.digest)

    spec = WorkerSpec(name="reader-test", handlers={"ci": handler})
    bus.publish(CiResult(service="api", digest=digest_of("first")))
    with running(spec, settings, redis_url) as stop:
        assert entered.wait(10)
        stop()  # SIGTERM, while the first entry is being handled
        bus.publish(CiResult(service="api", digest=digest_of("second")))
        release.set()
        wait_until(lambda: pending(bus) == 0, 10, "the batch under way acknowledged")
    # The batch under way was finished and acknowledged; the entry published meanwhile was read
    # (and then handled) only if it came before the stop reached the reader.
    assert handled[0] == digest_of("first") and pending(bus) == 0
    assert not any(t.name == "reader-test-read-ci" for t in threading.enumerate())
    # And then nothing reads: a later entry waits for the next replica.
    bus.publish(CiResult(service="api", digest=digest_of("third")))
    assert group_info(bus)["lag"] >= 1
    assert handled == [digest_of("first"), digest_of("second")][: len(handled)]


def test_faststream_cannot_be_chosen_on_a_cluster() -> None:
    with pytest.raises(ValueError, match="FERRY_READER=faststream cannot read a Redis Cluster"):
        Settings(redis_cluster=True, reader="faststream")


def test_after_a_full_read_the_next_read_rides_with_its_xack(redis_url: str, prefix: str) -> None:
    settings = settings_for(redis_url, prefix, "ferry", read_count=1)
    bus = Bus(settings, redis_url)
    handled: list[str] = []
    spec = WorkerSpec(name="reader-test", handlers={"ci": lambda e, _: handled.append(e.digest)})
    digests = [digest_of(f"ahead-{n}") for n in range(30)]
    for d in digests:
        bus.publish(CiResult(service="api", digest=d))
    with running(spec, settings, redis_url):
        wait_until(lambda: len(handled) == 30 and pending(bus) == 0, 20, "30 entries acked")
        # The reader's own connection, blocked on the next read now: it read the first entry,
        # and each next one came with the XACK before it, on the bus's connection.
        blocked = wait_until(
            lambda: [
                c for c in bus.redis.client_list() if c["cmd"] == "xreadgroup" and "b" in c["flags"]
            ],
            10,
            "the reader blocked on its next read",
        )
        assert len(blocked) == 1
        assert int(blocked[0]["tot-cmds"]) < 15  # one read each second idle, not one per entry
    assert handled == digests


@pytest.mark.parametrize("quick", [False, True])
def test_only_quick_work_reads_its_next_entry_while_it_handles_one(
    redis_url: str, prefix: str, quick: bool
) -> None:
    """One entry per read. Quick work (a worker that reads many at a time unless told
    otherwise, as gate-evaluator) reads the next entry with its handler's first round trip, so
    that entry is this replica's while the first is handled; slow work (pr-writer) reads it
    only once the first is done, so another replica may take it meanwhile. Both handle every
    entry in order and acknowledge it."""
    settings = settings_for(redis_url, prefix, "ferry", read_count=1)
    bus = Bus(settings, redis_url)
    entered, release = threading.Event(), threading.Event()
    handled: list[str] = []

    def handler(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult)
        ctx.bus.round_trip(lambda pipe: pipe.ping())  # the handler's first round trip
        if event.digest == digest_of("r-0"):
            entered.set()
            assert release.wait(10)
        handled.append(event.digest)

    spec = WorkerSpec(name="reader-test", handlers={"ci": handler}, read_count=100 if quick else 1)
    digests = [digest_of(f"r-{n}") for n in range(3)]
    for d in digests:
        bus.publish(CiResult(service="api", digest=d))
    with running(spec, settings, redis_url):
        assert entered.wait(10)
        assert pending(bus) == (2 if quick else 1)
        release.set()
        wait_until(lambda: len(handled) == 3 and pending(bus) == 0, 10, "every entry acknowledged")
    assert handled == digests
