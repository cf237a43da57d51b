"""Writes queued for the next round trip (Bus.deferring): the server still sees every command in
the order the code made it, a lock taken with its SET NX queued still lets one holder at a time
do its read-modify-write, a batch's entries about one (service, environment) each see what the
ones before them wrote, and an entry whose queued writes never reached Redis is not
acknowledged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.adapters.bus import Bus, Held
from ferry.core.events import CiResult, Event
from ferry.runtime.dispatcher import BatchInterrupted, Dispatcher, Entry
from ferry.runtime.logging import get_logger
from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerContext, WorkerSpec
from gate_evaluator.worker import WORKER
from tests.helpers import Cluster, counting_round_trips, digest_of, pin_digest


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, stream_prefix=prefix, home=tmp_path)


def read(bus: Bus, group: str, n: int = 100) -> list[Entry]:
    got = bus.redis.xreadgroup(group, "c1", {bus.stream("ci"): ">"}, count=n)
    return [(i.decode(), fields, 1) for i, fields in got[0][1]]


def test_a_queued_write_reaches_the_server_before_any_later_command(settings: Settings) -> None:
    bus, other = Bus(settings, settings.redis_url), Bus(settings, settings.redis_url)
    key = settings.key("queued")
    with bus.deferring():
        bus.write().set(key, "1")
        assert other.redis.get(key) is None  # queued, not sent
        # A direct command (here a read) goes after it: it sees the write.
        assert bus.redis.get(key) == b"1"
        bus.write().set(key, "2")
        # A batched round trip carries it in front of its own commands.
        assert bus.round_trip(lambda pipe: pipe.get(key)) == [b"2"]
        bus.write().set(key, "3")
    # The rest is sent when the block ends.
    assert Bus(settings, settings.redis_url).redis.get(key) == b"3"


def test_a_queued_lock_lets_one_replica_at_a_time_read_modify_write(settings: Settings) -> None:
    """Two replicas (two buses, two threads) each add 1 to a counter 60 times under one lock,
    reading it in the round trip that carries the lock's SET NX, writing it queued: the release
    goes after the write, the next SET NX before the next read. No update is lost."""
    key = settings.key("counter")
    buses = [Bus(settings, settings.redis_url) for _ in range(2)]

    def bump(bus: Bus) -> None:
        def work(_: Held) -> None:
            [value] = bus.round_trip(lambda pipe: pipe.get(key))
            bus.check_locks()  # LockBusy if the other replica held it: read again later
            bus.write().set(key, int(value or 0) + 1)

        for _ in range(6):
            with bus.deferring():  # a batch of ten: each one's writes go with the next trip
                for _ in range(10):
                    bus.locked("counter", work)

    threads = [threading.Thread(target=bump, args=(b,)) for b in buses]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert int(buses[0].redis.get(key)) == 120
    assert not buses[0].redis.exists(settings.key("lock", "counter"))


def test_an_entry_whose_queued_writes_were_lost_stays_pending(settings: Settings) -> None:
    """The second entry's round trip carries the first's queued write and fails (WRONGTYPE):
    nobody knows whether the write ran, so the first entry is not acknowledged though its
    handler finished; the second is left for a retry, the third is acknowledged."""
    bus = Bus(settings, settings.redis_url)
    bus.ensure_group("ci", "q")
    ids = [bus.publish(CiResult(service="api", digest=digest_of(f"q-{i}"))) for i in range(3)]
    wrong = settings.key("a-string")
    bus.redis.set(wrong, "x")
    handled: list[str] = []

    def handle(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult)
        handled.append(event.digest)
        if event.digest == digest_of("q-1"):
            ctx.bus.round_trip(lambda pipe: pipe.hget(wrong, "field"))
        ctx.bus.write().hset(settings.key("seen"), event.digest, "1")

    spec = WorkerSpec(name="q", handlers={"ci": handle})
    ctx = WorkerContext(name="q", settings=settings, bus=bus, log=get_logger())
    outcomes = Dispatcher(spec, ctx).process_batch("ci", read(bus, "q"))
    assert outcomes == ["pending", "retry", "done"]
    assert handled == [digest_of(f"q-{i}") for i in range(3)]
    pending = {
        p["message_id"].decode()
        for p in bus.redis.xpending_range(bus.stream("ci"), "q", "-", "+", 10)
    }
    assert pending == set(ids[:2])
    assert "WRONGTYPE" in (bus.last_error("q", "ci", ids[1]) or "")


def test_an_entry_whose_write_fails_as_the_xack_runs_stays_pending(settings: Settings) -> None:
    """Each entry's write goes, queued, in the MULTI/EXEC with the read's XACK; the second's
    fails there (WRONGTYPE: its key is a string) while the others run, XACK included: that
    entry is put back in the pending list with its delivery count and the error, so that it is
    redelivered and in the end dead-lettered with the reason; the others stay acknowledged.
    The entry read ahead with the XACK still reaches the reader."""
    bus = Bus(settings, settings.redis_url)
    bus.ensure_group("ci", "q")
    ids = [bus.publish(CiResult(service="api", digest=digest_of(f"x-{i}"))) for i in range(4)]
    bus.redis.set(settings.key("seen", digest_of("x-1")), "a string")

    def handle(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult)
        ctx.bus.write().hset(settings.key("seen", event.digest), "by", "q")

    spec = WorkerSpec(name="q", handlers={"ci": handle})
    ctx = WorkerContext(name="q", settings=settings, bus=bus, log=get_logger())
    dispatcher = Dispatcher(spec, ctx)
    entries = read(bus, "q", 3)
    with bus.reading_ahead("ci", "q", 1, lambda: True) as ahead:
        with pytest.raises(BatchInterrupted) as interrupted:
            dispatcher.process_batch("ci", entries)
    assert "WRONGTYPE" in str(interrupted.value.__cause__)
    assert (interrupted.value.entry_id, interrupted.value.left) == (ids[1], 1)
    pending = bus.redis.xpending_range(bus.stream("ci"), "q", "-", "+", 10)
    assert [(p["message_id"].decode(), p["times_delivered"]) for p in pending] == [
        (ids[1], 1),
        (ids[3], 1),  # read ahead, to be handled next
    ]
    assert "WRONGTYPE" in (bus.last_error("q", "ci", ids[1]) or "")
    assert bus.redis.hget(settings.key("seen", digest_of("x-2")), "by") == b"q"
    [[[_, [(next_id, _)]]]] = ahead
    assert next_id.decode() == ids[3]
    # Redelivered past the limit (the reclaim loop counts each delivery): a dead letter that
    # says why; the entry is acknowledged then.
    fields = bus.redis.xrange(bus.stream("ci"), ids[1], ids[1])[0][1]
    last = settings.max_deliveries + 1
    assert dispatcher.process_batch("ci", [(ids[1], fields, last)]) == ["dead"]
    [(_, letter)] = bus.redis.xrange(bus.stream("dlq"))
    assert b"WRONGTYPE" in letter[b"error"]
    assert bus.redis.xpending(bus.stream("ci"), "q")["pending"] == 1  # the one read ahead


POLICY = """\
environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, gates: {ci: {checks: [integration, e2e]}}, auto_merge: true}
  prod: {promote_from: staging}
"""


def test_entries_of_one_subject_in_one_read_each_see_the_ones_before(env: Cluster) -> None:
    """One read holds two green checks in dev for one digest, staging needing both: the first
    decision waits (its evidence write queued), the second sees that write and asks for the
    promotion; then a repeat finds it requested. In stream order, one lock at a time. (After a
    warm-up read: the second decision keeps the first's lock and reads, and sees the write its
    own handler queued in what was read.)"""
    d = digest_of("two-checks")
    env.init_repo(["api", "web"])

    def change(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(POLICY)
        pin_digest(clone, "dev", "api", d)

    env.commit_by_hand("staging needs two checks; dev runs d", change)
    bus = env.bus
    bus.ensure_group("ci", WORKER.name)
    ctx = WorkerContext(name=WORKER.name, settings=env.settings, bus=bus, log=get_logger())
    dispatcher = Dispatcher(WORKER, ctx)
    bus.publish(CiResult(service="web", digest=d, env="dev", check="integration"))
    assert dispatcher.process_batch("ci", read(bus, WORKER.name)) == ["done"]
    for check in ("integration", "e2e", "e2e"):
        bus.publish(CiResult(service="api", digest=d, env="dev", check=check))
    outcomes = dispatcher.process_batch("ci", read(bus, WORKER.name))

    assert outcomes == ["done"] * 3
    audit = [a["outcome"] for a in env.entries("audit") if a["subject"].startswith("api@")]
    assert audit == ["wait", "requested", "already requested"]
    assert [c["kind"] for c in env.entries("promotions")] == ["open"]
    assert bus.redis.xpending(bus.stream("ci"), WORKER.name)["pending"] == 0
    assert not bus.redis.keys(env.settings.key("lock", "*"))


def test_a_reads_decisions_about_one_subject_share_its_lock_and_reads(env: Cluster) -> None:
    """Four green checks in dev for the digest staging already pins, in one read: the first
    decision takes the lock and reads the state in one round trip, the other three keep both
    (their evidence writes followed in what was read) and send nothing until the XACK's round
    trip, which carries every decision's writes and then the lock's release. Each says 'skip'."""
    d = digest_of("kept")
    env.init_repo(["api"])
    env.commit_by_hand("staging runs d", lambda clone: pin_digest(clone, "staging", "api", d))
    bus = env.bus
    bus.ensure_group("ci", WORKER.name)
    ctx = WorkerContext(name=WORKER.name, settings=env.settings, bus=bus, log=get_logger())
    dispatcher = Dispatcher(WORKER, ctx)
    # Warm: main read, the audit stream trimmed once, the server's cluster mode asked.
    bus.publish(CiResult(service="api", digest=d, env="dev", check="warm"))
    assert dispatcher.process_batch("ci", read(bus, WORKER.name)) == ["done"]
    for check in ("integration", "e2e", "integration", "smoke"):
        bus.publish(CiResult(service="api", digest=d, env="dev", check=check))
    entries = read(bus, WORKER.name)
    with counting_round_trips() as sent:
        outcomes = dispatcher.process_batch("ci", entries)

    assert outcomes == ["done"] * 4
    assert sent[0] == 2
    audit = [a["outcome"] for a in env.entries("audit") if a["subject"].startswith("api@")]
    assert audit == ["skip"] * 5
    evidence = bus.redis.hgetall(env.settings.key("evidence", "api", "dev", d))
    assert sorted(evidence) == [b"e2e", b"integration", b"smoke", b"warm"]
    assert bus.redis.xpending(bus.stream("ci"), WORKER.name)["pending"] == 0
    assert not bus.redis.keys(env.settings.key("lock", "*"))


def test_a_kept_lock_serves_its_subject_only_and_is_let_go_for_another(settings: Settings) -> None:
    """Entries about subjects A, A, B, A of one service in one read: the second decision about A
    holds the lock the first took (the same token); B's takes its own lock after A's is released
    (never two at once); the last about A takes A's lock afresh. None is left behind."""
    bus, other = Bus(settings, settings.redis_url), Bus(settings, settings.redis_url)
    bus.ensure_group("ci", "k")
    cells = ["a", "a", "b", "a"]
    for n, cell in enumerate(cells):
        bus.publish(CiResult(service="api", digest=digest_of(f"k-{n}"), check=cell))
    seen: list[tuple[str, dict[bytes, bytes]]] = []

    def handle(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult) and event.check is not None

        def work(_: Held) -> None:
            ctx.bus.check_locks()  # sends a queued SET NX
            held = {k: other.redis.get(k) for k in other.redis.keys(settings.key("lock", "*"))}
            seen.append((event.check or "", held))

        ctx.bus.locked(f"cell:{event.check}", work)

    spec = WorkerSpec(name="k", handlers={"ci": handle})
    ctx = WorkerContext(name="k", settings=settings, bus=bus, log=get_logger())
    assert Dispatcher(spec, ctx).process_batch("ci", read(bus, "k")) == ["done"] * 4

    key = {c: settings.key("lock", f"cell:{c}").encode() for c in "ab"}
    assert [sorted(held) for _, held in seen] == [[key[c]] for c in cells]
    tokens = [held[key[c]] for c, held in seen]
    assert tokens[0] == tokens[1] and len(set(tokens)) == 3
    assert not other.redis.keys(settings.key("lock", "*"))


def _one_at_a_time(bus: Bus, dispatcher: Dispatcher, group: str) -> Iterator[list[Entry]]:
    """Read one entry at a time as Ferry's reader does for quick work: each next read rides
    with the entry's first round trip (an early read ahead), in one `deferring` block, so that
    an entry's XACK may wait for the next one's round trip. Yields each entry once handled."""
    from ferry.runtime.consumer import _new_entries

    with bus.deferring():
        entries = read(bus, group, 1)
        while entries:
            with bus.reading_ahead("ci", group, 1, lambda: True, early=True) as answers:
                dispatcher.process_batch("ci", entries)
            yield entries
            entries = [e for answer in answers for e in _new_entries(answer)]


def _reads_then_writes(settings: Settings) -> WorkerSpec:
    """Quick work (many entries per read): a read (the entry's first round trip), then a
    queued write."""

    def handle(event: Event, ctx: WorkerContext) -> None:
        assert isinstance(event, CiResult)
        ctx.bus.round_trip(lambda pipe: pipe.get(settings.key("n")))
        ctx.bus.write().hset(settings.key("seen", event.digest), "by", "q")

    return WorkerSpec(name="q", handlers={"ci": handle}, read_count=100)


def _pending_ids(bus: Bus, group: str) -> list[str]:
    return [
        p["message_id"].decode()
        for p in bus.redis.xpending_range(bus.stream("ci"), group, "-", "+", 10)
    ]


def test_one_at_a_time_an_entry_costs_one_round_trip_its_xack_riding_with_the_next(
    settings: Settings,
) -> None:
    """Quick work read one entry at a time: each entry's round trip also reads the next entry,
    and its XACK waits, queued behind its write, for the next entry's round trip (in one
    MULTI/EXEC in front of it): one round trip per entry, not two. Each entry is acknowledged
    only after its write, once the next one's round trip has gone; the last when the block
    ends."""
    bus, other = Bus(settings, settings.redis_url), Bus(settings, settings.redis_url)
    bus.ensure_group("ci", "q")
    ids = [bus.publish(CiResult(service="api", digest=digest_of(f"o-{i}"))) for i in range(8)]
    spec = _reads_then_writes(settings)
    dispatcher = Dispatcher(spec, WorkerContext("q", settings, bus, get_logger()))
    bus.round_trip(lambda pipe: pipe.ping())  # connected: the count below is the entries'
    steps = _one_at_a_time(bus, dispatcher, "q")
    next(steps)  # the first: its XACK is the first of a transaction (the server's mode asked)
    sent = []
    for n in range(1, len(ids)):
        with counting_round_trips() as box:
            [(entry_id, _, _)] = next(steps)
        sent.append(box[0])
        assert entry_id == ids[n]
        seen = other.redis.hget(settings.key("seen", digest_of(f"o-{n - 1}")), "by")
        assert seen == b"q"  # the one before is done, acknowledged
        if n < len(ids) - 1:
            # Its write and XACK wait for the next entry's round trip (read ahead: pending).
            assert _pending_ids(other, "q") == ids[n : n + 2]
            assert other.redis.hget(settings.key("seen", digest_of(f"o-{n}")), "by") is None
        else:
            # The last: its read ahead found nothing, so its XACK went at once.
            assert _pending_ids(other, "q") == []
    # One round trip each; the last one's XACK, with nothing read ahead, its own.
    assert sent == [1] * (len(ids) - 2) + [2]
    assert list(steps) == []
    assert _pending_ids(other, "q") == []
    assert all(other.redis.hget(settings.key("seen", digest_of(f"o-{i}")), "by") for i in range(8))


def test_a_write_that_fails_as_its_xack_rides_with_the_next_entry_reopens_only_its_entry(
    settings: Settings,
) -> None:
    """The second entry's write fails (WRONGTYPE) in the MULTI/EXEC that carries it and its
    XACK in front of the third entry's round trip: the second entry is put back in the pending
    list with its delivery count and the error, to be redelivered; the third entry's own reads
    in that round trip are answered and it is handled and acknowledged; the others too."""
    bus = Bus(settings, settings.redis_url)
    bus.ensure_group("ci", "q")
    ids = [bus.publish(CiResult(service="api", digest=digest_of(f"w-{i}"))) for i in range(4)]
    bus.redis.set(settings.key("seen", digest_of("w-1")), "a string")
    dispatcher = Dispatcher(
        _reads_then_writes(settings), WorkerContext("q", settings, bus, get_logger())
    )
    handled = [e[0] for entries in _one_at_a_time(bus, dispatcher, "q") for e in entries]

    assert handled == ids
    pending = bus.redis.xpending_range(bus.stream("ci"), "q", "-", "+", 10)
    assert [(p["message_id"].decode(), p["times_delivered"]) for p in pending] == [(ids[1], 1)]
    assert "WRONGTYPE" in (bus.last_error("q", "ci", ids[1]) or "")
    for i in (0, 2, 3):
        assert bus.redis.hget(settings.key("seen", digest_of(f"w-{i}")), "by") == b"q"
