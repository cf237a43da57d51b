"""The one decision: from a snapshot of everything that matters for moving one digest into one
environment, what Ferry does now, why, and when that may change.

gate-evaluator gathers a snapshot, calls `decide` and carries out the actions; `ferry explain`,
`ferry status` and the board call `decide` on the same snapshot, so what they say is what the
worker does. Pure: `now` is part of the snapshot, nothing here reads a clock or does I/O.

The rules, in order:
- nothing moves that the target already pins, or that is not live in the source environment:
  pinned there on main, and with `live_when: synced|healthy` on the source, reported by Argo CD
  synced to the digest (and healthy); the soak counts from the later of the two;
- a digest rolled back out of the target does not go back there on its own;
- an older build never replaces the newer one already chosen for the target (ranked by build
  time; a build of unknown time ranks as now), while that one's pull request is not closed and
  its merge not reverted;
- a merged promotion whose digest main no longer pins (a revert, a hand edit) is "reverted":
  it, like a closed one, moves again only when a person asks (`ferry promote`);
- a hold on the target (`ferry hold`) is a gate that waits until a person releases it;
- a target with gates that wait on people or time (approval, soak, windows) gets its pull request
  as soon as the digest is live in the source and is the newest candidate, with a `ferry/gates`
  status (pending, failure, success) that is updated when the gates' state changes; it is merged
  when every gate passes (by Ferry with `auto_merge`, else by a person);
- a target gated by CI alone (or not at all) gets its pull request once its gates pass;
- choosing a digest closes the open pull request of the older candidate it supersedes, and a
  candidate whose digest left the source environment has its pull request closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from ferry.core.deployments import Deployment, LiveWhen, waiting_for_argo
from ferry.core.events import promotion_id
from ferry.core.evidence import Candidate, Evidence, Word
from ferry.core.gates import Facts, GateResult, gate_results
from ferry.core.policy import BUILD, EnvironmentPolicy

PromotionState = Literal["requested", "open", "merged", "closed"]
ActionKind = Literal["open", "update_gates", "merge", "close", "wait", "nothing"]
GatesState = Literal["pending", "success", "failure"]


@dataclass(frozen=True)
class PromotionView:
    """What Ferry knows of one promotion (one digest into one environment) from the changes it
    heard: requested, its pull request opened, merged or closed."""

    promotion_id: str
    digest: str
    state: PromotionState
    pr: int | None = None
    gates_sent: str = ""  # the gate status last sent to the pull request (a fingerprint)
    auto_merge: bool = False  # asked for with its gates passed: pr-writer merges it at once
    merge_commit: str | None = None
    # Merged, but main no longer pins its digest: the merge was reverted, or the line edited by
    # hand (or rolled back). Only a person asks for it again (`ferry promote`).
    reverted: bool = False


@dataclass(frozen=True)
class Snapshot:
    """Everything the decision about (service, source -> target) looks at, read at one moment."""

    service: str
    source: str
    target: str
    env_policy: EnvironmentPolicy
    now: datetime
    digest: str | None  # the digest that would move next (None: nothing would)
    pinned_target: str | None = None
    pinned_source: str | None = None
    build_rank: float | None = None  # when DIGEST was built (epoch seconds); None: unknown
    author: str | None = None
    live_since: datetime | None = None  # when DIGEST went live in SOURCE
    evidence: Evidence = field(default_factory=Evidence)  # CI and checks of DIGEST in SOURCE
    words: tuple[Word, ...] = ()
    teams: Mapping[str, list[str]] = field(default_factory=dict)
    candidate: Candidate | None = None  # the digest chosen so far for TARGET
    promotion: PromotionView | None = None  # DIGEST's promotion into TARGET
    candidate_promotion: PromotionView | None = None  # the chosen candidate's promotion
    policy_error: str | None = None  # ferry.yaml on main refused; the last valid one is used
    rolled_back: str | None = None  # DIGEST was rolled back out of TARGET ("by alice: why")
    hold: str | None = None  # promotions into TARGET are held ("held by alice since ...: why")
    # When a digest counts as live in SOURCE (its `live_when`), and what Argo CD last reported
    # about SERVICE there (read only when live_when is not "merged").
    source_live_when: LiveWhen = "merged"
    deployed: Deployment | None = None


@dataclass(frozen=True)
class Action:
    """One thing to do, with its reason. `open` asks for the pull request (merged at once when
    `auto_merge`), `update_gates` rewrites its `ferry/gates` status and gate section, `merge`
    merges it, `close` closes a superseded one, `wait` names when to look again."""

    kind: ActionKind
    reason: str
    digest: str | None = None
    promotion_id: str | None = None
    pr: int | None = None
    auto_merge: bool = False
    gates_state: GatesState | None = None
    gates_description: str | None = None
    gates_fingerprint: str | None = None
    until: datetime | None = None
    successor: str | None = None


@dataclass(frozen=True)
class Decision:
    digest: str | None
    state: str  # up to date | waiting | ready | blocked | older | nothing to promote | ...
    actions: tuple[Action, ...]
    gates: tuple[GateResult, ...] = ()
    reasons: tuple[str, ...] = ()
    next_change_at: datetime | None = None  # the verdict may change then, never later
    rank: float | None = None  # the build time the decision ranked DIGEST by

    @property
    def sentence(self) -> str:
        return "; ".join(self.reasons)

    def kinds(self) -> list[str]:
        return [a.kind for a in self.actions]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sentence"] = self.sentence
        return out


def next_digest(source: str, pinned_source: str | None, candidate: Candidate | None) -> str | None:
    """The digest that would move next into an environment: what its source pins, or for an
    environment promoted from builds, the build chosen for it."""
    if source == BUILD:
        return candidate.digest if candidate else None
    return pinned_source


def early(env_policy: EnvironmentPolicy) -> bool:
    """Does this environment wait on people or time (approval, soak, windows)? Then its pull
    request opens as soon as a digest is a candidate, and reviewers see it while the gates run."""
    g = env_policy.gates
    return g.approval is not None or g.soak is not None or bool(g.windows)


def gates_view(gates: tuple[GateResult, ...]) -> tuple[GatesState, str, str]:
    """The `ferry/gates` status of a pull request: its state, a description listing the unmet
    gates, and a fingerprint that changes only when the gates' state or stable reasons do."""
    failed = [g for g in gates if g.status == "failed"]
    waiting = [g for g in gates if g.status == "waiting"]
    state: GatesState = "failure" if failed else "pending" if waiting else "success"
    if failed or waiting:
        description = "unmet: " + ", ".join(f"{g.gate} ({g.status})" for g in failed + waiting)
    else:
        description = "all gates passed"
    fingerprint = state + "|" + "|".join(f"{g.gate}={g.status}:{g.stable}" for g in gates)
    return state, description, fingerprint


def decide(s: Snapshot) -> Decision:
    """What to do about S.digest and S.target now (see the module's docstring for the rules)."""
    if s.digest is None:
        why = (
            "no successful build has been seen"
            if s.source == BUILD
            else f"no digest has reached {s.source} yet"
        )
        return Decision(None, "nothing to promote", (Action("nothing", why),), reasons=(why,))
    digest, target = s.digest, s.target
    pid = promotion_id(s.service, digest, target)
    live_since, not_running = _running(s, digest)
    facts = Facts(
        now=s.now,
        digest=digest,
        env=target,
        words=s.words,
        author=s.author,
        live_since=live_since,
        teams=dict(s.teams),
    )
    gates = gate_results(s.env_policy, s.evidence, s.source, facts)
    if s.hold is not None:
        # A hold is a gate like any other: it waits (nothing opens early or merges) until a
        # person releases it.
        release = f"`ferry release {s.service} {target}` lifts it"
        gates = (GateResult("hold", "waiting", f"waiting: {s.hold} ({release})"), *gates)
    notes: tuple[str, ...] = ()
    if s.policy_error:
        notes = (f"ferry.yaml on main is refused ({s.policy_error}); the last valid one applies",)

    def decision(
        state: str, actions: list[Action], reasons: list[str], next_at: datetime | None = None
    ) -> Decision:
        if not any(a.kind == "close" for a in actions):
            actions = [*actions, *_stale(s)]
        return Decision(
            digest, state, tuple(actions), gates, (*reasons, *notes), next_at, rank=rank
        )

    rank = s.build_rank if s.build_rank is not None else s.now.timestamp()
    if s.pinned_target == digest:
        why = f"{target} already pins this digest"
        return decision("up to date", [Action("nothing", why, digest, pid)], [why])
    if s.source != BUILD and s.pinned_source != digest:
        why = f"waiting: digest is not live in {s.source} yet"
        return decision("waiting", [Action("nothing", why, digest, pid)], [why])
    if not_running is not None:
        return decision("waiting", [Action("nothing", not_running, digest, pid)], [not_running])
    if s.rolled_back is not None:
        why = f"rolled back out of {target} {s.rolled_back}".rstrip()
        why += ": it goes back there only when a newer build replaces it"
        return decision("rolled back", [Action("nothing", why, digest, pid)], [why])
    chosen = s.candidate
    if chosen and chosen.digest != digest and chosen.rank > rank and _stands(s):
        prom_c = s.candidate_promotion
        where = f" (pull request #{prom_c.pr} {prom_c.state})" if prom_c and prom_c.pr else ""
        why = (
            f"{chosen.digest} is a newer build and already the candidate for {target}{where}: "
            "an older build never replaces it"
        )
        return decision("older", [Action("nothing", why, digest, pid)], [why])

    times = [g.recheck_at for g in gates if g.recheck_at is not None and g.recheck_at > s.now]
    next_at = min(times) if times else None
    state, description, fingerprint = gates_view(gates)
    unmet = [g.reason for g in gates if g.status != "passed"]
    passed = not unmet
    reasons = [g.reason for g in gates] if passed else unmet
    if passed and s.source == BUILD:
        reasons.append("build succeeded")
    reasons = reasons or ["no gates"]
    auto = bool(s.env_policy.auto_merge)
    wait = [Action("wait", "; ".join(unmet), digest, pid, until=next_at)] if not passed else []
    verdict = "ready" if passed else "blocked" if state == "failure" else "waiting"
    prom = s.promotion

    def gates_update(number: int | None) -> list[Action]:
        if prom is None or prom.gates_sent == fingerprint:
            return []
        return [
            Action(
                "update_gates",
                description,
                digest,
                pid,
                pr=number,
                gates_state=state,
                gates_description=description,
                gates_fingerprint=fingerprint,
            )
        ]

    again = f"`ferry promote {s.service} {target} {digest} --as USER` asks for it again"
    if prom is not None and prom.state == "merged" and prom.reverted:
        why = (
            f"pull request #{prom.pr} merged, but main no longer pins this digest in {target} "
            f"(reverted or changed by hand): {again}"
        )
        return decision("reverted", [Action("nothing", why, digest, pid, pr=prom.pr)], [why])
    if prom is not None and prom.state == "merged":
        why = f"pull request #{prom.pr} merged; waiting for main to show it"
        return decision("merged", [Action("nothing", why, digest, pid, pr=prom.pr)], [why])
    if prom is not None and prom.state == "closed":
        why = f"pull request #{prom.pr} was closed without merging: {again}"
        return decision("closed", [Action("nothing", why, digest, pid, pr=prom.pr)], [why])
    if prom is None or prom.auto_merge:
        # Not asked for yet; or asked for to be opened and merged at once, which asking again
        # (an idempotent command) leaves to the first request.
        if not passed and not early(s.env_policy):
            return decision(verdict, wait, reasons, next_at)
        opened = Action(
            "open",
            "; ".join(reasons),
            digest,
            pid,
            auto_merge=auto and passed,
            gates_state=state,
            gates_description=description,
            gates_fingerprint=fingerprint,
        )
        return decision(verdict, [opened, *_supersede(s, digest, pid), *wait], reasons, next_at)
    number = prom.pr
    if passed and auto:
        merge = Action("merge", "; ".join(reasons), digest, pid, pr=number)
        return decision("ready", [*gates_update(number), merge], reasons, next_at)
    if passed:
        why = f"every gate passed: waiting for a person to merge #{number or '?'}"
        return decision(
            "waiting for a person to merge", gates_update(number), [why, *reasons], next_at
        )
    return decision(verdict, [*gates_update(number), *wait], reasons, next_at)


def _running(s: Snapshot, digest: str) -> tuple[datetime | None, str | None]:
    """Since when DIGEST counts as live in the source, and, when the source's `live_when` waits
    for Argo CD and Argo CD has not reported it running as asked, why not."""
    if s.source == BUILD or s.source_live_when == "merged":
        return s.live_since, None
    since = s.deployed.live_since(digest, s.source_live_when) if s.deployed else None
    if since is None:
        last = s.deployed
        return s.live_since, waiting_for_argo(s.service, s.source, digest, s.source_live_when, last)
    return (max(since, s.live_since) if s.live_since else since), None


def _stands(s: Snapshot) -> bool:
    """Does the candidate chosen for the target still hold its place? Not once its pull request
    was closed or its merge reverted on main: a person set it aside, and an older build may
    move again."""
    prom = s.candidate_promotion
    if prom is None:
        return True
    return not (prom.state == "closed" or (prom.state == "merged" and prom.reverted))


def _stale(s: Snapshot) -> list[Action]:
    """The chosen candidate's open pull request, when its digest left the source environment
    (rolled back there, or replaced by hand): it would never merge, so it is closed."""
    old, prom = s.candidate, s.candidate_promotion
    if s.source == BUILD or old is None or prom is None or prom.state not in ("requested", "open"):
        return []
    if old.digest in (s.pinned_source, s.pinned_target):
        return []
    return [
        Action(
            "close",
            f"{old.digest} is no longer live in {s.source}",
            old.digest,
            old.promotion_id,
            pr=prom.pr,
        )
    ]


def _supersede(s: Snapshot, digest: str, pid: str) -> list[Action]:
    """Choosing DIGEST closes the older candidate's pull request, if it is still open."""
    old, prom = s.candidate, s.candidate_promotion
    if old is None or old.digest in (digest, s.pinned_target) or old.promotion_id == pid:
        return []
    if prom is not None and prom.state in ("merged", "closed"):
        return []
    return [
        Action(
            "close",
            f"superseded by {digest} (promotion {pid}), a newer build",
            old.digest,
            old.promotion_id,
            pr=prom.pr if prom else None,
            successor=digest,
        )
    ]
