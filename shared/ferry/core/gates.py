"""The gates, one pure function each: (policy, evidence, facts, now) -> passed, waiting or failed,
with the sentence behind it and when the answer may change. No I/O here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ferry.core.evidence import Evidence, Word
from ferry.core.windows import human, window_state

GateStatus = Literal["passed", "waiting", "failed"]


@dataclass(frozen=True)
class Facts:
    """What the gates beyond CI look at, gathered by the caller; NOW is an argument, not a clock."""

    now: datetime
    digest: str = ""
    env: str = ""  # the target environment
    words: tuple[Word, ...] = ()  # approvals and rejections (others' digests are ignored)
    author: str | None = None  # who triggered the build
    live_since: datetime | None = None  # when the digest went live in the source environment
    teams: dict[str, list[str]] = field(default_factory=dict)  # approvers.teams of ferry.yaml

    def standing(self) -> dict[str, Word]:
        """Each actor's latest word about this digest for this environment."""
        return latest_words(self.words, self.digest, self.env)


def latest_words(words: Iterable[Word], digest: str, env: str) -> dict[str, Word]:
    """Each actor's latest word about DIGEST for ENV, whatever order the words arrived in (a word
    without a time is older than any with one; a tie goes to the rejection, the safer word)."""
    best: dict[str, Word] = {}
    for w in words:
        if w.digest != digest or w.env != env:
            continue
        old = best.get(w.actor)
        if old is None or _word_order(w) > _word_order(old):
            best[w.actor] = w
    return best


def _word_order(w: Word) -> tuple[float, int, str]:
    return (w.at.timestamp() if w.at else float("-inf"), w.kind == "rejection", w.reason)


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict and the sentence behind it."""

    gate: str  # "ci", "approval", "soak", "windows"
    status: GateStatus
    reason: str
    recheck_at: datetime | None = None  # the verdict may change then (never later)
    # The reason without what changes by the second ("in 3m"): what a PR shows, rewritten only
    # when the evidence changes.
    summary: str = ""

    @property
    def stable(self) -> str:
        return self.summary or self.reason


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
    """Enough standing approvals from the listed approvers (users or "team:<name>"), not counting
    the build's author unless the policy allows it, none expired (`expires_after`), each carried
    by a channel the policy allows (`via`: `ferry approve` is "cli", a review on the promotion PR
    is "forge"); a standing rejection by any listed approver fails the gate whatever others
    approved, whichever channel carried it (a channel may stop a promotion it may not approve)."""

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

    allowed = tuple(getattr(gate, "via", ("cli", "forge")))

    expires: timedelta | None = getattr(gate, "expires_after", None)

    def expiry(w: Word) -> datetime | None:
        return w.at + expires if expires is not None and w.at is not None else None

    standing = facts.standing()
    rejected = sorted(a for a, w in standing.items() if w.kind == "rejection" and approver(a))
    if rejected:
        who = rejected[0]
        return GateResult("approval", "failed", f"rejected by {who}: {standing[who].reason}")
    approvals = {a: w for a, w in standing.items() if w.kind == "approval"}
    expired = sorted(
        a for a, w in approvals.items() if (end := expiry(w)) is not None and end <= facts.now
    )
    wrong_channel = sorted(a for a, w in approvals.items() if w.via not in allowed)
    valid = sorted(
        a for a in approvals if counts(a) and a not in expired and a not in wrong_channel
    )
    # The earliest expiry among the approvals that count: the verdict may change then.
    ends = [end for a in valid if (end := expiry(approvals[a])) is not None]
    recheck = min(ends) if ends else None
    if len(valid) >= gate.min_approvals:
        who = f" by {', '.join(f'{a} via {approvals[a].via}' for a in valid)}" if valid else ""
        return GateResult(
            "approval",
            "passed",
            f"approved{who} ({len(valid)}/{gate.min_approvals})",
            recheck_at=recheck,
        )
    notes = [
        f"{a} is the author" if approver(a) else f"{a} is not an approver"
        for a in sorted(approvals)
        if not counts(a)
    ]
    only = " or ".join(allowed) or "no channel"
    notes += [
        f"{a} via {approvals[a].via} (only {only} counts)" for a in wrong_channel if counts(a)
    ]
    notes += [f"{a}'s approval expired" for a in expired if counts(a) and a not in wrong_channel]
    extra = f"; not counted: {', '.join(notes)}" if notes else ""
    wanted = ", ".join(gate.approvers) or "anyone"
    return GateResult(
        "approval",
        "waiting",
        f"waiting: approvals {len(valid)}/{gate.min_approvals} (from {wanted}){extra}",
        recheck_at=recheck,
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
            summary=f"waiting: soaking in {source_env} for {human(needed)}, "
            f"until {ends.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
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
    reason = state.reason if state.open else f"waiting: {state.reason}"
    return GateResult(
        "windows",
        "passed" if state.open else "waiting",
        reason,
        recheck_at=state.changes_at,
        summary=reason.rsplit(", in ", 1)[0],
    )


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
