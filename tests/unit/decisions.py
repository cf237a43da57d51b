"""Helpers for tests of the pure decision: people's words and snapshots from plain values."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ferry.core.decision import Decision, Snapshot, decide
from ferry.core.evidence import Evidence, Word
from ferry.core.policy import Policy


def words(
    digest: str,
    env: str,
    approvals: dict[str, str] | None = None,
    rejections: dict[str, str] | None = None,
    at: datetime | None = None,
) -> tuple[Word, ...]:
    out = [Word("approval", a, digest, env, r, at) for a, r in (approvals or {}).items()]
    out += [Word("rejection", a, digest, env, r, at) for a, r in (rejections or {}).items()]
    return tuple(out)


def snapshot(
    policy: Policy,
    target: str,
    digest: str | None,
    now: datetime,
    *,
    live: bool = True,
    evidence: Evidence | None = None,
    **kw: Any,
) -> Snapshot:
    """A snapshot of moving DIGEST into TARGET, live in its source unless LIVE is false."""
    env_policy = policy.environment(target)
    source = env_policy.promote_from
    kw.setdefault("pinned_source", digest if live and source != "build" else None)
    kw.setdefault("teams", dict(policy.approvers.teams))
    return Snapshot(
        service="api",
        source=source,
        target=target,
        env_policy=env_policy,
        now=now,
        digest=digest,
        evidence=evidence or Evidence(),
        **kw,
    )


def verdict(d: Decision) -> str:
    """The old three-way answer: promote (ask for the PR with every gate passed), skip, wait."""
    if d.state == "ready":
        return "promote"
    return "skip" if d.state in ("up to date", "older") else "wait"


def auto_merge(d: Decision) -> bool:
    return any(a.auto_merge for a in d.actions if a.kind == "open")


def decide_for(policy: Policy, target: str, digest: str, now: datetime, **kw: Any) -> Decision:
    return decide(snapshot(policy, target, digest, now, **kw))
