"""preview-reaper's handler of `ferry:previews`: record the event, check the team's quota when a
pull request becomes a preview, and leave the next due time for the timer."""

from __future__ import annotations

from datetime import datetime

from ferry.adapters.preview_store import PreviewStore, Record
from ferry.core.events import Event, PreviewEvent, now_utc
from ferry.core.policy import Previews
from ferry.core.previews import Admission, Mark, admit, preview_status
from ferry.runtime import resources
from ferry.runtime.worker import WorkerContext
from preview_reaper.decisions import evict, refuse, settle


def store(ctx: WorkerContext) -> PreviewStore:
    if "previews" not in ctx.resources:
        ctx.resources["previews"] = PreviewStore(ctx.bus)
    return ctx.resources["previews"]


def policy(ctx: WorkerContext) -> Previews:
    return resources.gitops(ctx).policy().previews


def handle_preview_event(event: Event, ctx: WorkerContext) -> None:
    """Record what happened to an application PR; the rule and the timer do the rest."""
    assert isinstance(event, PreviewEvent)
    rules, previews, now = policy(ctx), store(ctx), now_utc()

    def record_event(record: Record) -> tuple[bool, str, str]:
        new = record.add_event(event)
        status = settle(rules, record, now)
        return new, status.state, status.reason

    new, state, reason = previews.change(event.repo, event.pr, record_event)
    if not new:
        ctx.log.info("event seen already", subject=event.subject)
    elif state == "pending":
        check_quota(ctx, rules, event.repo, event.pr, event)
    else:
        ctx.audit("track", event.subject, state, f"{event.kind}: {reason}", event)


def check_quota(
    ctx: WorkerContext, rules: Previews, repo: str, pr: int, event: Event | None
) -> None:
    """Admit or refuse a new preview, one team at a time (so two newcomers never both take the
    last place)."""
    previews = store(ctx)
    record = previews.load(f"{repo}#{pr}")
    now = now_utc()
    status = preview_status(rules, record.history(), now) if record else None
    if status is None or status.state != "pending" or status.period is None:
        return
    team = status.team or ""
    with ctx.bus.lock(f"previews:team:{team}"):
        others = {}
        # Without a quota nobody else's state matters: do not read the whole team.
        for key in previews.team_members(team) if rules.quota_per_team is not None else []:
            other = previews.load(key)
            if other is not None:
                others[key] = preview_status(rules, other.history(), now)
        answer = admit(rules, status.team, f"{repo}#{pr}", others)
        if answer.evict is not None:
            _evict(ctx, rules, answer, f"{repo}#{pr}", now)
        period = status.period
        subject = f"{repo}#{pr}"

        def decide(record: Record) -> str:
            current = preview_status(rules, record.history(), now)
            if current.state != "pending" or current.period != period:
                return "moved on"  # another replica decided first, or the PR changed meanwhile
            if answer.admit:
                record.marks.append(
                    Mark(kind="admitted", at=now, period=period, reason=answer.reason)
                )
            else:
                refuse(rules, record, now, period, answer.reason)
            settle(rules, record, now)
            return "admitted" if answer.admit else "refused"

        outcome = previews.change(repo, pr, decide)
    if outcome != "moved on":
        ctx.audit("admit", subject, outcome + _dry(rules, outcome), answer.reason, event)


def _evict(
    ctx: WorkerContext, rules: Previews, answer: Admission, newcomer: str, now: datetime
) -> None:
    assert answer.evict is not None
    repo, _, pr = answer.evict.rpartition("#")

    def reap(record: Record) -> bool:
        current = preview_status(rules, record.history(), now)
        if not current.live or current.period is None:
            return False
        why = f"team {current.team or '-'} is at its quota; evicted ({rules.evict}) for {newcomer}"
        evict(rules, record, now, current.period, why)
        settle(rules, record, now)
        return True

    if store(ctx).change(repo, int(pr), reap):
        ctx.audit("reap", answer.evict, "evicted" + _dry(rules, "reaped"), answer.reason, None)


def _dry(rules: Previews, outcome: str) -> str:
    return " (dry run)" if rules.dry_run and outcome in ("refused", "reaped", "warned") else ""
