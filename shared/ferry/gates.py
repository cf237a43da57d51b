"""The functional core of gate evaluation: (policy, evidence, facts) -> decision and reasons.
No I/O here: gate-evaluator gathers the facts and acts on the decision; `ferry explain` shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ferry.state import Evidence

GateStatus = Literal["passed", "waiting"]


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict and the sentence behind it."""

    gate: str  # "ci", "approval", "soak", "windows"
    status: GateStatus
    reason: str


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


def gate_results(env_policy: Any, evidence: Evidence, source_env: str) -> tuple[GateResult, ...]:
    """Every gate the environment has, in the order ferry.yaml lists them."""
    gates = env_policy.gates
    if gates is None:
        return ()
    results = []
    if gates.ci is not None:
        results.append(ci_gate(gates.ci, evidence, source_env))
    for name in ("approval", "soak", "windows"):
        if getattr(gates, name, None):
            results.append(
                GateResult(
                    name,
                    "waiting",
                    f"waiting: gate '{name}' is not evaluated by this version of ferry",
                )
            )
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
) -> Decision:
    """May DIGEST move from SOURCE_ENV to TARGET_ENV now?"""
    gates = gate_results(env_policy, evidence, source_env)
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
