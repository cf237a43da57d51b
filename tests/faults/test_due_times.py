"""A replica killed between claiming a due time and handling it loses nothing: the due time
fires once, on another replica, when the dead one's lease ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from ferry.adapters.due import DueTimes
from tests.helpers import Cluster, wait_until

# One replica of a worker whose timer handles each due member by recording it.
REPLICA = """
import sys, threading
from ferry.adapters.bus import Bus
from ferry.runtime.logging import get_logger
from ferry.runtime.settings import Settings
from ferry.runtime.timers import run
from ferry.runtime.worker import WorkerContext
from ferry.adapters.due import DueTimes

settings = Settings()
bus = Bus(settings, settings.redis_url)
ctx = WorkerContext(name="due-test", settings=settings, bus=bus, log=get_logger())
timers = DueTimes(bus, "due-test")
fired = settings.key("fired")
run(ctx, timers, lambda member, token: bus.redis.rpush(fired, member), threading.Event())
"""


def replica(cluster: Cluster, **env: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", REPLICA],
        env=cluster.env(**env),
    )
    cluster.procs.append(proc)
    return proc


def test_a_due_time_claimed_by_a_replica_killed_before_handling_it_fires_once(
    cluster: Cluster,
) -> None:
    timers = DueTimes(cluster.bus, "due-test")
    fired = cluster.bus.settings.key("fired")
    timers.set("deadline|api|prod", time.time() - 1)
    doomed = replica(cluster, FERRY_FAILPOINTS="due-test.after-claim")
    doomed.wait(timeout=30)
    assert doomed.returncode == -signal.SIGKILL
    # It claimed the member and died holding it: not handled, not lost.
    assert cluster.bus.redis.lrange(fired, 0, -1) == []
    assert cluster.bus.redis.exists(timers.lease_key("deadline|api|prod"))
    assert timers.when("deadline|api|prod") is not None

    replica(cluster)
    wait_until(lambda: timers.when("deadline|api|prod") is None, 30, "the due time handled")
    assert cluster.bus.redis.lrange(fired, 0, -1) == [b"deadline|api|prod"]
