"""The reconcile pass: what webhooks missed (the ingress was down, a delivery was lost, no webhook
was ever configured), found by comparing Ferry's open promotions with main and with the forge, and
published once.

For every promotion Ferry believes requested or open: if main already pins its digest in its
target environment, or its pull request is merged on the forge, `pr_merged`; if the pull request
is closed without merging, `pr_closed`. Each is the change pr-writer or a webhook would have
published, under the same once key, so a pass that runs twice, or on two replicas, or after the
webhook did arrive, publishes nothing more. The forge is asked once per open promotion (its pull
request), within the fleet's request budget; main costs no forge request at all.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ferry.adapters.bus import Bus
from ferry.adapters.state import PromotionStore
from ferry.app.webhooks import promotion_change
from ferry.core.events import Change, pr_key
from ferry.runtime.logging import get_logger
from ferry.runtime.settings import Settings

FOUND = "found by the reconcile pass (no webhook reported it)"


def reconcile(bus: Bus, forge: Any, main: Any) -> list[Change]:
    """One pass; returns the changes it published (those published before are left out)."""
    store = PromotionStore(bus)
    published: list[Change] = []
    for pid, record in store.unfinished():
        change = _missed(pid, pr_key(pid, store.attempt(pid)), record, forge, main)
        if change is not None and bus.emit(change) is not None:
            published.append(change)
    return published


def _missed(pid: str, key: str, record: dict[str, str], forge: Any, main: Any) -> Change | None:
    number = int(record["pr"]) if record.get("pr") else None

    def change(kind: str, **extra: Any) -> Change:
        return promotion_change(pid, record, kind, pr=number, reason=FOUND, **extra)

    pr = forge.get_pr(number) if number is not None else forge.find_pr(key)
    if pr is not None:
        number = pr.number
        if pr.state == "merged":
            return change("pr_merged", merge_commit=pr.merge_commit)
        if pr.state == "closed":
            return change("pr_closed")
        return None
    if main.pinned(record["service"], record["target_env"]) == record["digest"]:
        return change("pr_merged")  # merged some other way (by hand, or on a forge without PRs)
    return None


def run_once(settings: Settings, bus: Bus) -> list[Change]:
    """A pass with the forge and main as configured (one replica at a time does it)."""
    from ferry.adapters.gitops import GitOpsRepo
    from ferry.runtime import resources

    forge = resources.forge(settings)
    repo = GitOpsRepo(
        remote=resources.gitops_remote(settings), workdir=settings.workdir("ingress-reconcile")
    )
    return reconcile(bus, forge, repo.at_main())


async def run_periodically(settings: Settings, bus: Bus, counter: Any) -> None:
    """At start and every FERRY_INGRESS_RECONCILE_S: a pass, by one replica per period."""
    log = get_logger().bind(worker="ingress")
    key = settings.key("reconcile", "lease")
    period = settings.ingress_reconcile_s
    while True:
        try:
            # One replica per period does the pass; the others wait for the next period.
            mine = bus.redis.set(key, settings.consumer, nx=True, px=int(period * 900))
            if mine:
                started = time.monotonic()
                found = await asyncio.to_thread(run_once, settings, bus)
                counter.inc(len(found))
                log.info(
                    "reconciled",
                    published=[f"{c.kind} {c.service}@{c.digest[:19]} -> {c.env}" for c in found],
                    seconds=round(time.monotonic() - started, 3),
                )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the next period tries again; the log says why
            log.warning("reconcile pass failed; trying again next period", error=str(e))
        await asyncio.sleep(period)
