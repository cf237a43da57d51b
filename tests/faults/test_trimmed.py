"""An entry trimmed from its stream while pending on a dead replica: the reclaiming replica must
turn it into a dead letter a person can act on, not drop it in silence, even when it dies itself
before the letter is written (the entry stays pending until its letter is there)."""

from __future__ import annotations

import signal

import pytest

from ferry.app.replay import ReplayError, retry
from tests.helpers import Cluster, digest_of, wait_until


def a_later_build_is_decided(cluster: Cluster, service: str) -> None:
    later = digest_of("later")
    cluster.build(service, later)
    wait_until(
        lambda: any(later in a.get("subject", "") for a in cluster.entries("audit")),
        20,
        "a later build decided",
    )


def test_pending_entries_trimmed_from_the_stream_become_dead_letters(cluster: Cluster) -> None:
    cluster.init_repo(["api", "web"])
    r, ci = cluster.bus.redis, cluster.bus.stream("ci")
    cluster.bus.ensure_group("ci", "gate-evaluator")
    lost = [cluster.build("api", digest_of("lost-1")), cluster.build("web", digest_of("lost-2"))]
    # A replica reads both entries and dies before acknowledging them...
    got = r.xreadgroup("gate-evaluator", "gate-evaluator-dead", {ci: ">"}, count=10)
    assert [i.decode() for i, _ in got[0][1]] == lost
    # ...and the stream is trimmed past them meanwhile (one by XDEL, one by XTRIM).
    r.xdel(ci, lost[0])
    kept = cluster.build("api", digest_of("kept"))
    r.xtrim(ci, minid=kept, approximate=False)
    assert r.xlen(ci) == 1
    assert r.xpending(ci, "gate-evaluator")["pending"] == 2

    cluster.start("gate-evaluator")
    cluster.start("gate-evaluator")  # two replicas find them: each is named once all the same
    wait_until(lambda: len(cluster.dead_letters()) >= 2, 20, "two dead letters")
    letters = {d["entry_id"]: d for d in cluster.dead_letters()}
    assert sorted(letters) == sorted(lost)
    for entry_id, letter in letters.items():
        assert letter["stream"] == ci
        assert letter["worker"] == "gate-evaluator"
        assert entry_id in letter["error"] and ci in letter["error"]
        assert (
            "data was trimmed from the stream before gate-evaluator handled it" in letter["error"]
        )
        assert "re-publish the event" in letter["error"] and "ferry replay ci" in letter["error"]
    # The entry still in the stream was handled as usual.
    wait_until(lambda: cluster.entries("audit"), 20, "the kept entry decided")
    # Nothing loops: later work goes through, the trimmed entries are named once and are no
    # longer pending on anyone.
    a_later_build_is_decided(cluster, "web")
    # (Its audit record may be written a moment before its XACK.)
    wait_until(lambda: r.xpending(ci, "gate-evaluator")["pending"] == 0, 10, "nothing pending")
    assert len(cluster.dead_letters()) == 2
    # Retrying such a letter would put an empty entry back: refused, saying why and what to do.
    dlq_id = cluster.bus.redis.xrange(cluster.bus.stream("dlq"))[0][0].decode()
    with pytest.raises(ReplayError, match="was trimmed from .* re-publish the event"):
        retry(cluster.bus, [dlq_id])
    assert len(cluster.dead_letters()) == 2


@pytest.mark.parametrize(
    "failpoint", ["gate-evaluator.trimmed-found", "gate-evaluator.dead-letter-published"]
)
def test_a_replica_killed_before_a_trimmed_entrys_dead_letter_is_done_leaves_it_to_another(
    cluster: Cluster, failpoint: str
) -> None:
    """Killed having found the trimmed entry (before its letter), or having published the letter
    (before acknowledging the entry): the entry is still pending, and after a restart there is
    its dead letter, once."""
    cluster.init_repo(["api"])
    r, ci = cluster.bus.redis, cluster.bus.stream("ci")
    cluster.bus.ensure_group("ci", "gate-evaluator")
    lost = cluster.build("api", digest_of("lost"))
    r.xreadgroup("gate-evaluator", "gate-evaluator-dead", {ci: ">"}, count=10)
    r.xdel(ci, lost)

    doomed = cluster.start_doomed("gate-evaluator", FERRY_FAILPOINTS=failpoint)
    assert doomed.wait(timeout=20) == -signal.SIGKILL
    assert [
        p["message_id"].decode() for p in r.xpending_range(ci, "gate-evaluator", "-", "+", 10)
    ] == [lost]
    assert len(cluster.dead_letters()) == (failpoint.endswith("published"))

    cluster.start("gate-evaluator")
    wait_until(lambda: r.xpending(ci, "gate-evaluator")["pending"] == 0, 20, "it acknowledged")
    [letter] = cluster.dead_letters()
    assert letter["entry_id"] == lost and "data was trimmed from the stream" in letter["error"]
    # Nothing loops: a later build is decided, and the letter is still the only one.
    a_later_build_is_decided(cluster, "api")
    assert len(cluster.dead_letters()) == 1
