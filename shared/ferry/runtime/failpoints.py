"""Failpoints: named places where a test can make a worker die as a real crash would (SIGKILL),
to prove that redelivery finishes the work exactly once. Off unless FERRY_FAILPOINTS names them."""

from __future__ import annotations

import os
import signal


def hit(name: str) -> None:
    """Kill this process at NAME if FERRY_FAILPOINTS (comma-separated) lists it."""
    armed = os.environ.get("FERRY_FAILPOINTS", "")
    if armed and name in {p.strip() for p in armed.split(",")}:
        os.kill(os.getpid(), signal.SIGKILL)
