"""Bad input becomes a dead letter with a sentence a person can act on; nothing else is lost."""

from __future__ import annotations

from tests.helpers import REGISTRY, Cluster, digest_of, wait_until


def test_malformed_entries_are_dead_lettered_and_valid_ones_around_them_complete(
    cluster: Cluster,
) -> None:
    cluster.init_repo(["api", "web", "db"])
    gate = cluster.start("gate-evaluator")
    writer = cluster.start("pr-writer")
    stream = cluster.bus.stream("ci")
    x = cluster.bus.redis.xadd
    good = {s: digest_of(f"good-{s}") for s in ("api", "web", "db")}

    cluster.build("api", good["api"])
    bad_ids = {
        "json": x(stream, {"json": "{not json"}).decode(),
        "tag": x(stream, {"kind": "ci", "service": "api", "digest": "api:latest"}).decode(),
    }
    cluster.build("web", good["web"])
    bad_ids["path"] = x(
        stream, {"kind": "ci", "service": "../etc", "digest": digest_of("p")}
    ).decode()
    bad_ids["env"] = x(
        stream, {"kind": "ci", "service": "api", "digest": good["api"], "env": "qa"}
    ).decode()
    # A plain XADD with flat string fields, as a producer in another language would send it.
    x(
        stream,
        {
            "kind": "ci",
            "service": "db",
            "digest": good["db"],
            "status": "success",
            "image": f"{REGISTRY}/db",
            "commit": "deadbeef",
        },
    )

    for service, d in good.items():
        cluster.wait_pinned(service, "dev", d)
    letters = wait_until(
        lambda: len(cluster.dead_letters()) >= 4 and cluster.dead_letters(), 15, "four dead letters"
    )
    by_entry = {letter["entry_id"]: letter for letter in letters}
    assert set(by_entry) == set(bad_ids.values())
    assert "field 'json' is not valid JSON" in by_entry[bad_ids["json"]]["error"]
    assert (
        "digest must be sha256:<64 lowercase hex>, got 'api:latest'"
        in (by_entry[bad_ids["tag"]]["error"])
    )
    assert "service must be a DNS label" in by_entry[bad_ids["path"]]["error"]
    assert "'../etc'" in by_entry[bad_ids["path"]]["error"]
    assert (
        "unknown environment 'qa': ferry.yaml defines dev, staging, prod"
        in (by_entry[bad_ids["env"]]["error"])
    )
    for letter in letters:
        assert letter["worker"] == "gate-evaluator" and letter["stream"] == stream
        assert letter["deliveries"] == "1"
    assert gate.poll() is None and writer.poll() is None
    assert cluster.bus.redis.xpending(stream, "gate-evaluator")["pending"] == 0


def test_a_build_from_the_future_is_dead_lettered_and_blocks_no_later_build(
    cluster: Cluster,
) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    stream = cluster.bus.stream("ci")
    future = {
        "kind": "ci",
        "service": "api",
        "digest": digest_of("2027"),
        "image": f"{REGISTRY}/api",
    }
    far = cluster.bus.redis.xadd(stream, {**future, "built_at": "2027-06-01T00:00:00Z"}).decode()
    naive = cluster.bus.redis.xadd(stream, {**future, "built_at": "2026-01-01T00:00:00"}).decode()
    later = digest_of("built-now")
    cluster.build("api", later)
    cluster.wait_pinned("api", "dev", later)  # not "older" than the one from 2027
    letters = wait_until(lambda: len(cluster.dead_letters()) == 2 and cluster.dead_letters(), 15)
    by_entry = {letter["entry_id"]: letter["error"] for letter in letters}
    assert "built_at 2027-06-01T00:00:00+00:00 is" in by_entry[far]
    assert "days in the future" in by_entry[far]
    assert "built_at 2026-01-01T00:00:00 has no timezone" in by_entry[naive]
