"""The timer loop every worker with due times runs in its background thread: claim what is due,
handle each member, release it, and sleep until the next due time or a wake-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ferry.adapters.due import DueTimes
from ferry.runtime import failpoints
from ferry.runtime.logging import set_context
from ferry.runtime.worker import WorkerContext

# Longest sleep without looking at the sorted set: a safety net for a wake-up lost with a broken
# connection or popped by another replica, not the way due times are noticed.
MAX_SLEEP_S = 5.0
CLAIM_BATCH = 16


def run(
    ctx: WorkerContext,
    timers: DueTimes,
    handle: Callable[[str, str], None],
    stop: threading.Event,
    *,
    longest_s: float = MAX_SLEEP_S,
) -> None:
    """Until STOP: claim the members due now (leased for FERRY_LOCK_TTL_MS), HANDLE(member, token)
    each and release it. A handling that fails keeps its lease: the member is due again when the
    lease ends, on this replica or another."""
    lease_ms = ctx.settings.lock_ttl_ms
    while not stop.is_set():
        try:
            claim = timers.claim(time.time(), lease_ms, CLAIM_BATCH)
            if claim.members:
                failpoints.hit(f"{ctx.name}.after-claim")
            for member in claim.members:
                set_context(worker=ctx.name, due=member)
                try:
                    handle(member, claim.token)
                except Exception as e:  # noqa: BLE001 - one member must not hold up the others
                    ctx.log.warning(
                        "due work failed; its lease brings it back",
                        error=f"{type(e).__name__}: {e}",
                    )
                    continue
                timers.release(member, claim.token)
            if not claim.members:
                timers.wait(longest_s, stop)
        except Exception as e:  # noqa: BLE001 - Redis may be away: try again shortly
            ctx.log.warning("timer failed", error=f"{type(e).__name__}: {e}")
            stop.wait(1.0)
