"""Gather what the gates look at from Redis state: the one place gate-evaluator and `ferry
explain` both read it, so that they cannot disagree."""

from __future__ import annotations

from datetime import datetime

from ferry.adapters.bus import Bus
from ferry.adapters.state import CandidateStore, LiveStore, SignalStore
from ferry.core.gates import Facts
from ferry.core.policy import Policy


def gather(
    bus: Bus, policy: Policy, service: str, digest: str, source: str, target: str, now: datetime
) -> Facts:
    signals = SignalStore(bus)
    return Facts(
        now=now,
        approvals=signals.get("approvals", service, target, digest),
        rejections=signals.get("rejections", service, target, digest),
        author=CandidateStore(bus).author(service, digest),
        live_since=LiveStore(bus).since(service, source, digest) if source != "build" else None,
        teams=dict(policy.approvers.teams),
    )
