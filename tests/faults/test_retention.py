"""Stream retention: every XADD trims its stream to about FERRY_STREAM_MAXLEN entries and entries
older than FERRY_STREAM_MAX_AGE_S go now and then; both are refused in one line when they could
trim what a dead replica left pending. `ferry replay` replays what is kept and says what is not."""

from __future__ import annotations

import time

import pytest

from ferry.adapters.bus import Bus
from ferry.core.events import AuditRecord, CiResult
from ferry.runtime.settings import Settings
from tests.helpers import Cluster, digest_of, run_cli

MAXLEN = 100


def audit(n: int) -> AuditRecord:
    return AuditRecord(worker="t", action="a", subject=f"s{n}", outcome="o", reason="r")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FERRY_STREAM_MAXLEN": "50"}, "FERRY_STREAM_MAXLEN (50) must be at least 100"),
        (
            {"FERRY_STREAM_MAX_AGE_S": "60", "FERRY_CLAIM_IDLE_MS": "30000"},
            "FERRY_STREAM_MAX_AGE_S (60) must be 0 (no age limit) or at least 10 x "
            "FERRY_CLAIM_IDLE_MS (300 s)",
        ),
        ({"FERRY_STREAM_MAX_AGE_S": "-1"}, "FERRY_STREAM_MAX_AGE_S (-1) must be 0"),
        ({"FERRY_STREAM_MAXLEN": "lots"}, "stream_maxlen"),
    ],
)
def test_retention_that_could_trim_pending_entries_is_refused_in_one_line(
    env: dict[str, str],
    message: str,
    capsys,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = run_cli(capsys, "replay", "ci")
    assert code == 2 and out == ""
    assert err.startswith("error: invalid setting: ") and message in err
    assert err.count("\n") == 1


def test_a_stream_stays_near_its_maxlen_on_every_way_in(settings_for, redis_url: str) -> None:
    bus = Bus(settings_for(stream_maxlen=MAXLEN), redis_url)
    for n in range(1000):
        bus.publish(audit(n))
        bus.publish_once(f"k{n}", audit(n).model_copy(update={"event_id": f"e{n}"}))
    bus.ensure_group("ci", "g")
    for _ in range(300):
        entry = bus.redis.xadd(bus.stream("ci"), {"kind": "nonsense"})
        bus.dead_letter("ci", "g", entry.decode(), {"kind": "nonsense"}, "bad", 1)
    for short in ("audit", "dlq"):
        # Approximate trimming keeps whole nodes of 100 entries: at most one more node.
        assert MAXLEN <= bus.redis.xlen(bus.stream(short)) <= 2 * MAXLEN, short
    newest = bus.redis.xrevrange(bus.stream("audit"), count=1)[0][1]
    assert newest[b"subject"] == b"s999"  # trimmed from the head, never the newest


def test_entries_older_than_the_max_age_are_trimmed(settings_for, redis_url: str) -> None:
    # The shortest age allowed: 10 x a claim idle time of 200 ms.
    bus = Bus(settings_for(claim_idle_ms=200, lock_ttl_ms=100, stream_max_age_s=2), redis_url)
    for n in range(250):  # two full nodes and a half
        bus.publish(audit(n))
    assert bus.redis.xlen(bus.stream("audit")) == 250
    time.sleep(2.3)
    bus.publish(audit(250))
    left = [f[b"subject"] for _, f in bus.redis.xrange(bus.stream("audit"))]
    # Whole nodes older than two seconds are gone; the node shared with newer entries stays.
    assert len(left) < 250 and left[-1] == b"s250"
    assert b"s0" not in left


@pytest.fixture
def settings_for(redis_url: str, prefix: str, tmp_path):  # noqa: ANN001, ANN201
    def make(**kw: object) -> Settings:
        return Settings(redis_url=redis_url, stream_prefix=prefix, home=tmp_path, **kw)

    return make


def test_replay_works_within_what_is_kept_and_says_what_is_not(
    env: Cluster,
    capsys,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FERRY_STREAM_MAXLEN", str(MAXLEN))
    bus = Bus(env.settings.model_copy(update={"stream_maxlen": MAXLEN}), env.redis_url)
    ids = [
        bus.publish(CiResult(service="api", digest=digest_of(f"b{n}"), event_id=f"b{n}"))
        for n in range(500)
    ]
    kept = [i.decode() for i, _ in bus.redis.xrange(bus.stream("ci"))]
    assert MAXLEN <= len(kept) <= 2 * MAXLEN and kept[-1] == ids[-1]

    # Within what is kept: replayed, nothing said.
    code, out, err = run_cli(capsys, "replay", "ci", "--from", kept[0], "--dry-run")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"would replay {len(kept)} entries of ci"

    # From before what is kept: what is kept is replayed, and the rest named.
    code, out, err = run_cli(capsys, "replay", "ci", "--from", ids[0], "--dry-run")
    assert code == 0 and out.splitlines()[0] == f"would replay {len(kept)} entries of ci"
    assert err.startswith("note: part of what you asked for is no longer kept: ")
    assert f"has trimmed {500 - len(kept)} older entries" in err
    assert f"its oldest entry kept is {kept[0]}" in err and "FERRY_STREAM_MAXLEN" in err

    # Only what is gone: refused, in one line that says what is kept.
    code, out, err = run_cli(capsys, "replay", "ci", "--from", ids[0], "--to", ids[10])
    assert code == 2 and out == ""
    assert err.startswith(f"error: nothing from {ids[0]} to {ids[10]} is kept any more: ")
    assert f"oldest entry kept is {kept[0]}" in err and err.count("\n") == 1
    assert bus.redis.xlen(bus.stream("ci")) == len(kept)  # nothing published

    # A real replay of what is kept: the copies keep their event ids, and the stream its bound.
    code, out, _ = run_cli(capsys, "replay", "ci", "--from", kept[-5])
    assert code == 0 and out.strip() == "replayed 5 entries of ci"
    copies = bus.redis.xrevrange(bus.stream("ci"), count=5)
    assert [f[b"event_id"] for _, f in copies] == [f"b{n}".encode() for n in range(499, 494, -1)]
    assert bus.redis.xlen(bus.stream("ci")) <= 2 * MAXLEN
