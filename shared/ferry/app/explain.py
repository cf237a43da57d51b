"""`ferry explain SERVICE ENV`: where a service stands in one environment and why, in words.

It gathers the same facts gate-evaluator decides on (main, the evidence, the candidate) and runs
the same pure evaluation, so what it says is what the worker would do now."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ferry.adapters.bus import Bus
from ferry.adapters.gitops import GitOpsRepo
from ferry.adapters.state import CandidateStore, EvidenceStore
from ferry.app.canary import canary_state
from ferry.app.canary import describe as describe_canary
from ferry.app.facts import gather
from ferry.core.errors import Rejected
from ferry.core.events import promotion_id
from ferry.core.gates import evaluate


@dataclass
class Explanation:
    service: str
    env: str
    pinned: str | None
    source: str
    next_digest: str | None = None
    state: str = ""  # up to date | waiting | ready | nothing to promote
    reasons: list[str] = field(default_factory=list)
    gates: list[dict[str, str]] = field(default_factory=list)
    pull_request: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None  # the canary-watcher's analysis (ferry.app.canary)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain(repo: GitOpsRepo, bus: Bus, forge: Any, service: str, env: str) -> Explanation:
    main = repo.at_main()
    policy = main.policy
    env_policy = policy.environment(env, service)  # unknown environment: PolicyError
    if not main.values_exists(service, env):
        raise Rejected(
            f"service {service!r} has no values file {policy.values_path(env, service)} on main"
        )
    source = env_policy.promote_from
    out = Explanation(service=service, env=env, pinned=main.pinned(service, env), source=source)
    out.canary = canary_state(bus, policy, service, env)
    candidate = CandidateStore(bus).get(service, env)
    if source == "build":
        out.next_digest = candidate.digest if candidate else None
    else:
        out.next_digest = main.pinned(service, source)
    if out.next_digest is None:
        out.state = "nothing to promote"
        out.reasons = [
            f"no digest has reached {source} yet"
            if source != "build"
            else "no successful build has been seen"
        ]
        return out
    live = source == "build" or main.pinned(service, source) == out.next_digest
    now = datetime.now(UTC)
    facts = gather(bus, policy, service, out.next_digest, source, env, now)
    if live and source != "build" and facts.live_since is None:
        facts = replace(facts, live_since=now)  # as gate-evaluator will count it
    decision = evaluate(
        env_policy=env_policy,
        digest=out.next_digest,
        source_env=source,
        target_env=env,
        pinned_in_target=out.pinned,
        live_in_source=live,
        evidence=EvidenceStore(bus).get(service, out.next_digest, source),
        facts=facts,
    )
    out.gates = [{"gate": g.gate, "status": g.status, "reason": g.reason} for g in decision.gates]
    out.reasons = decision.reasons
    out.state = {"skip": "up to date", "wait": "waiting", "promote": "ready"}[decision.action]
    if candidate and candidate.digest != out.next_digest and candidate.digest != out.pinned:
        out.reasons.append(f"a newer candidate is in flight: {candidate.digest}")
    if forge is not None:
        pr = forge.find_pr(promotion_id(service, out.next_digest, env))
        if pr is not None:
            out.pull_request = {"number": pr.number, "state": pr.state, "url": pr.url}
            if decision.action == "promote" and pr.state == "open":
                out.state = "ready: pull request open, merging"
    return out


def render(e: Explanation) -> list[str]:
    def short(digest: str | None) -> str:
        return digest[:19] if digest else "-"

    lines = [
        f"{e.service} in {e.env}: {e.state}",
        f"  pinned on main:  {short(e.pinned)}",
        f"  next:            {short(e.next_digest)} (from {e.source})",
    ]
    for g in e.gates:
        reason = g["reason"].removeprefix(f"{g['status']}: ")
        lines.append(f"  gate {g['gate']:<10}  {g['status']:<8} {reason}")
    if e.pull_request:
        pr = e.pull_request
        lines.append(f"  pull request:    #{pr['number']} ({pr['state']})")
    if e.canary is not None:
        lines.append(f"  canary:          {describe_canary(e.canary)}")
    lines += [f"  why:             {r}" for r in e.reasons[:1]]
    lines += [f"                   {r}" for r in e.reasons[1:]]
    return lines
