"""gate-evaluator: CI results, people's words and merged changes in; promotion commands out.

Each handler records what the event says, then for every (service, environment) it concerns:
gather a snapshot, `decide`, and carry out the decision's actions (publish commands, keep the due
time). A timer wakes at the earliest due time (a soak ends, a window opens, an approval expires)
and decides again, so a merge whose last gate was time happens on time, not at a scan.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from typing import Any

from ferry.adapters.gitops import MainSnapshot
from ferry.adapters.state import (
    CandidateStore,
    DueStore,
    EvidenceStore,
    LiveStore,
    PromotionStore,
    SignalStore,
    Subject,
)
from ferry.app.snapshot import gather
from ferry.core.decision import Action, Decision, Snapshot, decide
from ferry.core.errors import Rejected
from ferry.core.events import (
    AuditRecord,
    Change,
    CiResult,
    Event,
    Hold,
    PromotionCommand,
    Signal,
    promotion_id,
)
from ferry.core.evidence import Word
from ferry.core.policy import BUILD, Policy
from ferry.runtime import resources, timers
from ferry.runtime.logging import add_context
from ferry.runtime.worker import WorkerContext, WorkerSpec
from gate_evaluator import holds, people
from gate_evaluator.argocd import handle_argocd
from gate_evaluator.reviews import handle_review


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
        consider(ctx, event, event.service, target, digest=event.digest, source=source)


def handle_change(event: Event, ctx: WorkerContext) -> None:
    """Follow a promotion's pull request: opened, merged (the digest is live in that environment
    and the environments after it may follow), closed, or failed (it may be asked for again)."""
    assert isinstance(event, Change)
    promotions = PromotionStore(ctx.bus)
    pid = event.promotion_id
    if event.kind == "promotion_failed":
        # A replay of the events that asked for it may ask again (after someone fixed the cause).
        promotions.forget(pid)
        for kind in ("open", "merge"):
            ctx.bus.forget_once(PromotionCommand.key_for(pid, kind), PromotionCommand.on_stream)
        ctx.audit(
            "promote",
            f"{event.service}@{event.digest} -> {event.env}",
            "can retry",
            f"after fixing the cause, `ferry replay ci --service {event.service}` asks again",
            event,
        )
        return
    if event.kind == "pr_opened":
        # The PR carries the gates as they were when it was asked for: send newer ones if any.
        opened_with = (promotions.get(pid) or {}).get("opened_with", "")
        promotions.remember(pid, state="open", pr=event.pr, gates_sent=opened_with)
        consider(ctx, event, event.service, event.env, digest=event.digest, source=event.source_env)
        return
    if event.kind == "pr_closed":
        promotions.remember(pid, state="closed", pr=event.pr)
        return
    if event.kind != "pr_merged":
        return
    promotions.remember(pid, state="merged", pr=event.pr, merge_commit=event.merge_commit)
    LiveStore(ctx.bus).mark(event.service, event.env, event.digest, event.occurred_at)
    policy = resources.gitops(ctx).at_main().policy
    for target in policy.targets_from(event.env, event.service):
        consider(ctx, event, event.service, target, digest=event.digest, source=event.env)


def handle_signal(event: Event, ctx: WorkerContext) -> None:
    """A person's approval or rejection of a digest for an environment, or a job's check result
    against a digest live in an environment: record it, then decide again."""
    assert isinstance(event, Signal)
    policy = resources.gitops(ctx).at_main().policy
    _known_env(policy, event.env)
    if event.kind == "review":
        return handle_review(event, ctx)
    if event.kind == "argocd":
        return handle_argocd(event, ctx)
    subject = f"{event.service}@{event.digest} -> {event.env}"
    if event.kind == "check":
        if not event.check or event.status is None:
            raise Rejected("a check signal needs both 'check' and 'status' (success or failure)")
        EvidenceStore(ctx.bus).record_check(
            event.service, event.digest, event.env, event.check, event.status, None
        )
        ctx.audit("check", subject, event.status, f"{event.check} {event.status}", event)
        for target in policy.targets_from(event.env, event.service):
            consider(ctx, event, event.service, target, digest=event.digest, source=event.env)
        return
    if not event.actor:
        raise Rejected(f"an {event.kind} needs 'actor': who approves, rejects or promotes")
    if event.kind == "promote":
        people.ask_again(ctx, event)
        consider(ctx, event, event.service, event.env, digest=event.digest)
        return
    reason = event.reason or ""
    word = Word(event.kind, event.actor, event.digest, event.env, reason, event.occurred_at)  # type: ignore[arg-type]
    SignalStore(ctx.bus).record(word, event.service)
    said = f"by {event.actor}" + (f": {reason}" if reason else "")
    ctx.audit(event.kind, subject, "recorded", said, event)
    consider(ctx, event, event.service, event.env, digest=event.digest)


def handle_hold(event: Event, ctx: WorkerContext) -> None:
    """A person held or released promotions into an environment: decide again about each
    service it concerns (a release lets a waiting promotion through at once)."""
    assert isinstance(event, Hold)
    for service in holds.record(event, ctx):
        consider(ctx, event, service, event.env)


def wake(ctx: WorkerContext, halt: threading.Event) -> None:
    """Decide again about each subject whose due time has come (ferry.runtime.timers: a replica
    that dies while deciding leaves it due again when its lease ends)."""

    def decide_again(member: str, _token: str) -> None:
        subject = Subject.parse(member)
        consider(ctx, None, subject.service, subject.target)

    timers.run(ctx, DueStore(ctx.bus).times, decide_again, halt)


def consider(
    ctx: WorkerContext,
    cause: Event | None,
    service: str,
    target: str,
    *,
    digest: str | None = None,
    source: str | None = None,
) -> Decision:
    """Gather -> decide -> act for moving DIGEST (default: the next one) into TARGET."""

    # One decision at a time per (service, environment), whichever replica holds the event. In
    # a batch (the dispatcher queues writes) the lock's SET NX goes out in front of gather's
    # first read, in one round trip, so the Redis state read is the one the lock's last holder
    # left; main is read just before that trip (a decision tolerates main behind Redis: a
    # merge heard of but not fetched yet). If another held the lock, check_locks says so
    # (LockBusy) and `locked` gathers again once it is free.
    def attempt(_: object) -> Decision:
        main = resources.gitops(ctx).at_main()
        if source is not None and target not in main.policy.targets_from(source, service):
            return Decision(None, "nothing", ())  # the policy changed under the event
        snapshot = gather(ctx.bus, main, service, target, datetime.now(UTC), digest, source)
        decision = decide(snapshot)
        ctx.bus.check_locks()  # a slow gather (git, the forge) may have outlived the lock
        _act(ctx, cause, main, snapshot, decision)
        return decision

    decision: Decision = ctx.bus.locked(f"decide:{service}:{target}", attempt)
    return decision


def _act(
    ctx: WorkerContext, cause: Event | None, main: MainSnapshot, s: Snapshot, d: Decision
) -> None:
    """Carry out decision D: publish its commands, then record what it relies on, keep its due
    time and say what was decided (a timer that changed nothing says nothing), these three in one
    pipelined round trip (in a batch, queued for the next one); a crash before it redelivers the
    event, which decides again."""
    if s.digest is not None:
        add_context(promotion_id=promotion_id(s.service, s.digest, s.target))
    if main.policy_error:
        _refused_policy(ctx, main)
    subject = f"{s.service}@{s.digest} -> {s.target}"
    outcomes = [_carry_out(ctx, cause, s, d, a) for a in d.actions]
    done = [o for o in outcomes if o]
    with ctx.bus.writes() as pipe:  # in a batch: queued, sent with the next round trip
        if s.digest is not None and s.source != BUILD and s.pinned_source == s.digest:
            LiveStore(ctx.bus).mark(s.service, s.source, s.digest, s.live_since or s.now, pipe=pipe)
        _due(ctx).set(Subject(s.service, s.source, s.target), d.next_change_at, pipe=pipe)
        if cause is not None or done:
            if done:
                outcome = ", ".join(done)
            else:
                outcome = {"older": "skip", "up to date": "skip", "blocked": "rejected"}.get(
                    d.state, "wait" if d.state.startswith("waiting") else d.state
                )
            reason = "; ".join(g.reason for g in d.gates if g.status == "failed") or d.sentence
            ctx.audit("promote", subject, outcome, reason, cause, pipe=pipe)


def _due(ctx: WorkerContext) -> DueStore:
    """The worker's due times, made once (its keys are formed when it is made)."""
    due = ctx.resources.get("due-store")
    if due is None:
        due = ctx.resources["due-store"] = DueStore(ctx.bus)
    return due


def _refused_policy(ctx: WorkerContext, main: MainSnapshot) -> None:
    """Say once per version of ferry.yaml that it is refused, and why."""
    record = AuditRecord(
        worker=ctx.name,
        action="policy",
        subject=f"ferry.yaml@{main.commit[:12]}",
        outcome="refused",
        reason=f"{main.policy_error}; the last valid ferry.yaml stays in force",
    )
    text = main.repo.read_at(main.commit, "ferry.yaml") or ""
    version = hashlib.sha256(text.encode()).hexdigest()[:16]
    if ctx.bus.publish_once(f"policy-refused:{version}", record):
        ctx.log.warning("ferry.yaml refused; the last valid one applies", error=main.policy_error)


def _carry_out(
    ctx: WorkerContext, cause: Event | None, s: Snapshot, d: Decision, a: Action
) -> str | None:
    """Publish the command for action A; returns what was done, in a word (None: nothing)."""
    if a.kind in ("wait", "nothing"):
        return None
    assert a.digest is not None and a.promotion_id is not None
    promotions = PromotionStore(ctx.bus)
    fence = s.candidate.fence if s.candidate else 0
    if a.kind == "open" and s.promotion is None:
        fence = CandidateStore(ctx.bus).choose(
            s.service, s.target, a.digest, d.rank or s.now.timestamp(), a.promotion_id
        )
        promotions.remember(
            a.promotion_id,
            service=s.service,
            digest=a.digest,
            source_env=s.source,
            target_env=s.target,
            state="requested",
            gates_sent=a.gates_fingerprint,
            opened_with=a.gates_fingerprint,
            auto_merge=int(a.auto_merge),
        )
    elif a.kind == "update_gates":
        promotions.remember(a.promotion_id, gates_sent=a.gates_fingerprint)
    kind = {"open": "open", "update_gates": "gates", "merge": "merge", "close": "close"}[a.kind]
    # A gates command is published each time the gates change; the others once per promotion.
    ids: dict[str, Any] = {} if kind == "gates" else {"event_id": f"{a.promotion_id}:{kind}"}
    command = PromotionCommand(
        kind=kind,  # type: ignore[arg-type]
        **ids,
        promotion_id=a.promotion_id,
        service=s.service,
        digest=a.digest,
        source_env=s.source,
        target_env=s.target,
        strategy=s.env_policy.strategy,
        auto_merge=a.auto_merge,
        evidence=_evidence(cause, list(d.reasons)) if kind == "open" else {},
        reason=a.reason,
        gates_state=a.gates_state,
        gates_description=a.gates_description,
        gates=[{"gate": g.gate, "status": g.status, "reason": g.stable} for g in d.gates]
        if kind in ("open", "gates")
        else [],
        fence=fence,
        attempt=promotions.attempt(a.promotion_id),
    )
    published = ctx.bus.emit(command)
    if published is None:
        return f"already {_DONE[kind]}"
    return _DONE[kind]


_DONE = {
    "open": "requested",
    "gates": "gates updated",
    "merge": "merge requested",
    "close": "close requested",
}


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
    if not main.values_exists(event.service, env):
        path = main.policy.values_path(env, event.service)
        raise Rejected(
            f"service {event.service!r} has no values file {path} on main: "
            "add it to the GitOps repository first"
        )
    if event.image is None:
        return
    expected = main.repository(event.service, env)
    if expected and event.image != expected:
        path = main.policy.values_path(env, event.service)
        raise Rejected(
            f"image {event.image!r} is not the repository of {event.service!r} "
            f"({expected!r} in {path}): a digest means nothing without its repository"
        )


WORKER = WorkerSpec(
    name="gate-evaluator",
    handlers={
        "ci": handle_ci_result,
        "changes": handle_change,
        "signals": handle_signal,
        "holds": handle_hold,
    },
    background=wake,
    description="decides when a digest may move to the next environment",
    read_count=100,
)
