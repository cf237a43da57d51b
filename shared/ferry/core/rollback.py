"""Rollback rules (pure): which command asks for one, and when it is refused.

A rollback pins a digest that already ran in the environment, so it skips approval and soak; it
is refused while a deny window is open, unless forced by a listed approver (or by the
canary-watcher, whose rollback undoes a canary that just failed)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from ferry.core.events import PromotionCommand
from ferry.core.policy import EnvironmentPolicy
from ferry.core.windows import window_state

# The actor of the rollbacks the canary-watcher asks for.
CANARY_WATCHER = "canary-watcher"


def rollback_id(service: str, env: str, request: str) -> str:
    """The promotion id of one rollback request (a repeated request is the same rollback)."""
    return "r-" + hashlib.sha256(f"rollback|{service}|{env}|{request}".encode()).hexdigest()[:16]


def rollback_command(
    *,
    service: str,
    env: str,
    to: str,
    rolls_back: str,
    actor: str,
    reason: str,
    request: str,
    force: bool = False,
    evidence: dict[str, object] | None = None,
) -> PromotionCommand:
    """The command that asks pr-writer to pin TO in ENV in place of ROLLS_BACK."""
    pid = rollback_id(service, env, request)
    return PromotionCommand(
        kind="rollback",
        event_id=f"{pid}:rollback",
        promotion_id=pid,
        service=service,
        digest=to,
        source_env=env,
        target_env=env,
        strategy="rollback",
        auto_merge=True,
        rollback_of=rolls_back,
        actor=actor,
        force=force,
        reason=reason,
        evidence={"reasons": [reason], **(evidence or {})},
    )


def approvers_of(env_policy: EnvironmentPolicy, teams: dict[str, list[str]]) -> set[str]:
    """The people ENV's approval gate lists (teams expanded); without a gate, every team member."""
    gate = env_policy.gates.approval
    listed = gate.approvers if gate is not None else [f"team:{t}" for t in teams]
    people: set[str] = set()
    for entry in listed:
        team = entry.removeprefix("team:")
        people.update(teams.get(team, []) if team != entry else [entry])
    return people


def refusal(
    env_policy: EnvironmentPolicy,
    teams: dict[str, list[str]],
    *,
    actor: str | None,
    force: bool,
    now: datetime,
) -> str | None:
    """Why this rollback may not go ahead now, or None when it may."""
    denies = [w for w in env_policy.gates.windows if w.kind == "deny"]
    state = window_state(denies, now)
    if state.open:
        return None
    if not force:
        return f"refused: {state.reason}; a listed approver may override with --force"
    if actor == CANARY_WATCHER or (actor is not None and actor in approvers_of(env_policy, teams)):
        return None
    who = ", ".join(sorted(approvers_of(env_policy, teams))) or "nobody is listed"
    return f"refused: {state.reason}; --force is for listed approvers ({who}), not {actor}"
