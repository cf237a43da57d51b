"""Newer builds win: an older build never replaces a newer one, a newer candidate supersedes an
older one's pull request, and a merge that lost a race on the same line is redone from main."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

from ferry.adapters.git import git
from tests.helpers import Cluster, digest_of, pin_digest, wait_until

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_newer_build_supersedes_an_older_candidate(cluster: Cluster) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    old, new = digest_of("old"), digest_of("new")
    cluster.build("api", old, built_at=T0)
    cluster.build("api", new, built_at=T0 + timedelta(minutes=5))
    wait_until(lambda: len(cluster.entries("promotions")) == 3, 15, "open, open, close")
    assert [p["kind"] for p in cluster.entries("promotions")] == ["open", "open", "close"]
    cluster.start("pr-writer")
    cluster.wait_pinned("api", "dev", new)
    # The local forge moves main first, then records the merge on the PR.
    wait_until(
        lambda: [p.state for p in cluster.forge.list_prs()] == ["merged"], 10, "the merge recorded"
    )
    [pr] = cluster.forge.list_prs()
    assert new[:19] in pr.title
    # pr-writer skipped the older build's open; its audit record may come after the merge.
    wait_until(
        lambda: any(
            a["outcome"] == "skipped" and a["reason"] == f"superseded by {new}"
            for a in cluster.entries("audit")
        ),
        10,
        "the older promotion skipped as superseded",
    )
    assert cluster.dead_letters() == []


def test_older_build_never_replaces_a_newer_one(cluster: Cluster) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    old, new = digest_of("old"), digest_of("new")
    cluster.build("api", new, built_at=T0 + timedelta(minutes=5))
    cluster.wait_pinned("api", "dev", new)
    cluster.build("api", old, built_at=T0, event_id="late-old-build")
    audit = wait_until(
        lambda: [a for a in cluster.entries("audit") if a.get("caused_by") == "late-old-build"],
        10,
        "the late build's decision",
    )
    assert audit[0]["outcome"] == "skip"
    assert "is a newer build and already the candidate for dev" in audit[0]["reason"]
    assert cluster.repo.pinned("api", "dev") == new
    assert len(cluster.forge.list_prs()) == 1


def test_merge_that_conflicts_is_redone_from_the_new_main(cluster: Cluster) -> None:
    cluster.init_repo(["api"])
    cluster.start("gate-evaluator")
    doomed = cluster.start("pr-writer", FERRY_FAILPOINTS="pr-writer.after-open")
    d = digest_of("mine")
    cluster.build("api", d)
    doomed.wait(timeout=20)
    assert doomed.returncode == -signal.SIGKILL
    [pr] = cluster.forge.list_prs()
    assert pr.state == "open"

    # Meanwhile a person pins another digest on main by hand: the PR's line now conflicts.
    cluster.commit_by_hand(
        "pin by hand", lambda clone: pin_digest(clone, "dev", "api", digest_of("by-hand"))
    )

    writer = cluster.start("pr-writer")
    cluster.wait_pinned("api", "dev", d)
    assert "merge conflict; cutting the branch again from main" in cluster.log_of(writer)
    # The local forge moves main first, then records the merge on the PR.
    wait_until(
        lambda: [p.state for p in cluster.forge.list_prs()] == ["merged"], 10, "the merge recorded"
    )
    [pr] = cluster.forge.list_prs()
    assert pr.state == "merged"
    numstat = git(
        "diff", "--numstat", f"{pr.merge_commit}^1", pr.merge_commit, cwd=cluster.repo_path
    )
    assert numstat == "1\t1\tenvs/dev/api/values.yaml"
    assert cluster.dead_letters() == []
