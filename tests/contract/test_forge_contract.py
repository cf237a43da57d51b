"""One contract for every forge provider: local, and github, gitea and gitlab against the fake
forge (real HTTP, real git over HTTP with the token, real Redis for the budget and key index)."""

from __future__ import annotations

import pytest

from ferry.adapters.forge import Forge, MergeConflict, PermanentForgeError, PullRequestNotFound
from ferry.adapters.forge.base import HeadMoved
from ferry.adapters.git import git
from tests.contract.conftest import Under


def test_every_provider_is_a_forge(under: Under) -> None:
    assert isinstance(under.forge, Forge)


def test_open_is_idempotent_by_key_and_by_head(under: Under) -> None:
    sha = under.branch("ferry/staging/api/one", "one\n")
    pr = under.open("ferry/staging/api/one", key="k1", labels=["ferry", "env/staging"])
    assert (pr.state, pr.head, pr.head_sha, pr.key) == ("open", "ferry/staging/api/one", sha, "k1")
    assert pr.body == "the body"
    assert sorted(pr.labels) == ["env/staging", "ferry"]
    again = under.open("ferry/staging/api/one", key="k1")
    assert again.number == pr.number
    assert under.forge.find_pr("k1").number == pr.number
    assert under.forge.find_pr("no-such-key") is None
    assert [p.number for p in under.forge.list_prs()] == [pr.number]


def test_open_reuses_the_open_pr_of_a_head_on_http_forges(under: Under) -> None:
    if under.fake is None:
        pytest.skip("the local forge refuses a second PR for an open head instead")
    under.branch("feature", "x\n")
    first = under.open("feature")
    assert under.open("feature", key="later").number == first.number


def test_get_missing_pr_raises_not_found(under: Under) -> None:
    with pytest.raises(PullRequestNotFound):
        under.forge.get_pr(999)


def test_list_is_newest_first_across_pages_and_filters_state(under: Under) -> None:
    if under.fake is not None:
        under.fake.max_page = 2  # five PRs take three pages
    numbers = []
    for i in range(5):
        under.branch(f"b{i}", f"{i}\n", path=f"f{i}.txt")
        numbers.append(under.open(f"b{i}").number)
    under.forge.close_pr(numbers[0])
    under.forge.merge_pr(numbers[1])
    assert [p.number for p in under.forge.list_prs()] == sorted(numbers, reverse=True)
    assert [p.number for p in under.forge.list_prs("open")] == sorted(numbers[2:], reverse=True)
    assert [p.number for p in under.forge.list_prs("merged")] == [numbers[1]]
    assert [p.number for p in under.forge.list_prs("closed")] == [numbers[0]]


def test_comment_labels_body_and_status(under: Under) -> None:
    under.branch("b", "b\n")
    pr = under.open("b", key="kb", labels=["ferry"])
    under.forge.comment(pr.number, "looks right")
    under.forge.add_labels(pr.number, ["ferry", "preview"])
    under.forge.remove_label(pr.number, "ferry")
    under.forge.remove_label(pr.number, "never-there")
    under.forge.update_body(pr.number, "new body")
    under.forge.set_status(pr.number, "ferry/gates", "pending", "approvals 0/1")
    under.forge.set_status(pr.number, "ferry/gates", "success", "all gates passed")
    got = under.forge.get_pr(pr.number)
    assert [c.body for c in got.comments] == ["looks right"]
    assert got.labels == ["preview"]
    assert got.body == "new body" and got.key == "kb"  # the key survives a new body
    assert got.statuses == {"ferry/gates": "success"}
    assert got.status_descriptions == {"ferry/gates": "all gates passed"}


def test_merge_only_the_evaluated_head_and_merge_twice_is_a_no_op(under: Under) -> None:
    first = under.branch("m", "first\n")
    pr = under.open("m")
    second = under.branch("m", "second\n")
    with pytest.raises(HeadMoved):
        under.forge.merge_pr(pr.number, sha=first)
    merged = under.forge.merge_pr(pr.number, sha=second, message="Promote m\n\nFerry-Digest: x")
    assert merged.state == "merged" and merged.merge_commit
    assert under.forge.merge_pr(pr.number).merge_commit == merged.merge_commit
    with pytest.raises(PermanentForgeError):
        under.forge.close_pr(pr.number)
    git("fetch", "-q", "origin", cwd=under.clone)
    assert git("show", "origin/main:notes.txt", cwd=under.clone) == "second"
    assert "Ferry-Digest: x" in git("log", "-1", "--format=%B", "origin/main", cwd=under.clone)


def test_conflict_raises_merge_conflict(under: Under) -> None:
    under.branch("c1", "one\n")
    under.branch("c2", "two\n")
    a, b = under.open("c1"), under.open("c2")
    under.forge.merge_pr(a.number)
    with pytest.raises(MergeConflict):
        under.forge.merge_pr(b.number)


def test_close_with_comment_once(under: Under) -> None:
    under.branch("x", "x\n")
    pr = under.open("x")
    closed = under.forge.close_pr(pr.number, comment="superseded by sha256:new")
    assert closed.state == "closed"
    assert under.forge.close_pr(pr.number, comment="superseded by sha256:new").state == "closed"
    assert [c.body for c in under.forge.get_pr(pr.number).comments] == ["superseded by sha256:new"]
    with pytest.raises(PermanentForgeError):
        under.forge.merge_pr(pr.number)


def test_reviews_map_to_ferry_words(under: Under) -> None:
    under.branch("r", "r\n")
    pr = under.open("r")
    if under.fake is None:
        assert under.forge.reviews(pr.number) == []
        return
    under.fake.add_review(pr.number, "release-lead", "approved")
    under.fake.add_review(pr.number, "sre-oncall-1", "changes_requested")
    words = [(r.author, r.state) for r in under.forge.reviews(pr.number)]
    if under.fake.flavour == "gitlab":  # GitLab reports approvals only
        assert words == [("release-lead", "approved")]
    else:
        assert words == [("release-lead", "approved"), ("sre-oncall-1", "changes_requested")]
