"""Work over many items on two cores: `ferry status` decides 30,000 cells at 10,000 services, and
Python runs one thread at a time. The second half of the items is worked on by a child process
forked for it (it starts with everything the parent read: main's pins, the policy, the imports)
and its results come back pickled through a pipe, while the parent works on the first half.

Only where forking is safe and pays: on Linux, in a process with one thread (a forked child gets
only the thread that forked, and any lock another thread held stays held), with enough items to be
worth a process (forking and pickling the results cost about a tenth of the work), and with a core
to spare (see `_core_free`). On a machine whose cores are all busy, a child only competes with
the parent and the answer comes later than from one process. A child that fails leaves its half
to the parent, which then raises the error itself if there is one."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below this many items a child costs more than it saves (forking, pickling the results).
SPLIT_AT = 3000


def in_two(items: list[T], work: Callable[[list[T]], list[R]], at: int | None = None) -> list[R]:
    """WORK(ITEMS): one result per item, in order; with at least AT items (default SPLIT_AT)
    and where it is safe, the second half worked on in a forked child at the same time."""
    if len(items) < (SPLIT_AT if at is None else at) or not _can_fork() or not _core_free():
        return work(items)
    half = len(items) // 2
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its results, or nothing when it fails
        code = 1
        try:
            os.close(read_end)
            data = pickle.dumps(work(items[half:]), pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)  # no atexit handler, no buffered output of the parent flushed twice
    os.close(write_end)
    try:
        first = work(items[:half])
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.close(read_end)
        os.waitpid(pid, 0)
        raise
    with os.fdopen(read_end, "rb") as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return first + work(items[half:])
    second: list[R] = pickle.loads(data)
    return first + second


def _can_fork() -> bool:
    return sys.platform == "linux" and threading.active_count() == 1


def _core_free() -> bool:
    """Is a core idle for the child? Two or more, no more processes running right now than
    leave one idle (/proc/loadavg's running count, this one included), and the machine not
    saturated over the last minute (the load average below the cores: a busy machine may
    show a free core for an instant)."""
    cores = len(os.sched_getaffinity(0))
    try:
        fields = Path("/proc/loadavg").read_text().split()
        minute, running = float(fields[0]), int(fields[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return False
    return cores >= 2 and running <= cores - 1 and minute < cores
