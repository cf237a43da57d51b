"""A worker reads entries in batches and acknowledges them together after the last one's effects:
a crash mid-batch leaves every entry of it pending, and the replica that reclaims them finishes
each once."""

from __future__ import annotations

import signal

from tests.helpers import Cluster, digest_of, wait_until


def test_crash_mid_batch_leaves_the_whole_batch_pending_and_each_is_finished_once(
    cluster: Cluster,
) -> None:
    services = ["s0", "s1", "s2", "s3"]
    cluster.init_repo(services)
    digests = {s: digest_of(f"batch-{s}") for s in services}
    for s, d in digests.items():
        cluster.build(s, d)
    ci = cluster.bus.stream("ci")
    # It reads the four entries in one batch, handles one (services at once: maybe more) and
    # dies before the batch's XACK: every entry of the batch is still pending.
    doomed = cluster.start_doomed("gate-evaluator", FERRY_FAILPOINTS="gate-evaluator.mid-batch")
    doomed.wait(timeout=20)
    assert doomed.returncode == -signal.SIGKILL
    assert cluster.bus.redis.xpending(ci, "gate-evaluator")["pending"] == 4
    before = {p["service"] for p in cluster.entries("promotions") if p["kind"] == "open"}
    assert before and before <= set(services)

    cluster.start("gate-evaluator")
    # The batch is acknowledged after the last entry's effects (its audit record included), so
    # nothing pending means all four handled again. (Counting audit records would not do: the kill
    # may land between another thread's request and its audit record.)
    wait_until(
        lambda: cluster.bus.redis.xpending(ci, "gate-evaluator")["pending"] == 0,
        30,
        "the batch finished by another replica",
    )
    opens = [p for p in cluster.entries("promotions") if p["kind"] == "open"]
    assert sorted((p["service"], p["digest"]) for p in opens) == sorted(digests.items())
    outcomes = {a["subject"].split("@")[0]: a["outcome"] for a in cluster.entries("audit")}
    assert outcomes == {s: "already requested" if s in before else "requested" for s in services}
    assert cluster.dead_letters() == []
