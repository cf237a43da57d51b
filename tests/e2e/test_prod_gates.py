"""staging -> prod: approvals from approvers (not the author), a soak with its checks, an open
sync window; ferry merges when every gate passes, or leaves the merge to a person."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Cluster, digest_of, run_cli, wait_until

PROD = """
  prod:
    promote_from: staging
    auto_merge: {auto_merge}
    gates:
      approval:
        {{min_approvals: 1, approvers: [release-lead, "team:sre"], author_can_approve: false}}
      soak: {{min_duration: 2s, checks: [load-test]}}
      windows:
        - {{allow: "* * * * *", duration: 1h, timezone: Europe/Berlin}}
"""


def with_prod_policy(env: Cluster, auto_merge: bool) -> None:
    def short_soak_open_window(clone: Path) -> None:
        policy = (clone / "ferry.yaml").read_text()
        head, _, rest = policy.partition("  # prod:")
        tail = rest[rest.index("\n# Approver groups") :]
        prod = PROD.format(auto_merge=str(auto_merge).lower())
        (clone / "ferry.yaml").write_text(head + prod + tail)

    env.commit_by_hand("prod: short soak, always-open window", short_soak_open_window)


def load_test_passed(capsys, digest: str) -> int:  # noqa: ANN001
    args = ["--service", "api", "--digest", digest, "--env", "staging", "--check", "load-test"]
    return run_cli(capsys, "publish", "check", *args)[0]


def to_staging(env: Cluster, digest: str, author: str = "alice") -> None:
    env.start("gate-evaluator")
    env.start("pr-writer")
    env.build("api", digest, author=author)
    env.wait_pinned("api", "dev", digest)
    env.build("api", digest, env="dev", check="integration")
    env.wait_pinned("api", "staging", digest)


def gates(capsys) -> dict[str, dict]:  # noqa: ANN001
    out = json.loads(run_cli(capsys, "explain", "api", "prod", "--json")[1])
    return {g["gate"]: g for g in out["gates"]}


def test_prod_needs_an_approver_a_soak_and_its_checks(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    with_prod_policy(env, auto_merge=True)
    d = digest_of("prod")
    to_staging(env, d, author="sre-oncall-1")  # an approver, but the author
    assert gates(capsys)["approval"]["reason"].startswith("waiting: approvals 0/1")

    assert run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "sre-oncall-1")[0] == 0
    wait_until(
        lambda: "sre-oncall-1 is the author" in gates(capsys)["approval"]["reason"],
        10,
        "the author's approval to be refused",
    )
    # The CLI refuses an approver who is not listed; a script publishing blind reaches the worker,
    # which does not count it.
    no_check = ("--no-check",)
    assert (
        run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "mallory", *no_check)[0] == 0
    )
    wait_until(lambda: "mallory is not an approver" in gates(capsys)["approval"]["reason"], 10)
    assert run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "sre-oncall-2")[0] == 0
    wait_until(lambda: gates(capsys)["approval"]["status"] == "passed", 10, "the approval")
    assert gates(capsys)["soak"]["status"] == "waiting"  # load-test has not run yet
    assert env.repo.pinned("api", "prod") is None

    assert load_test_passed(capsys, d) == 0
    env.wait_pinned("api", "prod", d, timeout=20)  # the soak ends; a tick merges it
    # The local forge moves main first, then records the merge on the PR.
    prod = wait_until(
        lambda: (
            (ps := [p for p in env.forge.list_prs() if "prod" in p.title])
            and all(p.state == "merged" for p in ps)
            and ps
        ),
        10,
        "the merge recorded on the PR",
    )
    assert len(prod) == 1 and prod[0].state == "merged"
    assert json.loads(run_cli(capsys, "explain", "api", "prod", "--json")[1])["state"] == (
        "up to date"
    )


def test_a_rejection_holds_the_promotion_until_withdrawn(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    with_prod_policy(env, auto_merge=True)
    d = digest_of("rejected")
    to_staging(env, d)
    assert load_test_passed(capsys, d) == 0
    code, _, _ = run_cli(
        capsys,
        "reject",
        "api",
        d,
        "--env",
        "prod",
        "--as",
        "release-lead",
        "--reason",
        "error budget spent",
    )
    assert code == 0
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "sre-oncall-2")
    wait_until(
        lambda: (
            gates(capsys)["approval"]["reason"] == "rejected by release-lead: error budget spent"
        ),
        10,
        "the rejection",
    )
    assert gates(capsys)["approval"]["status"] == "failed"
    wait_until(lambda: any(a["outcome"] == "rejected" for a in env.entries("audit")), 10)
    assert env.repo.pinned("api", "prod") is None
    # release-lead changes their mind: the latest word of each approver counts
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    env.wait_pinned("api", "prod", d, timeout=20)


def test_without_auto_merge_a_person_merges_and_ferry_hears_of_it(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    with_prod_policy(env, auto_merge=False)
    d = digest_of("by-hand")
    to_staging(env, d)
    assert load_test_passed(capsys, d) == 0
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    pr = wait_until(
        lambda: next((p for p in env.forge.list_prs() if "prod" in p.title), None),
        20,
        "the prod pull request",
    )
    pr = wait_until(
        lambda: (
            env.forge.get_pr(pr.number).statuses.get("ferry/gates") == "success"
            and env.forge.get_pr(pr.number)
        ),
        10,
        "the gates status to turn success",
    )
    assert pr.state == "open" and pr.statuses["ferry/gates"] == "success"
    assert env.repo.pinned("api", "prod") is None
    code, out, _ = run_cli(capsys, "pr", "merge", str(pr.number))
    assert code == 0
    env.wait_pinned("api", "prod", d)
    merged = [c for c in env.changes("pr_merged") if c["env"] == "prod"]
    assert len(merged) == 1 and merged[0]["pr"] == str(pr.number)
