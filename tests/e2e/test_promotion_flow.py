"""A green build reaches dev, then staging, each by a merged one-line pull request."""

from __future__ import annotations

from ferry.adapters.git import git
from ferry.core.events import CiResult
from tests.helpers import Cluster, digest_of, wait_until


def merged_numstat(repo_path, merge_commit: str) -> list[str]:  # noqa: ANN001
    return git("diff", "--numstat", f"{merge_commit}^1", merge_commit, cwd=repo_path).splitlines()


def test_green_build_reaches_dev_then_green_dev_ci_reaches_staging(cluster: Cluster) -> None:
    cluster.init_repo(["api", "web"])
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    d = digest_of("api-1")

    cluster.build("api", d, commit="abc123", author="alice")
    cluster.wait_pinned("api", "dev", d, timeout=20)
    merged = wait_until(lambda: cluster.changes("pr_merged"), 10, "pr_merged change")
    assert merged[0]["env"] == "dev" and merged[0]["digest"] == d
    assert merged_numstat(cluster.repo_path, merged[0]["merge_commit"]) == [
        "1\t1\tenvs/dev/api/values.yaml"
    ]
    [pr] = cluster.forge.list_prs()
    assert pr.state == "merged" and pr.merge_commit == merged[0]["merge_commit"]
    for needle in ("api", d, "build", "dev", "abc123"):
        assert needle in pr.body
    assert cluster.repo.pinned("api", "staging") in (None, "")

    cluster.build("api", d, env="dev", check="integration")
    cluster.wait_pinned("api", "staging", d, timeout=20)
    # prod's promotion (behind an approval) may already be open: Ferry opens it early.
    # Main moves before the local forge records the PR merged: wait for the record too.
    prs = wait_until(
        lambda: (
            [p for p in cluster.forge.list_prs() if "to prod" not in p.title]
            if len(cluster.changes("pr_merged")) == 2
            else None
        ),
        10,
        "staging's pr_merged change",
    )
    assert [p.state for p in prs] == ["merged", "merged"]
    staging = next(p for p in prs if "staging" in p.title)
    assert merged_numstat(cluster.repo_path, staging.merge_commit) == [
        "1\t1\tenvs/staging/api/values.yaml"
    ]
    # Only the values file moved; web and prod untouched.
    assert cluster.repo.pinned("web", "dev") in (None, "")
    assert cluster.repo.pinned("api", "prod") in (None, "")


def test_failed_build_or_failed_ci_promotes_nothing(cluster: Cluster) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    good, bad = digest_of("good"), digest_of("bad")
    cluster.build("api", bad, status="failure")
    cluster.build("api", good)
    cluster.wait_pinned("api", "dev", good)
    cluster.build("api", good, env="dev", status="failure", check="integration")
    marker = cluster.build("web-unknown-marker", digest_of("x"))  # a later event, to know when done
    wait_until(
        lambda: any(d["entry_id"] == marker for d in cluster.dead_letters()),
        15,
        "the marker to be processed",
    )
    audits = cluster.entries("audit")
    assert any(a["outcome"] == "refused" and "CI failed (build)" in a["reason"] for a in audits)
    assert any(a["outcome"] == "refused" and "CI failed in dev" in a["reason"] for a in audits)
    assert [p.title for p in cluster.forge.list_prs()] == [f"Promote api to dev: {good[:19]}"]
    assert cluster.repo.pinned("api", "staging") in (None, "")


def test_event_for_another_image_is_refused(cluster: Cluster) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    d = digest_of("other")
    entry = cluster.build("api", d, image="registry.example.com/other/thing")
    [letter] = wait_until(cluster.dead_letters, 15, "a dead letter")
    assert letter["entry_id"] == entry
    assert "registry.example.com/other/thing" in letter["error"]
    assert "a digest means nothing without its repository" in letter["error"]
    # Without image, the repository comes from the values file and the build goes through.
    cluster.start("pr-writer")
    cluster.bus.publish(CiResult(service="api", digest=d))
    cluster.wait_pinned("api", "dev", d)


def test_every_log_line_about_an_event_carries_its_ids(cluster: Cluster) -> None:
    import json

    cluster.init_repo(["api"])
    gate = cluster.start("gate-evaluator")
    writer = cluster.start("pr-writer")
    d = digest_of("logs")
    cluster.build("api", d, event_id="build-77")
    cluster.wait_pinned("api", "dev", d)
    wait_until(lambda: cluster.changes("pr_merged"), 10, "pr_merged")
    for proc in (gate, writer):
        lines = [json.loads(line) for line in cluster.log_of(proc).splitlines() if line]
        decisions = [line for line in lines if line.get("event") == "decision"]
        assert decisions, cluster.log_of(proc)
        for line in decisions:
            assert line["event_id"] and line["entry_id"] and line["promotion_id"].startswith("p-")
    gate_lines = [json.loads(x) for x in cluster.log_of(gate).splitlines() if x]
    assert any(line.get("event_id") == "build-77" for line in gate_lines)
