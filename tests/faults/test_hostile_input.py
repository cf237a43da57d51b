"""Hostile input never stalls a worker, never loops, never leaks: raw entries XADDed straight into
a running gate-evaluator (arbitrary bytes as names and values, megabyte values, JSON nested
100,000 deep) are each handled or dead-lettered exactly once, with a bounded one-line reason,
while /healthz keeps answering and valid builds behind them land."""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferry.core.errors import REASON_MAX
from ferry.core.events import InvalidEvent, decode_entry, parse
from tests.helpers import REGISTRY, Cluster, digest_of, wait_until

MIB = 1 << 20
D = digest_of("hostile")
HANDLED_BY_GATE = ("ci", "signals", "changes")
KNOWN_NAMES = [b"kind", b"service", b"digest", b"env", b"json", b"event_id", b"image", b"status"]
GOOD_VALUES = [b"ci", b"approval", b"check", b"pr_merged", b"api", b"dev", b"prod", D.encode()]
SIZES = [0, 1, 63, 64, 4096, 65536, MIB]
DEPTHS = [1, 50, 999, 1000, 5000, 100_000]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@st.composite
def blobs(draw: st.DrawFn) -> bytes:
    """Bytes a bad producer might send: valid words, junk, a megabyte, deep JSON, stray spaces."""
    shape = draw(st.sampled_from(["good", "junk", "big", "nested", "spaced"]))
    if shape == "good":
        return draw(st.sampled_from(GOOD_VALUES))
    if shape == "junk":
        return draw(st.binary(max_size=64))
    if shape == "big":
        unit = draw(st.binary(min_size=1, max_size=4))
        size = draw(st.sampled_from(SIZES))
        return (unit * (size // len(unit) + 1))[:size]
    if shape == "nested":
        depth = draw(st.sampled_from(DEPTHS) | st.integers(1, 100_000))
        if draw(st.booleans()):
            return b"[" * depth + b"]" * depth
        return b'{"a":' * depth + b"1" + b"}" * depth
    junk = draw(st.sampled_from([b"\n", b"\r\n", b" ", b"\t", b"\x00", b"\xc2\xa0", b"\xff"]))
    return draw(st.sampled_from(GOOD_VALUES)) + junk


entries = st.dictionaries(
    st.sampled_from(KNOWN_NAMES) | st.binary(max_size=16) | blobs(), blobs(), min_size=1, max_size=6
)


def entry_key(entry_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in entry_id.split("-"))


class HealthWatch:
    """Asks /healthz every 0.1 s from a thread; every answer must come, within 5 s (a worker
    stuck on a hostile entry would not answer at all; a loaded test machine may take over a
    second, as one did at a load of 13 on 2 cores)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.wait(0.1):
                try:
                    response = client.get(self.url)
                    if response.status_code == 200:
                        self.answers += 1
                    else:
                        self.failures.append(f"status {response.status_code}")
                except httpx.HTTPError as e:
                    self.failures.append(f"{type(e).__name__}: {e}")

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def gate(cluster: Cluster) -> Iterator[tuple[Cluster, Any, int]]:
    cluster.init_repo(["api", "web"])
    port = free_port()
    proc = cluster.start("gate-evaluator", FERRY_HTTP_PORT=str(port))
    try:
        yield cluster, proc, port
    finally:
        # The fuzz run leaves megabytes in its streams: give the shared server its memory back.
        for key in cluster.bus.redis.scan_iter(match=f"{cluster.prefix}*", count=1000):
            cluster.bus.redis.delete(key)


def test_fuzzed_raw_entries_are_each_handled_or_dead_lettered_exactly_once(
    gate: tuple[Cluster, Any, int],
) -> None:
    cluster, proc, port = gate
    r = cluster.bus.redis
    seen = {"dlq": "0-0"}
    ran: list[int] = []  # the largest field of each entry sent

    def group_done(stream: str, entry_id: str) -> bool:
        info = next(g for g in r.xinfo_groups(stream) if g["name"] == b"gate-evaluator")
        last = info["last-delivered-id"].decode()
        return info["pending"] == 0 and entry_key(last) >= entry_key(entry_id)

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(short=st.sampled_from(HANDLED_BY_GATE), raw=entries)
    @example(short="ci", raw={b"\xff\xfe": b"x"})
    @example(short="ci", raw={b"kind": b"ci", b"service": b"A" * MIB, b"digest": D.encode()})
    @example(short="ci", raw={b"kind": b"ci", b"service": b"api", b"digest": b"9" * MIB})
    @example(short="ci", raw={b"json": b"[" * 100_000 + b"]" * 100_000})
    @example(short="signals", raw={b"kind": b"approval", b"service": b"api\n", b"x" * MIB: b""})
    @example(short="ci", raw={b"kind": b"ci", b"service": b"api", b"digest": D.encode() + b"\n"})
    def one_entry(short: str, raw: dict[bytes, bytes]) -> None:
        stream = cluster.bus.stream(short)
        entry_id = r.xadd(stream, raw).decode()
        ran.append(max(len(k) + len(v) for k, v in raw.items()))
        wait_until(lambda: group_done(stream, entry_id), 30, f"{entry_id} handled or dead")
        letters = r.xrange(cluster.bus.stream("dlq"), f"({seen['dlq']}", "+")
        if letters:
            seen["dlq"] = letters[-1][0].decode()
        mine = [decode_entry(fields)[0] for _, fields in letters]
        assert [letter["entry_id"] for letter in mine] in ([], [entry_id])
        fields, not_text = decode_entry(raw)
        try:
            parse(short, fields, entry_id=entry_id, not_text=not_text)
            assert len(mine) <= 1  # handled (acked), or refused by the worker's own rules
        except InvalidEvent:
            assert len(mine) == 1
        for letter in mine:
            assert letter["deliveries"] == "1"
            reason = letter["error"]
            assert len(reason) <= REASON_MAX and "\n" not in reason and "\r" not in reason
            assert json.loads(letter["payload"]) == fields  # the whole entry, kept
        assert proc.poll() is None

    with HealthWatch(port) as health:
        one_entry()
    assert len(ran) >= 60 and any(n >= MIB for n in ran)
    assert not health.failures, health.failures[:5]
    assert health.answers > 0
    pending = r.xpending(cluster.bus.stream("ci"), "gate-evaluator")["pending"]
    assert pending == 0
    # It still stops when asked to: no handler is stuck in a megabyte.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def test_a_megabyte_value_then_a_valid_build_lands(cluster: Cluster) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    stream = cluster.bus.stream("ci")
    x = cluster.bus.redis.xadd
    bad = [
        x(stream, {"kind": "ci", "service": "A" * MIB, "digest": D}),
        x(stream, {"kind": "ci", "service": "api", "digest": "1" * MIB}),
        x(stream, {"json": "[" * 100_000 + "]" * 100_000}),
        x(stream, {b"\xff\xfe": b"x" * MIB}),
    ]
    good = digest_of("after-the-megabyte")
    cluster.build("api", good)
    cluster.wait_pinned("api", "dev", good, timeout=30)
    letters = {letter["entry_id"]: letter for letter in cluster.dead_letters()}
    assert set(letters) == {b.decode() for b in bad}
    for letter in letters.values():
        assert letter["deliveries"] == "1"
        assert len(letter["error"]) <= REASON_MAX and "\n" not in letter["error"]
    first = letters[bad[0].decode()]
    assert "service must be a DNS label" in first["error"]
    assert "(1048576 characters)" in first["error"]
    assert json.loads(first["payload"])["service"] == "A" * MIB
    binary = letters[bad[3].decode()]
    assert "field b'\\xff\\xfe' is not UTF-8 text" in binary["error"]
    assert json.loads(binary["payload"]) == {"\\xff\\xfe": "x" * MIB}
    assert cluster.bus.redis.xpending(stream, "gate-evaluator")["pending"] == 0


NOW = datetime.now(UTC)
# (stream, entry with one field spoiled by whitespace, the field the reason must name)
SPOILED = [
    ("ci", {"service": "api\n"}, "service"),
    ("ci", {"digest": D + "\n"}, "digest"),
    ("ci", {"env": "dev\n"}, "env"),
    ("ci", {"image": f"{REGISTRY}/api "}, "image"),
    ("ci", {"check": "integration\t"}, "check"),
    ("ci", {"author": "alice\r\n"}, "author"),
    ("ci", {"event_id": " run-1"}, "event_id"),
    ("signals", {"kind": "approval", "env": "prod\n", "actor": "lead"}, "env"),
    ("signals", {"kind": "approval", "env": "prod", "actor": "release-lead\n"}, "actor"),
    ("signals", {"kind": "check", "env": "staging", "check": "load-test\n"}, "check"),
    ("changes", {"kind": "pr_merged", "env": "dev\n", "promotion_id": "p-1"}, "env"),
    ("changes", {"kind": "pr_merged", "env": "dev", "promotion_id": "p-1\n"}, "promotion_id"),
    ("promotions", {"kind": "open", "target_env": "dev\n", "source_env": "build"}, "target_env"),
    ("promotions", {"kind": "open", "target_env": "dev", "source_env": "build\n"}, "source_env"),
]


def test_whitespace_in_any_name_digest_or_environment_is_refused_at_once(
    cluster: Cluster,
) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    ids: dict[tuple[str, str], str] = {}
    for short, spoil, field in SPOILED:
        entry = {"kind": "ci", "service": "api", "digest": D, "promotion_id": "p-1", **spoil}
        if short == "promotions":
            entry.setdefault("target_env", "dev")
        stream = cluster.bus.stream(short)
        ids[stream, cluster.bus.redis.xadd(stream, entry).decode()] = field
    # The story: a newer build whose digest ends in a newline must not become the
    # candidate that an older, real build is then measured against.
    later = (NOW + timedelta(hours=1)).isoformat()
    ci = cluster.bus.stream("ci")
    newline = {"kind": "ci", "service": "api", "digest": digest_of("newer") + "\n"}
    ids[ci, cluster.bus.redis.xadd(ci, {**newline, "built_at": later}).decode()] = "digest"
    real = digest_of("real-and-older")
    cluster.build("api", real, built_at=NOW - timedelta(hours=1))
    cluster.wait_pinned("api", "dev", real)
    letters = wait_until(
        lambda: len(cluster.dead_letters()) >= len(ids) and cluster.dead_letters(),
        15,
        "every spoiled entry dead-lettered",
    )
    # Entry ids are per stream: two streams can hand out the same one.
    by_id = {(letter["stream"], letter["entry_id"]): letter for letter in letters}
    assert set(by_id) == set(ids)
    for key, field in ids.items():
        letter = by_id[key]
        assert letter["deliveries"] == "1", letter  # refused at once, not retried
        assert field in letter["error"] and "\n" not in letter["error"], letter["error"]
