"""Replaying a stream makes no second pull request: 2,000 CI events (a build and a dev result per
service, the rest repeats from a chatty CI) handled, then all replayed with `ferry replay ci`'s
app function; the same pull requests before and after, none twice."""

from __future__ import annotations

import time
from collections import Counter

from ferry.app.replay import replay
from ferry.core.events import CiResult
from tests.helpers import REGISTRY, Cluster, digest_of, wait_until

SERVICES = [f"s{i}" for i in range(5)]
EVENTS = 2000


def quiet(cluster: Cluster) -> bool:
    """Every group taking part has read everything and has nothing pending."""
    return all(
        cluster.caught_up(short, group)
        for short, group in (
            ("ci", "gate-evaluator"),
            ("changes", "gate-evaluator"),
            ("promotions", "pr-writer"),
        )
    )


def settle(cluster: Cluster, timeout: float = 60) -> None:
    def twice() -> bool:
        if not quiet(cluster):
            return False
        time.sleep(0.5)
        return quiet(cluster)

    wait_until(twice, timeout, "every group to be done")


def test_replaying_2000_ci_events_opens_no_second_pull_request(cluster: Cluster) -> None:
    cluster.init_repo(SERVICES)
    r = cluster.bus.redis
    with r.pipeline(transaction=False) as pipe:
        for i in range(EVENTS):
            s = SERVICES[i % len(SERVICES)]
            d = digest_of(f"replay-{s}")
            if i < len(SERVICES) or (i >= 2 * len(SERVICES) and i % 2 == 0):
                event = CiResult(service=s, digest=d, image=f"{REGISTRY}/{s}")
            else:
                event = CiResult(service=s, digest=d, env="dev", check="integration")
            pipe.xadd(cluster.bus.stream("ci"), event.to_fields())
        pipe.execute()
    cluster.bus.ensure_group("changes", "gate-evaluator")
    cluster.bus.ensure_group("promotions", "pr-writer")
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    for s in SERVICES:
        cluster.wait_pinned(s, "staging", digest_of(f"replay-{s}"), timeout=60)
    settle(cluster)
    before = sorted((p.number, p.title, p.state) for p in cluster.forge.list_prs())
    assert {state for _, _, state in before} <= {"merged", "open"}
    assert len([1 for _, _, state in before if state == "merged"]) == 2 * len(SERVICES)

    assert len(replay(cluster.bus, "ci")) == EVENTS
    wait_until(lambda: r.xlen(cluster.bus.stream("ci")) == 2 * EVENTS, 10, "the replay")
    settle(cluster)
    after = sorted((p.number, p.title, p.state) for p in cluster.forge.list_prs())
    assert after == before
    assert max(Counter(title for _, title, _ in after).values()) == 1
    assert cluster.dead_letters() == []
