"""One canary analysis: started by a merge, fed by measurements, ended by the judge's verdict
(or a person's word), a newer merge, or a rollback. Callers hold the (service, environment)
lock, so each step sees the one before it."""

from __future__ import annotations

from datetime import UTC, datetime

from ferry.adapters.canary_state import Analysis, CanaryStore, VerifiedStore
from ferry.adapters.due import DueTimes
from ferry.core.canary import Measurement, Verdict, judge
from ferry.core.events import Change, Event
from ferry.core.policy import Canary
from ferry.core.rollback import CANARY_WATCHER, rollback_command
from ferry.core.windows import human
from ferry.runtime import resources
from ferry.runtime.worker import WorkerContext

NAME = "canary-watcher"


def due(ctx: WorkerContext) -> DueTimes:
    return DueTimes(ctx.bus, NAME)


def deadline_member(a: Analysis) -> str:
    return f"deadline|{a.service}|{a.env}|{a.id}"


def query_member(a: Analysis, metric: str) -> str:
    return f"query|{a.service}|{a.env}|{a.id}|{metric}"


def subject(a: Analysis) -> str:
    return f"{a.service}@{a.digest} -> {a.env}"


def canary_policy(ctx: WorkerContext, a: Analysis) -> Canary:
    return resources.gitops(ctx).at_main().policy.environment(a.env, a.service).canary


def start(ctx: WorkerContext, a: Analysis, canary: Canary, cause: Event) -> None:
    """Record A as the running analysis; its deadline and each Prometheus query become due."""
    CanaryStore(ctx.bus).put(a)
    timers = due(ctx)
    timers.set(deadline_member(a), a.started() + canary.progress_deadline)
    for metric in canary.metrics:
        if metric.prometheus is not None:
            timers.set(query_member(a, metric.name), a.started())
    ctx.audit(
        "canary",
        subject(a),
        "started",
        f"analysis of {len(canary.metrics) or 'any'} metrics, {canary.count} measurements each, "
        f"progress deadline {human(canary.progress_deadline)}",
        cause,
    )


def end(
    ctx: WorkerContext,
    a: Analysis,
    phase: str,
    reason: str,
    cause: Event | None,
    rollback_to: str | None = None,
) -> Analysis:
    """Close A with PHASE; nothing about it is due any more. Callers publish the effects of the
    verdict first: a crash in between redelivers the event to a still open analysis."""
    ended = CanaryStore(ctx.bus).update(
        a,
        phase=phase,
        reason=reason,
        decided_at=datetime.now(UTC).isoformat(),
        rollback_to=rollback_to,
    )
    timers = due(ctx)
    timers.cancel(deadline_member(a))
    for metric in canary_policy(ctx, a).metrics:
        timers.cancel(query_member(a, metric.name))
    ctx.audit("canary", subject(a), phase, reason, cause)
    return ended


def record(ctx: WorkerContext, a: Analysis, m: Measurement, cause: Event) -> None:
    """Add M (once per event id) and act on the verdict."""
    # A second delivery adds nothing, but is judged again: the first may have died before acting.
    CanaryStore(ctx.bus).add(a, m.event_id, m)
    decide(ctx, a, cause, datetime.now(UTC))


def decide(ctx: WorkerContext, a: Analysis, cause: Event | None, now: datetime) -> None:
    """Judge A at NOW: act on a decided verdict, or move its deadline."""
    canary = canary_policy(ctx, a)
    verdict = judge(canary, CanaryStore(ctx.bus).measurements(a), a.started(), now)
    if verdict.phase == "running":
        assert verdict.deadline is not None
        due(ctx).set(deadline_member(a), verdict.deadline)
    elif verdict.phase == "successful":
        verify(ctx, a, verdict.reason, cause)
    elif verdict.phase == "inconclusive":
        end(
            ctx,
            a,
            "paused",
            f"inconclusive: {verdict.reason}; decide with `ferry canary promote|abort "
            f"{a.service} {a.env} --as USER`",
            cause,
        )
    else:
        roll_back(ctx, a, f"canary {verdict.phase}: {verdict.reason}", cause, verdict)


def verify(ctx: WorkerContext, a: Analysis, reason: str, cause: Event | None) -> None:
    VerifiedStore(ctx.bus).set(a.service, a.env, a.digest)
    ctx.bus.emit(
        Change.about(
            "verified",
            promotion_id=a.id,
            service=a.service,
            digest=a.digest,
            env=a.env,
            pr=a.pr,
            reason=reason,
        )
    )
    end(ctx, a, "verified", reason, cause)


def roll_back(
    ctx: WorkerContext, a: Analysis, reason: str, cause: Event | None, verdict: Verdict | None
) -> None:
    """Ask pr-writer to pin the last verified digest (or the one pinned before this one)."""
    target = VerifiedStore(ctx.bus).get(a.service, a.env)
    if target is None or target == a.digest:
        target = resources.gitops(ctx).pinned_before(a.service, a.env, a.digest)
    blamed = [_describe(m) for m in (verdict.blamed if verdict else ())]
    if target is None:
        end(ctx, a, "failed", f"{reason}; nothing was pinned before it: roll back by hand", cause)
        return
    named = f"; failed by {', '.join(blamed)}" if blamed else ""
    ctx.bus.publish_once(
        f"canary:{a.id}:rollback",
        rollback_command(
            service=a.service,
            env=a.env,
            to=target,
            rolls_back=a.digest,
            actor=CANARY_WATCHER,
            reason=reason,
            request=f"canary:{a.id}",
            force=True,
            evidence={"measurements": blamed, "canary": a.id},
        ),
    )
    end(ctx, a, "failed", f"{reason}{named}; rolling back to {target}", cause, rollback_to=target)


def _describe(m: Measurement) -> str:
    value = f"={m.value}" if m.value is not None else ""
    return f"{m.metric} {m.phase}{value} at {m.at:%H:%M:%S} ({m.event_id})"
