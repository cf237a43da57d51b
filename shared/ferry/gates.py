"""The functional core of gate evaluation: (policy, evidence, facts) -> decision and reasons.
No I/O here; the worker gathers the facts and acts on the decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ferry.state import ANY_CHECK, Evidence


@dataclass(frozen=True)
class Decision:
    action: Literal["promote", "wait", "skip"]
    reasons: list[str] = field(default_factory=list)
    auto_merge: bool = False

    @property
    def sentence(self) -> str:
        return "; ".join(self.reasons)


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
    if pinned_in_target == digest:
        return Decision("skip", [f"{target_env} already pins this digest"])
    if source_env != "build" and not live_in_source:
        return Decision("wait", [f"waiting: digest is not live in {source_env} yet"])
    reasons: list[str] = []
    waiting: list[str] = []
    gates = env_policy.gates
    if gates is not None and gates.ci is not None:
        required = list(gates.ci.checks or [])
        green = evidence.green()
        if required:
            missing = [c for c in required if c not in green]
            if missing:
                waiting.append(
                    f"waiting: CI {', '.join(missing)} not green for this digest in {source_env}"
                )
            else:
                reasons.append(f"CI {', '.join(required)} green in {source_env}")
        elif green:
            reasons.append(f"CI green in {source_env} ({', '.join(sorted(green))})")
        else:
            failed = [c for c, s in evidence.checks.items() if s == "failure"]
            why = f" (failed: {', '.join(sorted(failed))})" if failed else ""
            waiting.append(f"waiting: no green CI for this digest in {source_env}{why}")
    for name in ("approval", "soak", "windows"):
        if gates is not None and getattr(gates, name, None):
            waiting.append(f"waiting: gate '{name}' is not evaluated by this version of ferry")
    if waiting:
        return Decision("wait", waiting)
    if source_env == "build":
        reasons.append("build succeeded")
    return Decision("promote", reasons or ["no gates"], auto_merge=bool(env_policy.auto_merge))


def describe_check(check: str | None) -> str:
    return "CI" if check in (None, ANY_CHECK) else f"CI check {check!r}"
