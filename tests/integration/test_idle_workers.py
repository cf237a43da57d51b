"""canary-watcher joins its groups at id 0 and leaves the backlog unread, so the version that
handles those streams finds every entry published before it."""

from __future__ import annotations

from tests.helpers import Cluster


def test_idle_workers_join_their_groups_without_consuming(cluster: Cluster) -> None:
    cluster.bus.redis.xadd(
        cluster.bus.stream("canary"),
        {
            "kind": "measurement",
            "service": "api",
            "digest": "sha256:" + "0" * 64,
            "env": "prod",
            "metric": "error-rate",
            "phase": "successful",
        },
    )
    cluster.start("canary-watcher")
    for stream, group in (("canary", "canary-watcher"), ("changes", "canary-watcher")):
        [info] = [
            g
            for g in cluster.bus.redis.xinfo_groups(cluster.bus.stream(stream))
            if g["name"].decode() == group
        ]
        assert info["last-delivered-id"] == b"0-0"
        assert info["pending"] == 0
    [canary] = cluster.bus.redis.xinfo_groups(cluster.bus.stream("canary"))
    assert canary["lag"] == 1
