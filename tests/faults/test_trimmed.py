"""An entry trimmed from its stream while pending on a dead replica: XAUTOCLAIM names it apart
(and drops it from the group), so the reclaiming replica must turn it into a dead letter a person
can act on, not drop it in silence."""

from __future__ import annotations

import pytest

from ferry.app.replay import ReplayError, retry
from tests.helpers import Cluster, digest_of, wait_until


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
    later = digest_of("later")
    cluster.build("web", later)
    wait_until(
        lambda: any(later in a.get("subject", "") for a in cluster.entries("audit")),
        20,
        "a later build decided",
    )
    assert len(cluster.dead_letters()) == 2
    assert r.xpending(ci, "gate-evaluator")["pending"] == 0
    # Retrying such a letter would put an empty entry back: refused, saying why and what to do.
    dlq_id = cluster.bus.redis.xrange(cluster.bus.stream("dlq"))[0][0].decode()
    with pytest.raises(ReplayError, match="was trimmed from .* re-publish the event"):
        retry(cluster.bus, [dlq_id])
    assert len(cluster.dead_letters()) == 2
