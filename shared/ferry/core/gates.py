"""The functional core of gate evaluation: (policy, evidence, facts) -> decision and reasons.
No I/O here: gate-evaluator gathers the facts and acts on the decision; `ferry explain` shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ferry.adapters.state import Evidence
from ferry.core.windows import human, window_state

GateStatus = Literal["passed", "waiting", "failed"]


@dataclass(frozen=True)
class Facts:
    """What the gates beyond CI look at, gathered by the caller; NOW is an argument, not a clock."""

    now: datetime
    approvals: dict[str, str] = field(default_factory=dict)  # actor -> reason
    rejections: dict[str, str] = field(default_factory=dict)  # actor -> reason
    author: str | None = None  # who triggered the build
    live_since: datetime | None = None  # when the digest went live in the source environment
    teams: dict[str, list[str]] = field(default_factory=dict)  # approvers.teams of ferry.yaml


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict and the sentence behind it."""

    gate: str  # "ci", "approval", "soak", "windows"
    status: GateStatus
    reason: str
    recheck_at: datetime | None = None  # a time-based gate may change then


@dataclass(frozen=True)
class Decision:
    action: Literal["promote", "wait", "skip"]
    reasons: list[str] = field(default_factory=list)
    auto_merge: bool = False
    gates: tuple[GateResult, ...] = ()

    @property
    def sentence(self) -> str:
        return "; ".join(self.reasons)


def ci_gate(ci: Any, evidence: Evidence, source_env: str) -> GateResult:
    """Green CI for the digest in the source environment: the named checks, or any result."""
    required = list(ci.checks or [])
    green = evidence.green()
    if required:
        missing = [c for c in required if c not in green]
        if missing:
            return GateResult(
                "ci",
                "waiting",
                f"waiting: CI {', '.join(missing)} not green for this digest in {source_env}",
            )
        return GateResult("ci", "passed", f"CI {', '.join(required)} green in {source_env}")
    if green:
        return GateResult("ci", "passed", f"CI green in {source_env} ({', '.join(sorted(green))})")
    failed = sorted(c for c, s in evidence.checks.items() if s == "failure")
    why = f" (failed: {', '.join(failed)})" if failed else ""
    return GateResult("ci", "waiting", f"waiting: no green CI for this digest in {source_env}{why}")


def approval_gate(gate: Any, facts: Facts) -> GateResult:
    """Enough approvals from the listed approvers (users or "team:<name>"), not counting the
    build's author unless the policy allows it; a rejection from an approver fails the gate."""

    def approver(actor: str) -> bool:
        if not gate.approvers:
            return True
        for entry in gate.approvers:
            team = entry.removeprefix("team:")
            if entry == actor or (entry != team and actor in facts.teams.get(team, [])):
                return True
        return False

    def counts(actor: str) -> bool:
        return approver(actor) and (gate.author_can_approve or actor != facts.author)

    rejected = sorted(a for a in facts.rejections if approver(a))
    if rejected:
        who = rejected[0]
        return GateResult("approval", "failed", f"rejected by {who}: {facts.rejections[who]}")
    valid = sorted(a for a in facts.approvals if counts(a))
    if len(valid) >= gate.min_approvals:
        who = f" by {', '.join(valid)}" if valid else ""
        return GateResult(
            "approval", "passed", f"approved{who} ({len(valid)}/{gate.min_approvals})"
        )
    notes = [
        f"{a} is the author" if approver(a) else f"{a} is not an approver"
        for a in sorted(facts.approvals)
        if not counts(a)
    ]
    extra = f"; not counted: {', '.join(notes)}" if notes else ""
    wanted = ", ".join(gate.approvers) or "anyone"
    return GateResult(
        "approval",
        "waiting",
        f"waiting: approvals {len(valid)}/{gate.min_approvals} (from {wanted}){extra}",
    )


def soak_gate(gate: Any, facts: Facts, evidence: Evidence, source_env: str) -> GateResult:
    """Live in the source environment for min_duration, with the named checks green there."""
    if facts.live_since is None:
        return GateResult("soak", "waiting", f"waiting: not live in {source_env} yet")
    elapsed = facts.now - facts.live_since
    needed: timedelta = gate.min_duration
    if elapsed < needed:
        ends = facts.live_since + needed
        return GateResult(
            "soak",
            "waiting",
            f"waiting: soaking in {source_env} {human(elapsed)}/{human(needed)}, "
            f"done in {human(ends - facts.now)}",
            recheck_at=ends,
        )
    missing = [c for c in gate.checks if c not in evidence.green()]
    if missing:
        return GateResult(
            "soak", "waiting", f"waiting: {', '.join(missing)} not green in {source_env}"
        )
    checks = f"; {', '.join(gate.checks)} green" if gate.checks else ""
    return GateResult("soak", "passed", f"soaked {human(elapsed)} in {source_env}{checks}")


def windows_gate(windows: list[Any], facts: Facts) -> GateResult:
    state = window_state(windows, facts.now)
    if state.open:
        return GateResult("windows", "passed", state.reason, recheck_at=state.changes_at)
    return GateResult("windows", "waiting", f"waiting: {state.reason}", recheck_at=state.changes_at)


def gate_results(
    env_policy: Any, evidence: Evidence, source_env: str, facts: Facts
) -> tuple[GateResult, ...]:
    """Every gate the environment has, always in the order ci, approval, soak, windows."""
    gates = env_policy.gates
    if gates is None:
        return ()
    results = []
    if gates.ci is not None:
        results.append(ci_gate(gates.ci, evidence, source_env))
    if gates.approval is not None:
        results.append(approval_gate(gates.approval, facts))
    if gates.soak is not None:
        results.append(soak_gate(gates.soak, facts, evidence, source_env))
    if gates.windows:
        results.append(windows_gate(gates.windows, facts))
    return tuple(results)


def evaluate(
    *,
    env_policy: Any,
    digest: str,
    source_env: str,
    target_env: str,
    pinned_in_target: str | None,
    live_in_source: bool,
    evidence: Evidence,
    facts: Facts,
) -> Decision:
    """May DIGEST move from SOURCE_ENV to TARGET_ENV now?"""
    gates = gate_results(env_policy, evidence, source_env, facts)
    if pinned_in_target == digest:
        return Decision("skip", [f"{target_env} already pins this digest"], gates=gates)
    if source_env != "build" and not live_in_source:
        return Decision("wait", [f"waiting: digest is not live in {source_env} yet"], gates=gates)
    waiting = [g.reason for g in gates if g.status != "passed"]
    if waiting:
        return Decision("wait", waiting, gates=gates)
    reasons = [g.reason for g in gates]
    if source_env == "build":
        reasons.append("build succeeded")
    return Decision(
        "promote", reasons or ["no gates"], auto_merge=bool(env_policy.auto_merge), gates=gates
    )
