"""gate-evaluator's handlers: CI results and merged changes in, promotion commands out."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from ferry.adapters.gitops import MainSnapshot
from ferry.adapters.state import (
    Candidate,
    CandidateStore,
    EvidenceStore,
    LiveStore,
    SignalStore,
    Waiting,
    WaitingStore,
)
from ferry.app.facts import gather
from ferry.core.errors import Rejected
from ferry.core.events import Change, CiResult, Event, PromotionCommand, Signal, promotion_id
from ferry.core.gates import evaluate
from ferry.core.policy import Policy
from ferry.runtime import resources
from ferry.runtime.worker import WorkerContext, WorkerSpec


def handle_ci_result(event: Event, ctx: WorkerContext) -> None:
    """A build (no env) is a candidate for the environments promoted from `build`; a CI result in
    an environment is evidence for the environments promoted from there."""
    assert isinstance(event, CiResult)
    main = resources.gitops(ctx).at_main()
    policy = main.policy
    source = event.env or "build"
    if event.env is not None:
        _known_env(policy, event.env)
    targets = policy.targets_from(source, event.service)
    subject = f"{event.service}@{event.digest}"
    checked_env = event.env or (targets[0] if targets else None)
    if checked_env is not None:
        _check_image(main, event, checked_env)
    if event.env is None and event.status == "success":
        built = event.built_at or event.occurred_at
        CandidateStore(ctx.bus).record_build(
            event.service, event.digest, built.timestamp(), event.author
        )
    if event.env is not None:
        EvidenceStore(ctx.bus).record_check(
            event.service, event.digest, event.env, event.check, event.status, event.url
        )
    if event.status != "success":
        where = f"in {event.env}" if event.env else "(build)"
        ctx.audit("promote", subject, "refused", f"CI failed {where}: nothing moves", event)
        return
    if not targets:
        ctx.audit("promote", subject, "nothing", f"no environment is promoted from {source}", event)
    for target in targets:
        _consider(ctx, event, event.service, event.digest, source, target)


def handle_change(event: Event, ctx: WorkerContext) -> None:
    """A merge makes a digest live in an environment: the environments after it may follow."""
    assert isinstance(event, Change)
    if event.kind == "promotion_failed":
        # A replay of the events that asked for it may ask again (after someone fixed the cause).
        ctx.bus.forget_once(f"promotion:{event.promotion_id}:open")
        ctx.audit(
            "promote",
            f"{event.service}@{event.digest} -> {event.env}",
            "can retry",
            f"after fixing the cause, `ferry replay ci --service {event.service}` asks again",
            event,
        )
        return
    if event.kind != "pr_merged":
        return
    LiveStore(ctx.bus).mark(event.service, event.env, event.digest, event.occurred_at)
    policy = resources.gitops(ctx).at_main().policy
    for target in policy.targets_from(event.env, event.service):
        _consider(ctx, event, event.service, event.digest, event.env, target)


def handle_signal(event: Event, ctx: WorkerContext) -> None:
    """A person's approval or rejection of a digest for an environment, or a job's check result
    against a digest live in an environment: record it, then decide again."""
    assert isinstance(event, Signal)
    policy = resources.gitops(ctx).at_main().policy
    _known_env(policy, event.env)
    subject = f"{event.service}@{event.digest} -> {event.env}"
    if event.kind == "check":
        if not event.check or event.status is None:
            raise Rejected("a check signal needs both 'check' and 'status' (success or failure)")
        EvidenceStore(ctx.bus).record_check(
            event.service, event.digest, event.env, event.check, event.status, None
        )
        ctx.audit("check", subject, event.status, f"{event.check} {event.status}", event)
        for target in policy.targets_from(event.env, event.service):
            _consider(ctx, event, event.service, event.digest, event.env, target)
        return
    if not event.actor:
        raise Rejected(f"an {event.kind} needs 'actor': who approves or rejects")
    reason = event.reason or ""
    SignalStore(ctx.bus).record(
        event.kind, event.service, event.env, event.digest, event.actor, reason
    )
    said = f"by {event.actor}" + (f": {reason}" if reason else "")
    ctx.audit(event.kind, subject, "recorded", said, event)
    source = policy.environment(event.env, event.service).promote_from
    _consider(ctx, event, event.service, event.digest, source, event.env)


def tick(ctx: WorkerContext) -> None:
    """Look again at promotions held by time or people: a soak that ended, a window that opened."""
    for pid, w in WaitingStore(ctx.bus).all().items():
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(worker=ctx.name, promotion_id=pid, timer=True)
        try:
            _consider(ctx, None, w.service, w.digest, w.source, w.target)
        except Exception as e:  # noqa: BLE001 - one stuck promotion must not hold up the others
            ctx.log.warning("timer could not decide; trying again next tick", error=str(e))


def _consider(
    ctx: WorkerContext, cause: Event | None, service: str, digest: str, source: str, target: str
) -> None:
    subject = f"{service}@{digest} -> {target}"
    pid = promotion_id(service, digest, target)
    structlog.contextvars.bind_contextvars(promotion_id=pid)
    # One decision at a time per (service, environment), whichever replica holds the event;
    # main is read inside the lock, so each decision sees what the one before it did.
    with ctx.bus.lock(f"decide:{service}:{target}"):
        main = resources.gitops(ctx).at_main()
        env_policy = main.policy.environment(target, service)
        live = source == "build" or main.pinned(service, source) == digest
        now = datetime.now(UTC)
        if live and source != "build":
            # Pinned by hand, or merged before Ferry kept track: the soak starts when seen.
            LiveStore(ctx.bus).mark(service, source, digest, now)
        decision = evaluate(
            env_policy=env_policy,
            digest=digest,
            source_env=source,
            target_env=target,
            pinned_in_target=main.pinned(service, target),
            live_in_source=live,
            evidence=EvidenceStore(ctx.bus).get(service, digest, source),
            facts=gather(ctx.bus, main.policy, service, digest, source, target, now),
        )
        waiting = WaitingStore(ctx.bus)
        if decision.action != "promote":
            failed = [g for g in decision.gates if g.status == "failed"]
            statuses = ",".join(f"{g.gate}={g.status}" for g in decision.gates)
            before = waiting.get(pid)
            if live and decision.action == "wait" and not failed:
                waiting.add(pid, Waiting(service, digest, source, target, statuses))
            else:
                waiting.remove(pid)
            if cause is None and before is not None and before.gates == statuses:
                return  # a timer found nothing new: no audit record for it
            verdict = "rejected" if failed else decision.action
            reason = "; ".join(g.reason for g in failed) or decision.sentence
            ctx.audit("promote", subject, verdict, reason, cause)
            return
        waiting.remove(pid)
        candidates = CandidateStore(ctx.bus)
        rank = candidates.build_rank(service, digest)
        if rank is None:  # built before Ferry heard of it: rank it by what moves it now
            rank = (cause.occurred_at if cause is not None else now).timestamp()
        current = candidates.get(service, target)
        if current and current.digest != digest and current.rank > rank:
            reason = (
                f"{current.digest[:19]} is a newer build and already the candidate for "
                f"{target}: an older build never replaces it"
            )
            ctx.audit("promote", subject, "skip", reason, cause)
            return
        candidates.set(service, target, Candidate(digest=digest, rank=rank, promotion_id=pid))
        command = PromotionCommand(
            kind="open",
            event_id=f"{pid}:open",
            promotion_id=pid,
            service=service,
            digest=digest,
            source_env=source,
            target_env=target,
            strategy=env_policy.strategy,
            auto_merge=decision.auto_merge,
            evidence=_evidence(cause, decision.reasons),
            reason=decision.sentence,
        )
        published = ctx.bus.publish_once(f"promotion:{pid}:open", command)
        if (
            current
            and current.promotion_id != pid
            and main.pinned(service, target) != current.digest
        ):
            _supersede(ctx, current, command)
    outcome = "requested" if published else "already requested"
    ctx.audit("promote", subject, outcome, decision.sentence, cause)


def _supersede(ctx: WorkerContext, old: Candidate, newer: PromotionCommand) -> None:
    """Ask pr-writer to close the older candidate's pull request, naming its successor."""
    reason = f"superseded by {newer.digest} (promotion {newer.promotion_id}), a newer build"
    ctx.bus.publish_once(
        f"promotion:{old.promotion_id}:close",
        PromotionCommand(
            kind="close",
            event_id=f"{old.promotion_id}:close",
            promotion_id=old.promotion_id,
            service=newer.service,
            digest=old.digest,
            source_env=newer.source_env,
            target_env=newer.target_env,
            reason=reason,
        ),
    )


def _evidence(cause: Event | None, reasons: list[str]) -> dict[str, object]:
    evidence: dict[str, object] = {"reasons": reasons}
    if cause is not None:
        evidence["caused_by"] = cause.event_id
    if isinstance(cause, CiResult):
        for name in ("commit", "author", "check", "url", "image"):
            value = getattr(cause, name)
            if value:
                evidence[name] = value
        if cause.built_at:
            evidence["built_at"] = cause.built_at.isoformat()
    return evidence


def _known_env(policy: Policy, env: str) -> None:
    if env not in policy.env_names():
        raise Rejected(
            f"unknown environment {env!r}: ferry.yaml defines {', '.join(policy.env_names())}"
        )


def _check_image(main: MainSnapshot, event: CiResult, env: str) -> None:
    """A digest means nothing without its repository: refuse one built for another image."""
    path = main.policy.values_path(env, event.service)
    if not main.values_exists(event.service, env):
        raise Rejected(
            f"service {event.service!r} has no values file {path} on main: "
            "add it to the GitOps repository first"
        )
    expected = main.repository(event.service, env)
    if event.image is not None and expected and event.image != expected:
        raise Rejected(
            f"image {event.image!r} is not the repository of {event.service!r} "
            f"({expected!r} in {path}): a digest means nothing without its repository"
        )


WORKER = WorkerSpec(
    name="gate-evaluator",
    handlers={"ci": handle_ci_result, "changes": handle_change, "signals": handle_signal},
    tick=tick,
    description="decides when a digest may move to the next environment",
)
