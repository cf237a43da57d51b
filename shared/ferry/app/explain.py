"""`ferry explain SERVICE ENV`: where a service stands in one environment and why, in words.

It gathers the snapshot gate-evaluator decides on and calls the same `decide`, so what it says,
including the actions it lists, is what the worker does now."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ferry.adapters.bus import Bus
from ferry.adapters.forge import budget_wait
from ferry.adapters.gitops import GitOpsRepo, MainSnapshot
from ferry.adapters.state import PromotionStore
from ferry.app.canary import canary_state
from ferry.app.canary import describe as describe_canary
from ferry.app.snapshot import gather
from ferry.core.decision import Decision, decide
from ferry.core.errors import Rejected
from ferry.core.events import pr_key, promotion_id


@dataclass
class Explanation:
    service: str
    env: str
    pinned: str | None
    source: str
    next_digest: str | None = None
    state: str = ""  # up to date | waiting | ready | blocked | older | nothing to promote | ...
    reasons: list[str] = field(default_factory=list)
    gates: list[dict[str, str]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # what gate-evaluator does now
    next_change_at: str | None = None
    candidate: str | None = None  # the digest chosen for ENV so far
    policy_error: str | None = None
    pull_request: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None  # the canary-watcher's analysis (ferry.app.canary)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decision_for(
    bus: Bus, main: MainSnapshot, service: str, env: str, now: datetime | None = None
) -> Decision:
    """The decision gate-evaluator's timer would take now about SERVICE in ENV."""
    if not main.values_exists(service, env):
        path = main.policy.values_path(env, service)
        raise Rejected(f"service {service!r} has no values file {path} on main")
    return decide(gather(bus, main, service, env, now or datetime.now(UTC)))


def explain(repo: GitOpsRepo, bus: Bus, forge: Any, service: str, env: str) -> Explanation:
    out = explanation(bus, repo.at_main(), service, env, datetime.now(UTC))
    if forge is not None and out.next_digest is not None and not _forge_budget_spent(out, forge):
        pid = promotion_id(service, out.next_digest, env)
        pr = forge.find_pr(pr_key(pid, PromotionStore(bus).attempt(pid)))
        if pr is not None:
            out.pull_request = {
                "number": pr.number,
                "state": pr.state,
                "url": pr.url,
                "gates": pr.statuses.get("ferry/gates"),
            }
    return out


def explanation(bus: Bus, main: MainSnapshot, service: str, env: str, now: datetime) -> Explanation:
    """What `ferry explain` says about SERVICE in ENV at NOW, from main and Redis only (the board
    calls this for every cell; the pull request is the promotion's as gate-evaluator knows it)."""
    env_policy = main.policy.environment(env, service)  # unknown environment: PolicyError
    snapshot = gather(bus, main, service, env, now)
    if not main.values_exists(service, env):
        path = main.policy.values_path(env, service)
        raise Rejected(f"service {service!r} has no values file {path} on main")
    d = decide(snapshot)
    out = Explanation(
        service=service,
        env=env,
        pinned=snapshot.pinned_target,
        source=env_policy.promote_from,
        next_digest=d.digest,
        state=d.state,
        reasons=list(d.reasons),
        gates=[{"gate": g.gate, "status": g.status, "reason": g.reason} for g in d.gates],
        actions=[{k: v for k, v in asdict(a).items() if v not in (None, False)} for a in d.actions],
        next_change_at=d.next_change_at.isoformat() if d.next_change_at else None,
        candidate=snapshot.candidate.digest if snapshot.candidate else None,
        policy_error=main.policy_error,
        canary=canary_state(bus, main.policy, service, env),
    )
    promotion = snapshot.promotion
    if promotion is not None and promotion.pr is not None:
        out.pull_request = {"number": promotion.pr, "state": promotion.state}
    return out


def _forge_budget_spent(out: Explanation, forge: Any) -> bool:
    """Say so when the forge request budget holds promotions back (the forge is then not asked:
    the question would wait for the budget too)."""
    wait = budget_wait(forge)
    if wait <= 0 or out.state == "up to date":
        return False
    out.state = "waiting"
    out.reasons.insert(0, f"waiting: forge budget, next request allowed in {math.ceil(wait)} s")
    return True


def render(e: Explanation) -> list[str]:
    def short(digest: str | None) -> str:
        return digest[:19] if digest else "-"

    lines = [
        f"{e.service} in {e.env}: {e.state}",
        f"  pinned on main:  {short(e.pinned)}",
        f"  next:            {short(e.next_digest)} (from {e.source})",
    ]
    if e.candidate and e.candidate not in (e.next_digest, e.pinned):
        lines.append(f"  candidate:       {short(e.candidate)} (chosen for {e.env})")
    # The gates of a digest already pinned are history (the audit keeps them): showing "failed"
    # beside "up to date" reads as if it were not live.
    for g in e.gates if e.state != "up to date" else []:
        reason = g["reason"].removeprefix(f"{g['status']}: ")
        lines.append(f"  gate {g['gate']:<10}  {g['status']:<8} {reason}")
    if e.pull_request:
        pr = e.pull_request
        gates = f", ferry/gates {pr['gates']}" if pr.get("gates") else ""
        lines.append(f"  pull request:    #{pr['number']} ({pr['state']}{gates})")
    if e.canary is not None:
        lines.append(f"  canary:          {describe_canary(e.canary)}")
    lines += [f"  why:             {r}" for r in e.reasons[:1]]
    lines += [f"                   {r}" for r in e.reasons[1:]]
    doing = [a["kind"] for a in e.actions if a["kind"] not in ("nothing", "wait")]
    if doing:
        lines.append(f"  ferry does now:  {', '.join(doing)}")
    if e.next_change_at:
        lines.append(f"  looks again at:  {e.next_change_at}")
    if e.policy_error:
        lines.append(f"  ferry.yaml:      refused: {e.policy_error} (the last valid one applies)")
    return lines
