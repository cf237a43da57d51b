"""canary-watcher and preview-reaper join their groups at id 0 and leave the backlog unread,
so the version that handles those streams finds every entry published before it."""

from __future__ import annotations

from tests.helpers import Cluster


def test_idle_workers_join_their_groups_without_consuming(cluster: Cluster) -> None:
    cluster.bus.redis.xadd(
        cluster.bus.stream("previews"), {"kind": "opened", "repo": "shop/web", "pr": "7"}
    )
    cluster.start("canary-watcher")
    cluster.start("preview-reaper")
    for stream, group in (
        ("canary", "canary-watcher"),
        ("changes", "canary-watcher"),
        ("previews", "preview-reaper"),
    ):
        [info] = [
            g
            for g in cluster.bus.redis.xinfo_groups(cluster.bus.stream(stream))
            if g["name"].decode() == group
        ]
        assert info["last-delivered-id"] == b"0-0"
        assert info["pending"] == 0
    [previews] = cluster.bus.redis.xinfo_groups(cluster.bus.stream("previews"))
    assert previews["lag"] == 1
