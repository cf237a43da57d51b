"""SIGKILL of random worker replicas every two seconds during 300 promotions: two replicas of
gate-evaluator and two of pr-writer on the local forge, each killed replica replaced at once.
Every promotion reaches its final state (pinned in dev by one merged pull request, reported merged
once); none is lost, none is dead-lettered, no pull request is opened twice."""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter

import pytest

from ferry.core.events import CiResult
from ferry.runtime.runner import spawn_worker
from tests.helpers import REGISTRY, Cluster, digest_of

PROMOTIONS = 300
KILL_EVERY_S = 2.0
CLAIM_IDLE_MS = 1500
WORKERS = ("gate-evaluator", "pr-writer")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


class Chaos:
    """Two live replicas of each worker; `strike` SIGKILLs one and starts another in its place
    (without waiting for it to join: the kills go on while it boots)."""

    def __init__(self, cluster: Cluster, seed: int) -> None:
        self.cluster = cluster
        self.random = random.Random(seed)
        self.n = 0
        self.kills: Counter[str] = Counter()
        self.live: list[tuple[str, subprocess.Popen[bytes]]] = []
        for name in WORKERS:
            for _ in range(2):
                self.live.append((name, cluster.start(name)))

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        self.n += 1
        consumer = f"{name}-chaos-{self.n}"
        log = self.cluster.logs / f"{consumer}.log"
        proc = spawn_worker(name, self.cluster.env(FERRY_CONSUMER=consumer), log)
        proc.log_path = log  # type: ignore[attr-defined]
        self.cluster.procs.append(proc)
        return proc

    def strike(self) -> None:
        """Kill a random replica of each worker type in turn."""
        kind = WORKERS[sum(self.kills.values()) % len(WORKERS)]
        index = self.random.choice([i for i, (name, _) in enumerate(self.live) if name == kind])
        name, proc = self.live[index]
        proc.kill()
        proc.wait(timeout=15)
        self.kills[name] += 1
        self.live[index] = (name, self.spawn(name))


def test_random_replicas_killed_during_300_promotions_lose_and_repeat_nothing(
    cluster: Cluster,
) -> None:
    started = time.monotonic()
    services = [f"svc{i:03d}" for i in range(PROMOTIONS)]
    cluster.claim_idle_ms = CLAIM_IDLE_MS
    cluster.init_repo(services)
    # The forge's repository is the one `ferry init` makes, main checked out, as `ferry up` uses.
    chaos = Chaos(cluster, seed=int(started))
    digests = {s: digest_of(f"chaos-{s}") for s in services}
    with cluster.bus.redis.pipeline(transaction=False) as pipe:  # what Bus.publish sends
        for service, d in digests.items():
            build = CiResult(service=service, digest=d, image=f"{REGISTRY}/{service}")
            pipe.xadd(cluster.bus.stream("ci"), build.to_fields())
        pipe.execute()

    merged: set[str] = set()
    deadline = started + 280
    while len(merged) < PROMOTIONS:
        assert time.monotonic() < deadline, f"{len(merged)} of {PROMOTIONS} merged in time"
        time.sleep(KILL_EVERY_S)
        chaos.strike()
        merged = {c["digest"] for c in cluster.changes("pr_merged")}
        assert not cluster.dead_letters(), [x["error"] for x in cluster.dead_letters()[:3]]
    elapsed = time.monotonic() - started

    main = cluster.repo.at_main()
    unpinned = [s for s, d in digests.items() if main.pinned(s, "dev") != d]
    assert unpinned == []
    prs = cluster.forge.list_prs()
    titles = Counter(p.title for p in prs)
    assert [t for t, n in titles.items() if n > 1] == [], "a pull request opened twice"
    assert len(prs) == PROMOTIONS and {p.state for p in prs} == {"merged"}
    for kind in ("pr_opened", "pr_merged"):
        reported = Counter(c["digest"] for c in cluster.changes(kind))
        assert set(reported) == set(digests.values()) and set(reported.values()) == {1}, kind
    assert cluster.dead_letters() == []
    assert sum(chaos.kills.values()) >= 4 and set(chaos.kills) == set(WORKERS), chaos.kills
    # The kills hit work in flight: entries a dead replica held were delivered again.
    redelivered = sum(
        '"deliveries": 2' in line
        for log in cluster.logs.glob("*.log")
        for line in log.read_text(errors="replace").splitlines()
    )
    assert redelivered >= 1
    print(
        f"\n{PROMOTIONS} promotions in {elapsed:.0f} s, replicas killed: {dict(chaos.kills)}, "
        f"log lines of entries delivered a second time: {redelivered}"
    )
