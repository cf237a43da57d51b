"""`read_batched` with a hint: what the last read with the same hint fetched is fetched first,
so that the read usually runs once; a guess gone stale costs a round trip, never a wrong
answer."""

from __future__ import annotations

from pathlib import Path

from ferry.adapters.bus import Bus
from ferry.app.batch import Cost, read_batched
from ferry.runtime.settings import Settings


def test_a_hinted_read_fetches_first_what_the_last_one_fetched(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    bus = Bus(Settings(redis_url=redis_url, stream_prefix=prefix, home=tmp_path), redis_url)
    key = bus.settings.key
    bus.redis.set(key("first"), "second")  # names the key read next: a dependent read
    bus.redis.set(key("second"), "1")
    runs: list[int] = []

    def read(b: Bus) -> tuple[bytes | None, bytes | None]:
        runs.append(1)
        first = b.redis.get(key("first"))
        return first, b.redis.get(key(first.decode())) if first else None

    def measured(hint: object) -> tuple[tuple[bytes | None, bytes | None], int, int]:
        runs.clear()
        cost = Cost()
        got = read_batched(bus, read, cost, hint=hint)
        return got, len(runs), cost.round_trips

    # Unknown hint: learn `first`, then `second`, then answer.
    assert measured(("t", 1)) == ((b"second", b"1"), 3, 2)
    # Known: both fetched in one round trip, one run.
    assert measured(("t", 1)) == ((b"second", b"1"), 1, 1)
    # Another hint knows nothing yet; no hint, as ever.
    assert measured(("t", 2)) == ((b"second", b"1"), 3, 2)
    assert measured(None) == ((b"second", b"1"), 3, 2)
    # The state moved on: `first` names another key. The guess fetches the old one too; the
    # read still answers from what is there now, a round trip later, and the guess is dropped,
    # to be learnt afresh (without the old key) by the next read.
    bus.redis.set(key("first"), "third")
    bus.redis.set(key("third"), "3")
    assert measured(("t", 1)) == ((b"third", b"3"), 2, 2)
    assert measured(("t", 1)) == ((b"third", b"3"), 3, 2)
    cost = Cost()
    assert read_batched(bus, read, cost, hint=("t", 1)) == (b"third", b"3")
    assert (cost.round_trips, cost.commands) == (1, 2)  # `second` no longer fetched


def test_a_decision_under_a_kept_lock_learns_its_hint_too(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """As a worker's batch decides (inside `deferring` and `keeping`, each decision's lock's
    SET NX queued in front of its first read): the first decision about a subject learns what
    its read fetches; the next one about it, after another subject's lock took the kept one's
    place (its reads dropped), fetches all of it in the lock's round trip and reads once."""
    bus = Bus(Settings(redis_url=redis_url, stream_prefix=prefix, home=tmp_path), redis_url)
    key = bus.settings.key
    for subject in "ab":
        bus.redis.set(key(subject), f"{subject}-next")
        bus.redis.set(key(f"{subject}-next"), subject.upper())
    seen: list[tuple[str, bytes | None, int, int]] = []

    def decide(subject: str) -> None:
        runs: list[int] = []

        def read(b: Bus) -> bytes | None:
            runs.append(1)
            first = b.redis.get(key(subject))
            return b.redis.get(key(first.decode())) if first else None

        def work(_: object) -> None:
            cost = Cost()
            got = read_batched(bus, read, cost, hint=("decide", subject))
            bus.check_locks()
            seen.append((subject, got, len(runs), cost.round_trips))

        bus.locked(f"cell:{subject}", work)

    with bus.deferring(), bus.keeping():
        for subject in "aba":
            decide(subject)
    assert seen == [("a", b"A", 3, 2), ("b", b"B", 3, 2), ("a", b"A", 1, 1)]
