"""What people do beside the automation is checked against the same decision, recorded, and
reversible: a merge by hand waits for the gates unless a listed approver forces it, and every
merge or close by hand names who did it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Cluster, digest_of, run_cli, wait_until

POLICY = """\
environments:
  dev: {{promote_from: build, auto_merge: true}}
  staging: {{promote_from: dev, auto_merge: true}}
  prod:
    promote_from: staging
    auto_merge: {auto_merge}
    gates:
      approval: {{min_approvals: 1, approvers: [release-lead, bob]}}
"""


def set_policy(env: Cluster, auto_merge: bool = True) -> None:
    def write(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(POLICY.format(auto_merge=str(auto_merge).lower()))

    env.commit_by_hand("prod gates for the test", write)


def prod_pr(env: Cluster):  # noqa: ANN201
    return next((p for p in env.forge.list_prs() if "to prod" in p.title), None)


def to_staging(env: Cluster, name: str, auto_merge: bool = True) -> tuple[str, int]:
    """Build NAME and let it reach staging; returns its digest and its prod PR's number."""
    env.init_repo(["api"])
    set_policy(env, auto_merge)
    env.start("gate-evaluator")
    env.start("pr-writer")
    d = digest_of(name)
    env.build("api", d, author="alice")
    env.wait_pinned("api", "staging", d)
    pr = wait_until(lambda: (p := prod_pr(env)) and "ferry/gates" in p.statuses and p, 15)
    return d, pr.number


def audited(env: Cluster, action: str, worker: str | None = None) -> list[dict[str, str]]:
    return [
        a for a in env.entries("audit") if a["action"] == action and worker in (None, a["worker"])
    ]


def test_a_rejected_prod_pr_is_marked_refused_by_hand_and_forced_only_by_an_approver(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    d, number = to_staging(env, "rejected-after-open")
    code, _, err = run_cli(capsys, "pr", "merge", str(number), "--as", "alice")
    assert code == 2 and "refused" in err and "waiting" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1

    run_cli(capsys, "reject", "api", d, "--env", "prod", "--as", "bob", "--reason", "bad schema")
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    wait_until(lambda: len(audited(env, "approval")) == 1, 10, "the approval recorded")
    pr = wait_until(
        lambda: (p := prod_pr(env)) and p.statuses["ferry/gates"] == "failure" and p,
        15,
        "the rejection on the pull request",
    )
    assert "| approval | failed |" in pr.body and "bad schema" in pr.body
    assert pr.state == "open"

    code, _, err = run_cli(capsys, "pr", "merge", str(number), "--as", "alice")
    assert code == 2 and "blocked" in err and "rejected by bob: bad schema" in err
    code, _, err = run_cli(
        capsys, "pr", "merge", str(number), "--force", "--as", "alice", "--reason", "trust me"
    )
    assert code == 2 and "not alice" in err and "release-lead" in err
    code, _, err = run_cli(capsys, "pr", "merge", str(number), "--force", "--as", "release-lead")
    assert code == 2 and "--reason" in err
    assert env.forge.get_pr(number).state == "open"
    assert env.repo.pinned("api", "prod") != d

    code, out, _ = run_cli(
        capsys, "pr", "merge", str(number), "--force", "--as", "release-lead",
        "--reason", "hotfix for the outage", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["forced"] is True
    env.wait_pinned("api", "prod", d)
    [record] = audited(env, "merge_pr", "cli")
    assert record["outcome"] == "forced" and record["worker"] == "cli"
    assert "release-lead" in record["reason"] and "hotfix for the outage" in record["reason"]
    [merged] = [c for c in env.changes("pr_merged") if c["env"] == "prod"]
    assert merged["actor"] == "release-lead"
    code, out, _ = run_cli(capsys, "explain", "api", "prod")
    assert code == 0 and out.startswith("api in prod: up to date")
    assert "gate approval" not in out  # the gates of a digest already live are history


def test_without_auto_merge_explain_waits_for_a_person_who_merges_on_the_record(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    d, number = to_staging(env, "manual-merge", auto_merge=False)
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    wait_until(lambda: prod_pr(env).statuses["ferry/gates"] == "success", 15, "the gates to pass")
    explained = json.loads(run_cli(capsys, "explain", "api", "prod", "--json")[1])
    assert explained["state"] == "waiting for a person to merge"
    assert f"waiting for a person to merge #{number}" in explained["reasons"][0]
    code, out, _ = run_cli(capsys, "explain", "api", "prod")
    assert f"waiting for a person to merge #{number}" in out
    assert "ferry does now" not in out  # nothing merges it but a person

    code, out, _ = run_cli(capsys, "pr", "merge", str(number), "--as", "carol")
    assert code == 0 and "merged as" in out
    env.wait_pinned("api", "prod", d)
    [record] = audited(env, "merge_pr", "cli")
    assert record["outcome"] == "merged" and "by carol" in record["reason"]
    merged = wait_until(lambda: [c for c in env.changes("pr_merged") if c["env"] == "prod"], 10)
    assert merged[0]["actor"] == "carol"


def test_a_close_by_hand_is_audited_with_who_closed_it(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    d, number = to_staging(env, "closed-by-hand")
    code, out, _ = run_cli(
        capsys, "pr", "close", str(number), "--as", "dave", "--reason", "wrong build", "--json"
    )
    assert code == 0 and json.loads(out)["state"] == "closed"
    [record] = audited(env, "close_pr", "cli")
    assert record["outcome"] == "closed" and "by dave: wrong build" in record["reason"]
    [closed] = [c for c in env.changes("pr_closed") if c["env"] == "prod"]
    assert closed["actor"] == "dave" and closed["reason"] == "wrong build"
    explained = json.loads(run_cli(capsys, "explain", "api", "prod", "--json")[1])
    assert explained["state"] == "closed"


def test_a_closed_promotion_is_asked_for_again_and_lands(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    d, number = to_staging(env, "closed-then-asked-again")
    run_cli(capsys, "pr", "close", str(number), "--as", "dave", "--reason", "not today")
    wait_until(
        lambda: (
            json.loads(run_cli(capsys, "explain", "api", "prod", "--json")[1])["state"] == "closed"
        ),
        10,
        "the close to be heard",
    )
    # Before: approving answered "already requested" for ever.
    code, out, err = run_cli(capsys, "promote", "api", "prod", "--as", "dave", "--reason", "today")
    assert code == 0, err
    reopened = wait_until(
        lambda: next((p for p in env.forge.list_prs("open") if "to prod" in p.title), None),
        15,
        "a new prod pull request",
    )
    assert reopened.number != number
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    env.wait_pinned("api", "prod", d)
    [asked] = [a for a in env.entries("audit") if a["outcome"] == "asked again"]
    assert "by dave: today" in asked["reason"]


def test_a_reverted_merge_is_noticed_and_can_be_asked_for_again(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    from tests.helpers import pin_digest

    d, number = to_staging(env, "reverted")
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    env.wait_pinned("api", "prod", d)
    wait_until(lambda: [c for c in env.changes("pr_merged") if c["env"] == "prod"], 10)
    other = digest_of("pinned by hand")
    env.commit_by_hand("pin prod by hand", lambda clone: pin_digest(clone, "prod", "api", other))
    code, out, err = run_cli(capsys, "explain", "api", "prod", "--json")
    assert code == 0, err
    explained = json.loads(out)
    assert explained["state"] == "reverted"
    assert f"ferry promote api prod {d}" in explained["reasons"][0]

    code, _, err = run_cli(capsys, "promote", "api", "prod", d, "--as", "release-lead")
    assert code == 0, err
    env.wait_pinned("api", "prod", d)


def test_a_hold_stops_a_promotion_that_would_merge_and_release_lets_it_through(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    d, number = to_staging(env, "held")
    code, _, err = run_cli(
        capsys, "hold", "api", "prod", "--as", "sre-oncall-1", "--reason", "incident 42"
    )
    assert code == 0, err
    wait_until(lambda: audited(env, "hold"), 10, "the hold recorded")
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    pr = wait_until(
        lambda: (
            (p := prod_pr(env))
            and p.status_descriptions["ferry/gates"] == "unmet: hold (waiting)"
            and p
        ),
        15,
        "the approval passed and the hold waiting on the pull request",
    )
    assert "| approval | passed |" in pr.body and "| hold | waiting |" in pr.body
    explained = json.loads(run_cli(capsys, "explain", "api", "prod", "--json")[1])
    assert explained["state"] == "waiting"
    [held] = [g for g in explained["gates"] if g["gate"] == "hold"]
    assert "held by sre-oncall-1" in held["reason"] and "incident 42" in held["reason"]
    status = run_cli(capsys, "status")[1]
    assert "held by sre-oncall-1" in status
    assert env.forge.get_pr(number).state == "open" and env.repo.pinned("api", "prod") != d

    code, _, err = run_cli(capsys, "hold", "prod", "--as", "x", "--reason", "y")
    assert code == 2 and "ferry hold SERVICE ENV" in err
    code, _, err = run_cli(capsys, "release", "api", "prod", "--as", "sre-oncall-1")
    assert code == 0, err
    env.wait_pinned("api", "prod", d)
    [record] = audited(env, "hold")
    assert record["subject"] == "api in prod" and record["outcome"] == "held"
    assert "by sre-oncall-1: incident 42" in record["reason"]
    assert audited(env, "release")[0]["outcome"] == "released"


def test_a_hold_of_every_service_holds_each_one(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    env.init_repo(["api", "web"])
    env.start("gate-evaluator")
    env.start("pr-writer")
    code, _, err = run_cli(capsys, "hold", "--all", "staging", "--as", "ann", "--reason", "freeze")
    assert code == 0, err
    wait_until(lambda: audited(env, "hold"), 10, "the hold recorded")
    d = digest_of("frozen")
    env.build("web", d)
    env.wait_pinned("web", "dev", d)
    explained = wait_until(
        lambda: (
            (e := json.loads(run_cli(capsys, "explain", "web", "staging", "--json")[1]))
            and e["next_digest"] == d
            and e
        ),
        10,
    )
    assert explained["state"] == "waiting"
    assert "held (every service) by ann" in explained["reasons"][0]
    run_cli(capsys, "release", "--all", "staging", "--as", "ann")
    env.build("web", d, env="dev", check="integration")
    env.wait_pinned("web", "staging", d)


def test_status_pending_says_what_waits_on_whom_and_audit_shows_dates_one_gate_per_line(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    from datetime import UTC, datetime

    d, number = to_staging(env, "pending")
    code, out, _ = run_cli(capsys, "status", "--pending", "--json")
    assert code == 0
    [waiting] = json.loads(out)
    assert (waiting["service"], waiting["env"], waiting["digest"]) == ("api", "prod", d)
    assert waiting["pull_request"] == number and waiting["state"] == "waiting"
    [approval] = waiting["unmet"]
    assert approval["gate"] == "approval" and approval["who"] == "approvers: bob, release-lead"
    code, out, _ = run_cli(capsys, "status", "--pending")
    assert out.splitlines()[0] == f"api -> prod {d[:19]} #{number}: waiting"
    assert "moved by approvers: bob, release-lead" in out

    run_cli(capsys, "hold", "api", "prod", "--as", "ann", "--reason", "freeze")
    wait_until(lambda: audited(env, "hold"), 10, "the hold recorded")
    pend = json.loads(run_cli(capsys, "status", "--pending", "--json")[1])
    assert [g["gate"] for g in pend[0]["unmet"]] == ["hold", "approval"]
    assert pend[0]["unmet"][0]["who"] == "anyone: ferry release api prod --as USER"
    wait_until(
        lambda: any(
            "; " in a["reason"] and a["subject"].endswith("-> prod") for a in env.entries("audit")
        ),
        10,
        "a decision about prod with two unmet gates",
    )
    code, out, _ = run_cli(capsys, "audit", "--service", "api", "--limit", "50")
    assert code == 0 and f"{datetime.now(UTC):%Y-%m-%d}" in out
    lines = out.splitlines()
    [held] = [
        i
        for i, line in enumerate(lines)
        if "waiting: held by ann" in line and "gates updated" in line
    ]
    assert lines[held + 1].lstrip().startswith("waiting: approvals 0/1")
    assert any(line.split()[3:6] == ["api", "in", "prod"] for line in lines)  # the hold

    run_cli(capsys, "release", "api", "prod", "--as", "ann")
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    env.wait_pinned("api", "prod", d)
    code, out, _ = run_cli(capsys, "status", "--pending")
    assert out.strip() == "nothing is open or waiting"
