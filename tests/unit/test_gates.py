"""Gate evaluation is a pure function of policy, facts and evidence."""

from __future__ import annotations

from datetime import UTC, datetime

from ferry.core.evidence import Evidence
from ferry.core.policy import load_policy
from tests.unit.decisions import auto_merge, decide_for, verdict

POLICY = load_policy("""
environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, gates: {ci: {}}, auto_merge: true}
  qa: {promote_from: dev, gates: {ci: {checks: [integration, e2e]}}}
  prod: {promote_from: staging, gates: {approval: {min_approvals: 1}}}
""")
D = "sha256:" + "cd" * 32
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def decide(
    target: str,
    source: str,
    evidence: Evidence | None = None,
    live: bool = True,
    pinned: str | None = None,
):  # noqa: ANN201
    assert POLICY.environment(target).promote_from == source
    return decide_for(POLICY, target, D, NOW, evidence=evidence, live=live, pinned_target=pinned)


def test_build_promotes_to_dev_with_auto_merge() -> None:
    d = decide("dev", "build")
    assert verdict(d) == "promote" and auto_merge(d)


def test_already_pinned_is_skipped() -> None:
    assert verdict(decide("dev", "build", pinned=D)) == "skip"


def test_staging_waits_for_green_ci_and_says_so() -> None:
    d = decide("staging", "dev")
    assert verdict(d) == "wait" and "no green CI for this digest in dev" in d.sentence
    red = decide("staging", "dev", Evidence(checks={"integration": "failure"}))
    assert verdict(red) == "wait" and "failed: integration" in red.sentence


def test_any_green_ci_opens_staging_when_no_checks_are_named() -> None:
    d = decide("staging", "dev", Evidence(checks={"*": "success"}))
    assert verdict(d) == "promote" and auto_merge(d)


def test_named_checks_must_all_be_green() -> None:
    half = decide("qa", "dev", Evidence(checks={"integration": "success"}))
    assert verdict(half) == "wait" and "e2e" in half.sentence
    full = decide("qa", "dev", Evidence(checks={"integration": "success", "e2e": "success"}))
    assert verdict(full) == "promote" and not auto_merge(full)


def test_not_live_in_source_waits() -> None:
    d = decide("staging", "dev", Evidence(checks={"*": "success"}), live=False)
    assert verdict(d) == "wait" and "not live in dev" in d.sentence


def test_prod_waits_for_an_approval_and_says_how_many() -> None:
    d = decide("prod", "staging")
    assert verdict(d) == "wait" and "approvals 0/1" in d.sentence
    assert [g.gate for g in d.gates] == ["approval"]
