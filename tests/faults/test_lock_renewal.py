"""A worker's handling outlives its lock and the claim idle time: a git push far slower than
FERRY_LOCK_TTL_MS and FERRY_CLAIM_IDLE_MS. The replica keeps its entry while it works, so a second
replica does not claim it (no delivery counted, no dead letter); and when one takes it over all the
same (after a stall longer than the claim idle time), the lock, renewed while the push goes on,
makes it wait instead of pushing, opening and merging again."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

from ferry.core.events import promotion_id
from tests.helpers import Cluster, digest_of, wait_until

PUSH_S = 6  # the push of a promotion branch takes this long: 20 lock TTLs, 6 claim idle times
TTL_MS = 300
TTL = {"FERRY_LOCK_TTL_MS": str(TTL_MS)}  # below FERRY_CLAIM_IDLE_MS (1 s), as required

HOOK = """#!/bin/sh
# A slow remote: every push of a promotion branch is written down and takes {sleep} s.
while read old new ref; do
  case "$ref" in
    refs/heads/ferry/*)
      echo "start $ref" >> "{log}"
      sleep {sleep}
      echo "end $ref" >> "{log}"
      ;;
  esac
done
"""


def slow_remote(cluster: Cluster) -> Path:
    """Make every push of a promotion branch take PUSH_S; return the file that logs them."""
    cluster.init_repo(["api"])
    pushes = cluster.root / "pushes.log"
    hook = cluster.repo_path / ".git" / "hooks" / "pre-receive"
    hook.write_text(HOOK.format(sleep=PUSH_S, log=pushes))
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    return pushes


def lock_key(cluster: Cluster, digest: str) -> str:
    return cluster.settings.key("lock", f"promotion:{promotion_id('api', digest, 'dev')}")


def two_writers_push(cluster: Cluster, digest: str, **env: str) -> Path:
    """Two pr-writer replicas (settings ENV) behind a slow remote; a build of api with DIGEST, up
    to the start of its push. Returns the file that logs the pushes."""
    pushes = slow_remote(cluster)
    cluster.start("gate-evaluator", **TTL)
    cluster.start("pr-writer", **TTL, **env)
    cluster.start("pr-writer", **TTL, **env)
    cluster.build("api", digest)
    wait_until(lambda: pushes.exists() and "start" in pushes.read_text(), 30, "the slow push")
    return pushes


def pending(cluster: Cluster) -> list[dict[str, Any]]:
    """The promotion commands pending in pr-writer's group: consumer, delivery count, ..."""
    stream = cluster.bus.stream("promotions")
    return list(cluster.bus.redis.xpending_range(stream, "pr-writer", "-", "+", 10))


def a_handler_slower_than_the_claim_idle_time_keeps_its_entry(cluster: Cluster) -> None:
    """Two pr-writer replicas, a push lasting six claim idle times: the replica pushing keeps its
    command all along (delivered once, never claimed by the other), which is handled once and
    not dead-lettered, even with FERRY_MAX_DELIVERIES at 2. (Without the keeping, the other
    replica claims it after each claim idle time, each claim a delivery: a dead letter.)"""
    d = digest_of("slower-than-the-claim-idle-time")
    pushes = two_writers_push(cluster, d, FERRY_MAX_DELIVERIES="2")
    seen = set()
    while "end" not in pushes.read_text():
        seen |= {(p["consumer"], p["times_delivered"]) for p in pending(cluster)}
        time.sleep(0.05)
    assert len(seen) == 1 and next(iter(seen))[1] == 1, seen

    cluster.wait_pinned("api", "dev", d)
    wait_until(lambda: cluster.changes("pr_merged"), 15, "the merge to be reported")
    wait_until(lambda: not pending(cluster), 15, "the command to be acknowledged")
    assert pushes.read_text().splitlines() == [
        f"start refs/heads/ferry/dev/api/{d[7:19]}",
        f"end refs/heads/ferry/dev/api/{d[7:19]}",
    ]
    assert [p.state for p in cluster.forge.list_prs()] == ["merged"]
    assert len(cluster.changes("pr_opened")) == 1 and len(cluster.changes("pr_merged")) == 1
    assert cluster.dead_letters() == []


def test_a_push_slower_than_the_claim_idle_time_keeps_its_entry(cluster: Cluster) -> None:
    a_handler_slower_than_the_claim_idle_time_keeps_its_entry(cluster)


def test_a_push_slower_than_the_lock_keeps_it_and_nothing_is_done_twice(
    cluster: Cluster,
) -> None:
    d = digest_of("slow-push")
    pushes = two_writers_push(cluster, d)
    lock = cluster.bus.redis
    key = lock_key(cluster, d)
    token = lock.get(key)
    assert token is not None
    # The replica pushing keeps its command; only a stall longer than FERRY_CLAIM_IDLE_MS lets
    # another claim it. As after such a stall, the test hands the command to a consumer gone
    # quiet an hour ago: a replica reclaims it and asks for the lock while the first still pushes.
    stream = cluster.bus.stream("promotions")
    [entry] = lock.xpending_range(stream, "pr-writer", "-", "+", 10)
    lock.xclaim(
        stream, "pr-writer", "stalled", 0, [entry["message_id"]], idle=3_600_000, justid=True
    )
    wait_until(
        lambda: any(
            p["times_delivered"] >= 2 and p["consumer"] != b"stalled"
            for p in lock.xpending_range(stream, "pr-writer", "-", "+", 10)
        ),
        PUSH_S - 1,
        "a replica to reclaim the command",
    )
    # Sampled over several TTLs while the push goes on: the first holder's token, unexpired; the
    # replica that reclaimed the command keeps it (none claims it again, the first does not take
    # it back).
    samples, owners = [], set()
    while "end" not in pushes.read_text():
        samples.append(lock.get(key))
        owners |= {(p["consumer"], p["times_delivered"]) for p in pending(cluster)}
        time.sleep(TTL_MS / 4000)
    assert len(samples) >= 4
    assert set(samples) <= {token}, "the lock expired or changed hands during the push"
    assert len(owners) == 1 and next(iter(owners))[1] == 2, owners

    cluster.wait_pinned("api", "dev", d)
    wait_until(lambda: cluster.changes("pr_merged"), 15, "the merge to be reported")
    wait_until(lambda: lock.xpending(stream, "pr-writer")["pending"] == 0, 15, "both to finish")
    assert pushes.read_text().splitlines() == [
        f"start refs/heads/ferry/dev/api/{d[7:19]}",
        f"end refs/heads/ferry/dev/api/{d[7:19]}",
    ]
    prs = [p for p in cluster.forge.list_prs() if d[:19] in p.title]
    assert [p.state for p in prs] == ["merged"]
    assert len(cluster.changes("pr_opened")) == 1
    assert len(cluster.changes("pr_merged")) == 1
    assert cluster.dead_letters() == []


def test_a_lock_lost_during_the_push_stops_the_pull_request_until_it_is_retried(
    cluster: Cluster,
) -> None:
    pushes = slow_remote(cluster)
    cluster.start("gate-evaluator", **TTL)
    writer = cluster.start("pr-writer", **TTL)

    d = digest_of("lost-lock")
    cluster.build("api", d)
    wait_until(lambda: pushes.exists() and "start" in pushes.read_text(), 30, "the slow push")
    # What Redis away for longer than the TTL does: the lock expired and someone else took it.
    cluster.bus.redis.set(lock_key(cluster, d), "someone-else", px=2 * TTL_MS)
    wait_until(lambda: "lock lost while its work went on" in cluster.log_of(writer), 10, "it")
    assert cluster.forge.list_prs() == []  # the push ends, but no pull request follows it

    # Retried once the lock is free again: one pull request, merged, reported once.
    cluster.wait_pinned("api", "dev", d)
    wait_until(lambda: cluster.changes("pr_merged"), 15, "the merge to be reported")
    assert "LockLost: lock 'promotion:" in cluster.log_of(writer)
    assert [p.state for p in cluster.forge.list_prs()] == ["merged"]
    assert len(cluster.changes("pr_opened")) == 1 and len(cluster.changes("pr_merged")) == 1
    assert cluster.dead_letters() == []
