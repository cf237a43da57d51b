"""Rollback rules (ferry.core.rollback): when a rollback is refused, and who may force it."""

from __future__ import annotations

from datetime import UTC, datetime

from ferry.core.policy import load_policy
from ferry.core.rollback import CANARY_WATCHER, approvers_of, refusal, rollback_command

NOW = datetime(2026, 12, 24, 12, 0, tzinfo=UTC)  # inside the year-end freeze below
POLICY = load_policy(
    """
environments:
  prod:
    promote_from: build
    gates:
      approval: {approvers: [release-lead, "team:sre"]}
      windows:
        - {allow: "0 9 * * 1-4", duration: 6h}
        - {deny: "0 0 20 12 *", duration: 14d}
  dev: {promote_from: build}
approvers: {teams: {sre: [sre-1, sre-2], web: [web-1]}}
"""
)
TEAMS = dict(POLICY.approvers.teams)
PROD = POLICY.environment("prod")


def test_approvers_are_the_gate_s_people_teams_expanded() -> None:
    assert approvers_of(PROD, TEAMS) == {"release-lead", "sre-1", "sre-2"}
    # no approval gate: any member of a team
    assert approvers_of(POLICY.environment("dev"), TEAMS) == {"sre-1", "sre-2", "web-1"}


def test_a_deny_window_refuses_unless_an_approver_forces() -> None:
    why = refusal(PROD, TEAMS, actor="alice", force=False, now=NOW)
    assert why is not None and "deny window until" in why and "--force" in why
    forced_by_stranger = refusal(PROD, TEAMS, actor="alice", force=True, now=NOW)
    assert forced_by_stranger is not None and "not alice" in forced_by_stranger
    assert refusal(PROD, TEAMS, actor="sre-2", force=True, now=NOW) is None
    assert refusal(PROD, TEAMS, actor=CANARY_WATCHER, force=True, now=NOW) is None


def test_allow_windows_do_not_hold_a_rollback() -> None:
    sunday = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)  # no allow window is open
    assert refusal(PROD, TEAMS, actor="alice", force=False, now=sunday) is None


def test_a_rollback_request_is_one_promotion_however_often_it_is_sent() -> None:
    def command(request: str):  # noqa: ANN202
        return rollback_command(
            service="api",
            env="prod",
            to="sha256:" + "1" * 64,
            rolls_back="sha256:" + "2" * 64,
            actor="alice",
            reason="why",
            request=request,
        )

    assert command("a").promotion_id == command("a").promotion_id
    assert command("a").promotion_id != command("b").promotion_id
    assert command("a").promotion_id.startswith("r-")
    assert command("a").kind == "rollback" and command("a").auto_merge
