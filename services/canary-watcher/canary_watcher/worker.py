"""canary-watcher's handlers: a merged `strategy: canary` promotion starts an analysis;
measurements on ferry:canary feed the judge; its verdict verifies the digest, pauses the canary
for a person, or rolls it back. The progress deadline and the built-in Prometheus queries are
due times in Redis that a background loop wakes for."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from canary_watcher import analysis
from canary_watcher.prometheus import measure
from ferry.adapters.canary_state import Analysis, CanaryStore
from ferry.core.canary import Measurement
from ferry.core.errors import Rejected
from ferry.core.events import CanaryMeasurement, Change, Event
from ferry.core.policy import PolicyError
from ferry.core.rollback import approvers_of
from ferry.runtime import resources, timers
from ferry.runtime.worker import WorkerContext, WorkerSpec


def handle_change(event: Event, ctx: WorkerContext) -> None:
    """A merge into a canary environment starts its analysis; a newer merge supersedes it, and a
    rollback ends it."""
    assert isinstance(event, Change)
    if event.kind != "pr_merged":
        return
    try:
        policy = resources.gitops(ctx).at_main().policy
        env_policy = policy.environment(event.env, event.service)
    except PolicyError:
        return  # an environment ferry.yaml no longer has: nothing to watch
    store = CanaryStore(ctx.bus)
    with ctx.bus.lock(f"canary:{event.service}:{event.env}"):
        current = store.get(event.service, event.env)
        if current is not None and current.id == event.promotion_id:
            return  # delivered twice
        if current is not None and current.open:
            why = (
                f"rolled back to {event.digest} (PR #{event.pr})"
                if event.rollback_of
                else f"superseded by {event.digest} (PR #{event.pr}), merged during the analysis"
            )
            analysis.end(ctx, current, "superseded", why, event)
        if event.rollback_of or env_policy.strategy != "canary":
            return
        analysis.start(
            ctx,
            Analysis(
                id=event.promotion_id,
                service=event.service,
                env=event.env,
                digest=event.digest,
                started_at=datetime.now(UTC).isoformat(),
                pr=event.pr,
            ),
            env_policy.canary,
            event,
        )


def handle_canary(event: Event, ctx: WorkerContext) -> None:
    """A measurement for the running analysis, or a person's word on a paused one."""
    assert isinstance(event, CanaryMeasurement)
    with ctx.bus.lock(f"canary:{event.service}:{event.env}"):
        current = CanaryStore(ctx.bus).get(event.service, event.env)
        if event.kind == "measurement":
            _measurement(ctx, event, current)
        else:
            _person(ctx, event, current)


def _measurement(ctx: WorkerContext, event: CanaryMeasurement, a: Analysis | None) -> None:
    assert event.metric is not None and event.phase is not None and event.digest is not None
    subject = f"{event.service}@{event.digest} -> {event.env}"
    if a is None or a.digest != event.digest or a.phase != "running":
        state = (
            "no canary analysis ran there"
            if a is None
            else f"the analysis of {a.digest} is {a.phase}"
            if a.digest == event.digest
            else f"the canary there is {a.digest}"
        )
        ctx.audit("measurement", subject, "ignored", f"{event.metric}: {state}", event)
        return
    m = Measurement(
        metric=event.metric,
        phase=event.phase,
        at=datetime.now(UTC),
        value=event.value,
        event_id=event.event_id,
    )
    analysis.record(ctx, a, m, event)


def _person(ctx: WorkerContext, event: CanaryMeasurement, a: Analysis | None) -> None:
    if a is None or not a.open:
        state = "none" if a is None else f"{a.digest} is {a.phase}"
        raise Rejected(
            f"no canary of {event.service} in {event.env} is running or paused ({state}): "
            f"nothing to {event.kind}"
        )
    if event.digest is not None and event.digest != a.digest:
        raise Rejected(
            f"the canary of {event.service} in {event.env} is {a.digest}, not {event.digest}"
        )
    policy = resources.gitops(ctx).at_main().policy
    allowed = approvers_of(policy.environment(a.env, a.service), dict(policy.approvers.teams))
    if allowed and event.actor not in allowed:
        raise Rejected(
            f"{event.actor} may not {event.kind} the canary of {a.service} in {a.env}: "
            f"that is for its approvers ({', '.join(sorted(allowed))})"
        )
    said = f"{event.kind}d by {event.actor}" + (f": {event.reason}" if event.reason else "")
    if event.kind == "promote":
        analysis.verify(ctx, a, said, event)
    else:
        analysis.roll_back(ctx, a, said, event, None)


def wake(ctx: WorkerContext, halt: threading.Event) -> None:
    """Sleep until something is due (a deadline, a query), handle it, and sleep again."""
    timers.run(ctx, analysis.due(ctx), lambda member, _token: _due(ctx, member), halt)


def _due(ctx: WorkerContext, member: str) -> None:
    what, service, env, analysis_id, *rest = member.split("|")
    store = CanaryStore(ctx.bus)
    if what == "deadline":
        with ctx.bus.lock(f"canary:{service}:{env}"):
            a = store.get(service, env)
            if a is not None and a.id == analysis_id and a.phase == "running":
                analysis.decide(ctx, a, None, datetime.now(UTC))
    elif what == "query":
        a = store.get(service, env)
        if a is not None and a.id == analysis_id and a.phase == "running":
            measure(ctx, a, rest[0])


WORKER = WorkerSpec(
    name="canary-watcher",
    handlers={"changes": handle_change, "canary": handle_canary},
    background=wake,
    description="judges canary analyses; verifies, pauses or rolls back",
)
