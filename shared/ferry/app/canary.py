"""The canary of a service in an environment, as `ferry status`, `ferry explain` and `ferry canary`
show it: read from the canary-watcher's state and judged as it would judge it now."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ferry.adapters.bus import Bus
from ferry.adapters.canary_state import CanaryStore, VerifiedStore
from ferry.core.canary import judge
from ferry.core.policy import Policy


def canary_state(bus: Bus, policy: Policy, service: str, env: str) -> dict[str, Any] | None:
    """The latest analysis (phase, digest, why) and the last verified digest; None when none ran."""
    store = CanaryStore(bus)
    a = store.get(service, env)
    verified = VerifiedStore(bus).get(service, env)
    if a is None:
        return {"phase": None, "verified": verified} if verified else None
    state: dict[str, Any] = {**asdict(a), "verified": verified}
    if a.phase == "running":
        canary = policy.environment(env, service).canary
        verdict = judge(canary, store.measurements(a), a.started(), datetime.now(UTC))
        state["reason"] = verdict.reason
        state["deadline"] = verdict.deadline.isoformat() if verdict.deadline else None
    return state


def describe(state: dict[str, Any] | None) -> str:
    """One line for people."""
    if state is None:
        return "no canary analysis yet"
    if state.get("phase") is None:
        return f"last verified {state['verified'][:19]}"
    line = f"{state['phase']} {state['digest'][:19]}: {state['reason']}"
    if state.get("verified") and state["verified"] != state["digest"]:
        line += f" (last verified {state['verified'][:19]})"
    return line


def canaries(bus: Bus, policy: Policy, cells: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """service -> environment -> canary state, for every canary that ran in CELLS ((service,
    environment) pairs)."""
    found: dict[str, dict[str, Any]] = {}
    for service, env in cells:
        state = canary_state(bus, policy, service, env)
        if state is not None:
            found.setdefault(service, {})[env] = state
    return found
