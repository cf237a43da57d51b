"""The staging -> prod gates: approval, soak, sync windows, and how
`evaluate` combines them. Pure functions: plain values in, a verdict and its sentence out."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from ferry.core.evidence import Evidence
from ferry.core.gates import Facts, approval_gate, gate_results, soak_gate, windows_gate
from ferry.core.policy import ApprovalGate, SoakGate, Window, load_policy
from tests.unit.decisions import auto_merge, decide_for, verdict, words

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # Thu, inside 09-15
D = "sha256:" + "ab" * 32
TEAMS = {"sre": ["sre-oncall-1", "sre-oncall-2"]}
GATE = ApprovalGate(min_approvals=1, approvers=["release-lead", "team:sre"])


def facts(**kw: object) -> Facts:
    kw.setdefault("now", NOW)
    kw.setdefault("teams", TEAMS)
    approvals = kw.pop("approvals", None)
    rejections = kw.pop("rejections", None)
    kw["words"] = words(D, "prod", approvals, rejections)  # type: ignore[arg-type]
    return Facts(digest=D, env="prod", **kw)  # type: ignore[arg-type]


def approved_by(*actors: str, gate: ApprovalGate = GATE, **kw: object):  # noqa: ANN201
    return approval_gate(gate, facts(approvals={a: "lgtm" for a in actors}, **kw))


# --------------------------------------------------------------------------- approval


def test_approval_by_a_listed_user_passes() -> None:
    result = approved_by("release-lead")
    assert result.gate == "approval" and result.status == "passed"
    assert result.reason == "approved by release-lead via cli (1/1)"


def test_approval_by_a_team_member_passes_through_facts_teams() -> None:
    assert approved_by("sre-oncall-2").status == "passed"


def test_team_membership_comes_from_facts_not_from_the_name() -> None:
    result = approved_by("sre-oncall-2", teams={})
    assert result.status == "waiting"
    assert "sre-oncall-2 is not an approver" in result.reason


def test_no_approvals_waits_and_says_how_many_and_from_whom() -> None:
    result = approval_gate(GATE, facts())
    assert result.status == "waiting"
    assert result.reason == "waiting: approvals 0/1 (from release-lead, team:sre)"


def test_approval_by_someone_not_listed_does_not_count() -> None:
    result = approved_by("intern")
    assert result.status == "waiting"
    assert "approvals 0/1" in result.reason
    assert "intern is not an approver" in result.reason


def test_min_approvals_counts_distinct_approvers() -> None:
    two = ApprovalGate(min_approvals=2, approvers=["release-lead", "team:sre"])
    one = approved_by("sre-oncall-1", "intern", gate=two)
    assert one.status == "waiting" and "approvals 1/2" in one.reason
    both = approved_by("sre-oncall-1", "release-lead", gate=two)
    assert both.status == "passed"
    assert both.reason == "approved by release-lead via cli, sre-oncall-1 via cli (2/2)"


def test_the_builds_author_does_not_count_by_default() -> None:
    result = approved_by("release-lead", author="release-lead")
    assert result.status == "waiting"
    assert "approvals 0/1" in result.reason
    assert "release-lead is the author" in result.reason


def test_the_author_counts_when_author_can_approve() -> None:
    lenient = GATE.model_copy(update={"author_can_approve": True})
    assert approved_by("release-lead", gate=lenient, author="release-lead").status == "passed"


def test_the_author_does_not_stop_another_approver_counting() -> None:
    assert approved_by("release-lead", "sre-oncall-1", author="release-lead").status == "passed"


def test_a_rejection_by_an_approver_fails_the_gate_even_with_enough_approvals() -> None:
    result = approval_gate(
        GATE,
        facts(approvals={"release-lead": "lgtm"}, rejections={"sre-oncall-1": "p99 regressed"}),
    )
    assert result.status == "failed"
    assert result.reason == "rejected by sre-oncall-1: p99 regressed"


def test_a_rejection_by_a_non_approver_is_ignored() -> None:
    result = approval_gate(
        GATE, facts(approvals={"release-lead": "lgtm"}, rejections={"intern": "looks scary"})
    )
    assert result.status == "passed"


def test_empty_approvers_list_means_anyone_counts() -> None:
    anyone = ApprovalGate(min_approvals=1, approvers=[])
    assert approved_by("intern", gate=anyone).status == "passed"
    waiting = approval_gate(anyone, facts())
    assert waiting.reason == "waiting: approvals 0/1 (from anyone)"
    rejected = approval_gate(anyone, facts(rejections={"intern": "no"}))
    assert rejected.status == "failed" and rejected.reason == "rejected by intern: no"


def test_min_approvals_zero_passes_with_no_approvals() -> None:
    result = approval_gate(ApprovalGate(min_approvals=0, approvers=["release-lead"]), facts())
    assert result.status == "passed"


@given(
    st.sets(st.sampled_from(["release-lead", "sre-oncall-1", "sre-oncall-2", "intern", "dev"])),
    st.sampled_from([None, "release-lead", "sre-oncall-1", "intern"]),
    st.integers(min_value=0, max_value=4),
)
def test_approval_passes_exactly_when_enough_listed_non_authors_approved(
    actors: set[str], author: str | None, needed: int
) -> None:
    gate = ApprovalGate(min_approvals=needed, approvers=["release-lead", "team:sre"])
    counted = {a for a in actors if a in {"release-lead", *TEAMS["sre"]} and a != author}
    result = approved_by(*actors, gate=gate, author=author)
    assert (result.status == "passed") == (len(counted) >= needed)
    assert result.status != "failed"


# --------------------------------------------------------------------------- soak

SOAK = SoakGate(min_duration=timedelta(hours=2), checks=["load-test"])
GREEN = Evidence(checks={"load-test": "success"})


def test_soak_waits_while_the_digest_is_not_live() -> None:
    result = soak_gate(SOAK, facts(live_since=None), GREEN, "staging")
    assert result.status == "waiting"
    assert result.reason == "waiting: not live in staging yet"


def test_soak_waits_until_min_duration_and_says_when_to_look_again() -> None:
    since = NOW - timedelta(minutes=30)
    result = soak_gate(SOAK, facts(live_since=since), GREEN, "staging")
    assert result.status == "waiting"
    assert "soaking in staging 30m/2h" in result.reason
    assert result.reason.endswith("done in 1h30m")
    assert result.recheck_at == since + timedelta(hours=2)


def test_soak_is_done_exactly_at_min_duration() -> None:
    result = soak_gate(SOAK, facts(live_since=NOW - timedelta(hours=2)), GREEN, "staging")
    assert result.status == "passed"
    assert result.reason == "soaked 2h in staging; load-test green"


def test_soak_waits_for_a_missing_named_check() -> None:
    result = soak_gate(SOAK, facts(live_since=NOW - timedelta(hours=3)), Evidence(), "staging")
    assert result.status == "waiting"
    assert result.reason == "waiting: load-test not green in staging"


def test_soak_waits_for_a_red_named_check() -> None:
    red = Evidence(checks={"load-test": "failure", "smoke": "success"})
    result = soak_gate(SOAK, facts(live_since=NOW - timedelta(hours=3)), red, "staging")
    assert result.status == "waiting" and "load-test not green" in result.reason


def test_soak_without_checks_needs_only_time() -> None:
    timed = SoakGate(min_duration=timedelta(minutes=10))
    result = soak_gate(timed, facts(live_since=NOW - timedelta(minutes=11)), Evidence(), "staging")
    assert result.status == "passed" and result.reason == "soaked 11m in staging"


# --------------------------------------------------------------------------- windows gate


def test_windows_gate_passes_in_an_open_window_and_waits_outside() -> None:
    weekdays = [Window(allow="0 9 * * 1-4", duration="6h", timezone="Europe/Berlin")]
    inside = windows_gate(weekdays, facts())
    assert inside.gate == "windows" and inside.status == "passed"
    outside = windows_gate(weekdays, facts(now=NOW + timedelta(hours=7)))  # Thu 17:00
    assert outside.status == "waiting"
    assert outside.reason == "waiting: sync window opens Mon 30 Nov 09:00 Europe/Berlin, in 3d16h"
    assert outside.recheck_at == datetime(2026, 11, 30, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))


# --------------------------------------------------------------------------- evaluate

# Gates listed out of the reporting order on purpose.
POLICY_YAML = """
environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, gates: {ci: {}}, auto_merge: true}
  prod:
    promote_from: staging
    auto_merge: true
    strategy: canary
    gates:
      windows:
        - {allow: "0 9 * * 1-4", duration: 6h, timezone: Europe/Berlin}
        - {deny: "0 0 20 12 *", duration: 14d, timezone: UTC}
      soak: {min_duration: 2h, checks: [load-test]}
      approval: {min_approvals: 1, approvers: [release-lead, "team:sre"]}
      ci: {checks: [integration]}
  manual:
    promote_from: staging
    gates: {approval: {min_approvals: 0}}
approvers:
  teams: {sre: [sre-oncall-1, sre-oncall-2]}
"""
POLICY = load_policy(POLICY_YAML)
PROD = POLICY.environment("prod")
ALL_GREEN = Evidence(checks={"integration": "success", "load-test": "success"})


def prod_facts(**kw: object) -> Facts:
    kw.setdefault("approvals", {"sre-oncall-1": "ship it"})
    kw.setdefault("author", "dev-1")
    kw.setdefault("live_since", NOW - timedelta(hours=3))
    kw.setdefault("teams", dict(POLICY.approvers.teams))
    return facts(**kw)


def decide(env: str = "prod", evidence: Evidence = ALL_GREEN, **kw: object):  # noqa: ANN201
    f = prod_facts(**kw)
    return decide_for(
        POLICY,
        env,
        D,
        f.now,
        evidence=evidence,
        words=tuple(w.__class__(w.kind, w.actor, D, env, w.reason, w.at) for w in f.words),
        author=f.author,
        live_since=f.live_since,
    )


def test_gates_are_reported_in_the_order_ci_approval_soak_windows() -> None:
    gates = gate_results(PROD, ALL_GREEN, "staging", prod_facts())
    assert [g.gate for g in gates] == ["ci", "approval", "soak", "windows"]
    assert [g.gate for g in decide().gates] == ["ci", "approval", "soak", "windows"]


def test_prod_promotes_when_every_gate_passes_with_auto_merge_from_the_policy() -> None:
    decision = decide()
    assert verdict(decision) == "promote"
    assert all(g.status == "passed" for g in decision.gates)
    assert auto_merge(decision) is True
    assert len(decision.reasons) == 4


def test_auto_merge_false_in_the_policy_is_reported() -> None:
    decision = decide("manual")
    assert verdict(decision) == "promote" and auto_merge(decision) is False


def test_a_rejection_makes_prod_wait_with_the_approval_gate_failed() -> None:
    decision = decide(rejections={"release-lead": "not during the sale"})
    assert verdict(decision) == "wait"
    statuses = {g.gate: g.status for g in decision.gates}
    assert statuses == {"ci": "passed", "approval": "failed", "soak": "passed", "windows": "passed"}
    assert list(decision.reasons) == ["rejected by release-lead: not during the sale"]


def test_each_unmet_gate_alone_blocks_prod() -> None:
    cases = {
        "ci": dict(evidence=Evidence(checks={"load-test": "success"})),
        "approval": dict(approvals={}),
        "soak": dict(live_since=NOW - timedelta(minutes=30)),
        "windows": dict(now=NOW + timedelta(hours=7), live_since=NOW),  # Thu 17:00, soaked 7h
    }
    for blocked, change in cases.items():
        decision = decide(**change)  # type: ignore[arg-type]
        assert verdict(decision) == "wait", blocked
        waiting = [g.gate for g in decision.gates if g.status != "passed"]
        assert waiting == [blocked]
        assert len(decision.reasons) == 1 and decision.reasons[0].startswith("waiting: ")


def test_year_end_freeze_blocks_prod_even_inside_the_weekday_window() -> None:
    thursday_in_freeze = datetime(2026, 12, 31, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    decision = decide(now=thursday_in_freeze, live_since=thursday_in_freeze - timedelta(hours=3))
    assert verdict(decision) == "wait"
    windows = decision.gates[-1]
    assert windows.gate == "windows" and windows.status == "waiting"
    assert windows.reason == "waiting: deny window until Sun 03 Jan 00:00 UTC, in 2d15h"
    # The freeze ends on a Sunday: nothing may move before the weekday window opens on Monday.
    assert windows.recheck_at == datetime(2027, 1, 4, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))
