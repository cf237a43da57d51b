"""At least once, effects exactly once: duplicates, crashes mid-work, dead replicas, backlogs."""

from __future__ import annotations

import signal

import pytest

from tests.helpers import Cluster, digest_of, wait_until


def one_pr_one_merge(cluster: Cluster, digest: str) -> None:
    # main pins the digest a moment before pr-writer records the merge and reports it
    wait_until(
        lambda: [c for c in cluster.changes("pr_merged") if c["digest"] == digest],
        15,
        "the merge to be reported",
    )
    prs = [p for p in cluster.forge.list_prs() if digest[:19] in p.title]
    assert len(prs) == 1, [p.title for p in prs]
    assert prs[0].state == "merged"
    merges = [c for c in cluster.changes("pr_merged") if c["digest"] == digest]
    assert len(merges) == 1
    opened = [c for c in cluster.changes("pr_opened") if c["digest"] == digest]
    assert len(opened) == 1


def test_same_ci_event_published_three_times_makes_one_pr(cluster: Cluster) -> None:
    cluster.init_repo(["api"])
    d = digest_of("dup")
    for _ in range(3):
        cluster.build("api", d, event_id="ci-run-42")
    for _ in range(3):  # the same build again, from a producer without an idempotency key
        cluster.build("api", d)
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    cluster.wait_pinned("api", "dev", d)
    wait_until(lambda: len(cluster.entries("audit")) >= 6 + 2, 15, "all six events decided")
    one_pr_one_merge(cluster, d)


@pytest.mark.parametrize(
    "failpoint", ["pr-writer.after-push", "pr-writer.after-open", "pr-writer.after-merge"]
)
def test_pr_writer_killed_mid_promotion_finishes_once(cluster: Cluster, failpoint: str) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    doomed = cluster.start("pr-writer", FERRY_FAILPOINTS=failpoint)
    d = digest_of(failpoint)
    cluster.build("api", d)
    doomed.wait(timeout=20)
    assert doomed.returncode == -signal.SIGKILL
    # The entry is pending on the dead consumer; a new replica claims it after the idle time.
    pending = cluster.bus.redis.xpending(cluster.bus.stream("promotions"), "pr-writer")
    assert pending["pending"] == 1
    cluster.start("pr-writer")
    cluster.wait_pinned("api", "dev", d)
    wait_until(lambda: cluster.changes("pr_merged"), 10, "pr_merged")
    one_pr_one_merge(cluster, d)


def test_killed_replica_with_pending_entries_is_finished_by_another(cluster: Cluster) -> None:
    cluster.init_repo([f"s{i}" for i in range(4)])
    digests = {f"s{i}": digest_of(f"s{i}") for i in range(4)}
    cluster.start("gate-evaluator")
    # This replica reads several entries at a time and dies on the first: all of them are
    # pending on it when it goes.
    doomed = cluster.start(
        "pr-writer", FERRY_FAILPOINTS="pr-writer.after-open", FERRY_READ_COUNT="10"
    )
    for service, d in digests.items():
        cluster.build(service, d)
    doomed.wait(timeout=20)
    wait_until(
        lambda: cluster.bus.redis.xlen(cluster.bus.stream("promotions")) == 4,
        15,
        "four promotion commands",
    )
    cluster.start("pr-writer")
    for service, d in digests.items():
        cluster.wait_pinned(service, "dev", d)
    for d in digests.values():
        wait_until(lambda d=d: [c for c in cluster.changes("pr_merged") if c["digest"] == d], 10)
        one_pr_one_merge(cluster, d)
    pending = cluster.bus.redis.xpending(cluster.bus.stream("promotions"), "pr-writer")
    assert pending["pending"] == 0


def test_backlog_published_before_any_worker_ever_ran_is_processed(cluster: Cluster) -> None:
    cluster.init_repo(["api", "web"])
    a, w = digest_of("a"), digest_of("w")
    cluster.build("api", a)
    cluster.build("web", w)
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    cluster.wait_pinned("api", "dev", a)
    cluster.wait_pinned("web", "dev", w)


def test_backlog_published_while_all_replicas_are_down_is_processed(cluster: Cluster) -> None:
    cluster.init_repo(["api", "web"])
    gate = cluster.start("gate-evaluator")
    writer = cluster.start("pr-writer")
    a = digest_of("a1")
    cluster.build("api", a)
    cluster.wait_pinned("api", "dev", a)
    cluster.kill(gate, signal.SIGTERM)
    cluster.kill(writer, signal.SIGTERM)
    later = {"api": digest_of("a2"), "web": digest_of("w2")}
    for service, d in later.items():
        cluster.build(service, d)
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    for service, d in later.items():
        cluster.wait_pinned(service, "dev", d)


def test_two_gate_evaluators_and_a_burst_of_duplicates_request_one_promotion(
    cluster: Cluster,
) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    cluster.start("gate-evaluator")
    d = digest_of("burst")
    for _ in range(20):  # the same build from a chatty CI, each with its own event id
        cluster.build("api", d)
    wait_until(lambda: len(cluster.entries("audit")) >= 20, 20, "twenty decisions")
    opens = [p for p in cluster.entries("promotions") if p["kind"] == "open"]
    assert len(opens) == 1 and opens[0]["digest"] == d
    outcomes = sorted(a["outcome"] for a in cluster.entries("audit"))
    assert outcomes.count("requested") == 1
    assert outcomes.count("already requested") == 19
