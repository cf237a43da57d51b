"""The one due-time mechanism (ferry.adapters.due) against a real server: leases, what is set
while a member is leased, renewals, wake-ups."""

from __future__ import annotations

import threading
import time

import pytest

from ferry.adapters.due import DueTimes
from tests.helpers import Cluster


@pytest.fixture
def timers(cluster: Cluster) -> DueTimes:
    return DueTimes(cluster.bus, "test")


def test_a_due_member_is_claimed_by_one_replica_only(timers: DueTimes) -> None:
    now = time.time()
    timers.set("a", now - 1)
    timers.set("later", now + 3600)
    first = timers.claim(now, 10_000)
    second = timers.claim(now, 10_000)
    assert first.members == ["a"] and second.members == []
    # Leased: it comes back at the lease's end, not before.
    assert timers.when("a") == pytest.approx(now + 10, abs=0.01)


def test_a_member_whose_claimer_died_is_due_again_when_the_lease_ends(timers: DueTimes) -> None:
    now = time.time()
    timers.set("a", now - 1)
    assert timers.claim(now, 50).members == ["a"]  # ... and its claimer dies here
    time.sleep(0.1)
    assert timers.claim(time.time(), 10_000).members == ["a"]


def test_released_without_news_a_member_is_due_no_more(timers: DueTimes) -> None:
    now = time.time()
    timers.set("a", now - 1)
    claim = timers.claim(now, 10_000)
    assert timers.release("a", claim.token)
    assert timers.when("a") is None
    assert not timers.release("a", claim.token)  # twice: nothing more to do


def test_a_time_set_while_leased_waits_for_the_release(timers: DueTimes) -> None:
    now = time.time()
    timers.set("a", now - 1)
    claim = timers.claim(now, 10_000)
    timers.set("a", now + 60)  # e.g. an event moved the deadline while the timer handles it
    assert timers.when("a") == pytest.approx(now + 10, abs=0.01)  # still the lease
    # Another replica looking at it meanwhile neither takes it nor loses the new time.
    assert timers.claim(now + 11, 10_000).members == []
    timers.release("a", claim.token)
    assert timers.when("a") == pytest.approx(now + 60, abs=0.01)


def test_the_holders_own_word_ends_its_lease(timers: DueTimes) -> None:
    now = time.time()
    timers.set("a", now - 1)
    claim = timers.claim(now, 10_000)
    timers.set("a", now + 5, token=claim.token)
    assert timers.when("a") == pytest.approx(now + 5, abs=0.01)
    assert timers.claim(now + 6, 10_000).members == ["a"]


def test_a_renewed_lease_keeps_others_off_and_a_lost_one_says_so(timers: DueTimes) -> None:
    now = time.time()
    timers.set("a", now - 1)
    claim = timers.claim(now, 10_000)
    assert timers.renew("a", claim.token, 60_000, now)
    assert timers.when("a") == pytest.approx(now + 60, abs=0.01)
    assert not timers.renew("a", "someone-else", 60_000, now)


def test_setting_a_due_time_wakes_a_sleeping_replica(timers: DueTimes) -> None:
    stop = threading.Event()
    timers.set("far", time.time() + 3600)
    timers.redis.delete(timers.wake_key)  # the wake-up of that set: this sleeper is already up
    woke = threading.Event()

    def sleeper() -> None:
        timers.wait(60, stop)
        woke.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    try:
        time.sleep(0.2)
        assert not woke.is_set()
        timers.set("soon", time.time() + 1)
        assert woke.wait(10)
    finally:
        stop.set()
        thread.join(5)
