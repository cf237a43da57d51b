"""After Redis loses its data (restart without persistence, an evicted stream key), XREADGROUP
answers NOGROUP: the worker recreates its group and goes on, rather than stopping for ever."""

from __future__ import annotations

from tests.helpers import Cluster, digest_of, wait_until


def test_worker_recreates_its_group_after_the_stream_is_lost(cluster: Cluster) -> None:
    cluster.init_repo(["api", "web"])
    gate = cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    a = digest_of("before-loss")
    cluster.build("api", a)
    cluster.wait_pinned("api", "dev", a)

    # What a restart without an append-only file does to the streams and their groups.
    cluster.bus.redis.delete(cluster.bus.stream("ci"), cluster.bus.stream("promotions"))
    w = digest_of("after-loss")
    cluster.build("web", w)
    cluster.wait_pinned("web", "dev", w, timeout=30)
    assert gate.poll() is None
    groups = cluster.bus.redis.xinfo_groups(cluster.bus.stream("ci"))
    assert [g["name"].decode() for g in groups] == ["gate-evaluator"]
    wait_until(lambda: "consumer group recreated" in cluster.log_of(gate), 5, "the log line")
