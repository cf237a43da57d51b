"""What people do beside the automation, checked before anything changes: a merge by hand is
held to the same decision gate-evaluator takes, and an override is a listed approver's, with a
reason, on the record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ferry.adapters.bus import Bus
from ferry.adapters.gitops import MainSnapshot
from ferry.app.snapshot import gather
from ferry.core.decision import Decision, decide
from ferry.core.errors import Rejected
from ferry.core.rollback import approvers_of

# The decisions under which a person may merge a promotion's pull request without --force.
MERGEABLE = ("ready", "waiting for a person to merge")


@dataclass(frozen=True)
class MergeCheck:
    """The verdict on a merge by hand: the decision it was checked against, and, when the gates
    did not allow it, the override that lets it through."""

    decision: Decision
    forced: bool = False

    @property
    def unmet(self) -> str:
        return "; ".join(g.reason for g in self.decision.gates if g.status != "passed")


def check_merge(
    bus: Bus,
    main: MainSnapshot,
    promotion: Mapping[str, str],
    number: int,
    *,
    actor: str,
    force: bool,
    now: datetime,
) -> MergeCheck:
    """May ACTOR merge pull request NUMBER of PROMOTION (a PromotionStore record) now? Yes when
    `decide` says it is ready; otherwise only with FORCE by an approver listed for its
    environment. Rejected with the one line that says what to do."""
    service, env = promotion["service"], promotion["target_env"]
    snapshot = gather(
        bus, main, service, env, now, promotion["digest"], promotion.get("source_env") or None
    )
    d = decide(snapshot)
    if d.state in MERGEABLE:
        return MergeCheck(d)
    unmet = "; ".join(g.reason for g in d.gates if g.status != "passed") or d.sentence
    if not force:
        raise Rejected(
            f"refused: #{number} is {d.state} ({unmet}); a listed approver may merge it anyway "
            "with --force --as USER --reason WHY"
        )
    listed = approvers_of(snapshot.env_policy, dict(main.policy.approvers.teams))
    if actor not in listed:
        who = ", ".join(sorted(listed)) or "nobody is listed"
        raise Rejected(
            f"refused: --force on #{number} is for the approvers of {env} ({who}), not {actor}"
        )
    return MergeCheck(d, forced=True)
