"""preview-reaper's timer: sleep until the earliest due preview (or until an event may have
brought one closer), claim what is due, warn or reap it, and do the forge actions left to do.

A forge error or timeout only postpones an action (retried with a growing delay): it never
decides anything. Only an observed close, an observed label removal or an expiry ends a preview.
"""

from __future__ import annotations

import functools
import threading
import time

from ferry.adapters.forge.base import ForgeError, PermanentForgeError, TransientForgeError
from ferry.adapters.preview_actions import (
    ForgePreviewActions,
    LocalPreviewActions,
    PreviewActions,
)
from ferry.adapters.preview_store import Action, Record
from ferry.core.events import now_utc
from ferry.core.policy import Previews
from ferry.runtime import timers
from ferry.runtime.worker import WorkerContext
from preview_reaper.decisions import decide, done, settle
from preview_reaper.handlers import check_quota, policy, store

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


def actions(ctx: WorkerContext, rules: Previews) -> PreviewActions:
    """Where the reaper acts: the local forge's record (also every forge's, in dry run), or the
    application PRs on the HTTP forge."""
    key = "preview-actions-dry" if rules.dry_run else "preview-actions"
    if key not in ctx.resources:
        if rules.dry_run or ctx.settings.forge == "local":
            ctx.resources[key] = LocalPreviewActions(store(ctx), dry_run=rules.dry_run)
        else:
            # A call must end well within the lease, so no other replica takes the preview over.
            timeout = lease_ms(ctx) / 3000
            ctx.resources[key] = ForgePreviewActions(ctx.settings, ctx.bus.redis, timeout_s=timeout)
    return ctx.resources[key]


def lease_ms(ctx: WorkerContext) -> int:
    # A claimed preview is ours for as long as a per-subject lock lives: a dead replica's claim
    # frees within the same bound.
    return ctx.settings.lock_ttl_ms


def run(ctx: WorkerContext, stop: threading.Event) -> None:
    """The timer loop of one replica, until STOP is set."""
    timers.run(ctx, store(ctx).due, functools.partial(look, ctx), stop)


def look(ctx: WorkerContext, key: str, token: str) -> None:
    """Handle one claimed preview: take what the rule says is due, then do its forge actions."""
    repo, _, number = key.rpartition("#")
    pr = int(number)
    rules, previews = policy(ctx), store(ctx)
    now = now_utc()

    def take(record: Record) -> tuple[str, str, str] | None:
        status = settle(rules, record, now)
        if status.state == "pending":
            return ("pending", "", "")
        mark = decide(rules, record, now, status)
        if mark is None:
            return None
        settle(rules, record, now)
        return (mark.kind, mark.reason, status.team or "")

    taken = previews.change(repo, pr, take)
    if taken is not None and taken[0] == "pending":
        check_quota(ctx, rules, repo, pr, None)
    elif taken is not None:
        kind, reason, _ = taken
        action = "warn" if kind == "warned" else "reap"
        outcome = kind + (" (dry run)" if rules.dry_run else "")
        ctx.audit(action, key, outcome, reason, None)
    record = previews.load(key)
    if record is not None:
        _act(ctx, rules, record, token)
    previews.change(repo, pr, lambda r: settle(rules, r, now_utc()), lease=token)


def _act(ctx: WorkerContext, rules: Previews, record: Record, token: str) -> None:
    """Do RECORD's queued actions in order; the first failure postpones it and the rest."""
    previews = store(ctx)
    now = time.time()
    for action in list(record.outbox):
        if action.next_try > now:
            return
        if not previews.due.renew(record.key, token, lease_ms(ctx), now):
            return  # our claim ran out: whoever holds it now does the rest
        try:
            _do(actions(ctx, rules), record, action)
        except ForgeError as e:
            _postpone(ctx, record, action, e)
            return
        previews.change(record.repo, record.pr, functools.partial(done, action_id=action.id))


def _do(forge: PreviewActions, record: Record, action: Action) -> None:
    if action.kind == "remove_label":
        forge.remove_label(record.repo, record.pr, action.arg)
    else:
        forge.comment(record.repo, record.pr, action.arg)


def _postpone(ctx: WorkerContext, record: Record, action: Action, error: ForgeError) -> None:
    """Retry ACTION later: after the forge's Retry-After, or a delay doubling from 1 s to 60 s
    (at once 60 s for a permanent error: bad credentials may be fixed, a person must look)."""
    delay = min(RETRY_FIRST_S * 2**action.attempts, RETRY_MAX_S)
    if isinstance(error, PermanentForgeError):
        delay = RETRY_MAX_S
    elif isinstance(error, TransientForgeError) and error.retry_after:
        delay = max(delay, error.retry_after)
    ctx.log.warning(
        "forge action postponed",
        subject=record.key,
        action=action.kind,
        error=str(error),
        retry_in_s=delay,
    )

    def postpone(r: Record) -> None:
        for queued in r.outbox:
            if queued.id == action.id:
                queued.attempts += 1
                queued.error = str(error)
                queued.next_try = time.time() + delay

    store(ctx).change(record.repo, record.pr, postpone)
