"""A worker's handling outlives its lock: a git push far slower than FERRY_LOCK_TTL_MS, with a
second pr-writer replica reclaiming the same command meanwhile. The lock is renewed while the push
goes on, so the second replica waits for it instead of pushing, opening and merging again."""

from __future__ import annotations

import stat
import time
from pathlib import Path

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


def test_a_push_slower_than_the_lock_keeps_it_and_nothing_is_done_twice(
    cluster: Cluster,
) -> None:
    pushes = slow_remote(cluster)
    cluster.start("gate-evaluator", **TTL)
    cluster.start("pr-writer", **TTL)
    cluster.start("pr-writer", **TTL)

    d = digest_of("slow-push")
    cluster.build("api", d)
    wait_until(lambda: pushes.exists() and "start" in pushes.read_text(), 30, "the slow push")
    lock = cluster.bus.redis
    key = lock_key(cluster, d)
    token = lock.get(key)
    assert token is not None
    # The other replica reclaims the command (idle for more than FERRY_CLAIM_IDLE_MS) and asks
    # for the lock while the first still pushes.
    stream = cluster.bus.stream("promotions")
    wait_until(
        lambda: any(
            p["times_delivered"] >= 2
            for p in lock.xpending_range(stream, "pr-writer", "-", "+", 10)
        ),
        PUSH_S - 1,
        "the second replica to reclaim the command",
    )
    # Sampled over several TTLs while the push goes on: the first holder's token, unexpired.
    samples = []
    while "end" not in pushes.read_text():
        samples.append(lock.get(key))
        time.sleep(TTL_MS / 4000)
    assert len(samples) >= 4
    assert set(samples) <= {token}, "the lock expired or changed hands during the push"

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
