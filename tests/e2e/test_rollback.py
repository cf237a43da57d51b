"""ferry rollback: a PR labelled `rollback` that pins the previous digest, merged at once, linking
the PR it reverts; refused during a deny window unless forced by an approver; audited; recorded
so that gate-evaluator can tell a rolled-back digest."""

from __future__ import annotations

from pathlib import Path

from ferry.adapters.git import git
from ferry.adapters.state import RollbackStore
from ferry.core.rollback import rollback_command
from tests.helpers import Cluster, digest_of, run_cli, wait_until

POLICY = """\
environments:
  prod:
    promote_from: build
    auto_merge: true
{extra}approvers:
  teams: {{sre: [sre-oncall-1]}}
"""
FREEZE = """\
    gates:
      approval: {approvers: [release-lead, "team:sre"]}
      windows:
        - {deny: "* * * * *", duration: 1h, timezone: UTC}
"""


def with_policy(env: Cluster, extra: str = "") -> None:
    def write(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(POLICY.format(extra=extra))

    env.commit_by_hand("prod straight from build", write)


def two_builds_in_prod(env: Cluster) -> tuple[str, str]:
    env.start("gate-evaluator")
    env.start("pr-writer")
    old, new = digest_of("old"), digest_of("new")
    env.build("api", old)
    env.wait_pinned("api", "prod", old)
    env.build("api", new)
    env.wait_pinned("api", "prod", new)
    return old, new


def trailers(env: Cluster, ref: str = "main") -> str:
    return git("log", "-1", "--format=%B", ref, cwd=env.repo_path)


def test_rollback_pins_the_previous_digest_by_a_merged_rollback_pr(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    with_policy(env)
    old, new = two_builds_in_prod(env)
    promoted = next(p for p in env.forge.list_prs() if new[:19] in p.title)
    assert f"Ferry-Digest: {new}" in trailers(env)  # an ordinary promotion's merge carries them

    code, out, err = run_cli(
        capsys, "rollback", "api", "prod", "--as", "alice", "--reason", "error rate up"
    )
    assert code == 0, err
    assert "rollback requested" in out
    env.wait_pinned("api", "prod", old, timeout=20)

    pr = env.merged_pr(lambda p: "rollback" in p.labels)
    assert f"#{promoted.number}" in pr.body
    assert "error rate up" in pr.body
    message = trailers(env)
    for line in (
        f"Ferry-Promotion: {pr.key}",
        f"Ferry-Digest: {old}",
        "Ferry-Source-Env: prod",
        f"Ferry-Rollback-Of: {new}",
    ):
        assert line in message
    assert RollbackStore(env.bus).is_rolled_back("api", "prod", new)
    assert not RollbackStore(env.bus).is_rolled_back("api", "prod", old)
    merged = wait_until(lambda: [c for c in env.changes("pr_merged") if c.get("rollback_of")], 10)
    assert merged[0]["digest"] == old and merged[0]["rollback_of"] == new
    wait_until(
        lambda: any(
            a["action"] == "rollback" and a["outcome"] == "rolled back" and "alice" in a["reason"]
            for a in env.entries("audit")
        ),
        10,
        "the rollback's audit record",
    )


def test_cli_mistakes_are_one_line_before_anything_is_published(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    with_policy(env)
    code, _, err = run_cli(capsys, "rollback", "api", "prod", "--as", "alice")
    assert code == 2 and "pins nothing on main" in err
    old, new = two_builds_in_prod(env)
    never = digest_of("never")
    for args, words in (
        (["--to", "api:latest"], "--to must be sha256"),
        (["--to", never], "never ran in prod"),
        (["--to", new], "already pins"),
    ):
        code, _, err = run_cli(capsys, "rollback", "api", "prod", "--as", "alice", *args)
        assert code == 2 and words in err and err.count("\n") == 1, err
    code, _, err = run_cli(capsys, "rollback", "api", "qa", "--as", "alice")
    assert code == 2 and "unknown environment 'qa'" in err
    assert env.entries("promotions") == [
        e for e in env.entries("promotions") if e["kind"] != "rollback"
    ]
    # --to an older digest that ran there is fine
    assert run_cli(capsys, "rollback", "api", "prod", "--to", old, "--as", "alice")[0] == 0
    env.wait_pinned("api", "prod", old, timeout=20)


def test_a_deny_window_refuses_a_rollback_unless_an_approver_forces_it(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    env.init_repo(["api"])
    with_policy(env)
    old, new = two_builds_in_prod(env)
    with_policy(env, FREEZE)
    code, _, err = run_cli(capsys, "rollback", "api", "prod", "--as", "alice")
    assert code == 2 and "deny window" in err and "--force" in err
    code, _, err = run_cli(capsys, "rollback", "api", "prod", "--as", "alice", "--force")
    assert code == 2 and "not alice" in err
    # pr-writer checks too: a command published by other means is refused visibly
    env.bus.publish(
        rollback_command(
            service="api",
            env="prod",
            to=old,
            rolls_back=new,
            actor="alice",
            reason="x",
            request="1",
        )
    )
    failed = wait_until(lambda: env.changes("promotion_failed"), 20, "promotion_failed")
    assert "deny window" in failed[0]["reason"]
    wait_until(lambda: env.dead_letters(), 10, "the dead letter")
    assert env.repo.pinned("api", "prod") == new

    code, _, err = run_cli(capsys, "rollback", "api", "prod", "--as", "sre-oncall-1", "--force")
    assert code == 0, err
    env.wait_pinned("api", "prod", old, timeout=20)
    pr = env.merged_pr(lambda p: "rollback" in p.labels)
    assert "sre-oncall-1 (forced)" in pr.body
