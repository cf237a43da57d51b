"""The local forge against real git repositories (bare and non-bare) in tmp_path."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ferry.adapters.forge import (
    Forge,
    ForgeError,
    LocalForge,
    MergeConflict,
    PermanentForgeError,
    PullRequestNotFound,
    TransientForgeError,
    read_pulls,
)
from ferry.adapters.git import git

# ------------------------------------------------------------------ helpers


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def make_repo(tmp_path: Path, *, bare: bool = False) -> Path:
    """A GitOps repository with one commit on main, like `ferry init` makes (or a bare one)."""
    seed = tmp_path / ("seed" if bare else "gitops")
    git("init", "-q", "-b", "main", str(seed))
    _write(
        seed,
        {
            "README.md": "gitops\n",
            "envs/staging/api/values.yaml": "image:\n  digest: sha256:aaa\n",
        },
    )
    git("add", "-A", cwd=seed)
    git("commit", "-q", "-m", "initial", cwd=seed)
    if not bare:
        git("config", "receive.denyCurrentBranch", "updateInstead", cwd=seed)
        return seed
    repo = tmp_path / "gitops.git"
    git("clone", "-q", "--bare", str(seed), str(repo))
    return repo


def clone(repo: Path, dest: Path) -> Path:
    git("clone", "-q", str(repo), str(dest))
    return dest


def push_branch(
    client: Path,
    branch: str,
    files: dict[str, str],
    *,
    start: str = "origin/main",
    push: bool = True,
) -> str:
    """Cut BRANCH from START in the client, commit FILES, push it; return the tip sha."""
    git("fetch", "-q", "origin", cwd=client)
    git("checkout", "-q", "-B", branch, start, cwd=client)
    _write(client, files)
    git("add", "-A", cwd=client)
    git("commit", "-q", "-m", f"change on {branch}", cwd=client)
    if push:
        git("push", "-q", "origin", f"{branch}:refs/heads/{branch}", cwd=client)
    return git("rev-parse", "HEAD", cwd=client)


def main_sha(repo: Path) -> str:
    return git("rev-parse", "refs/heads/main", cwd=repo)


def show(repo: Path, rev: str, path: str) -> str:
    return git("show", f"{rev}:{path}", cwd=repo)


@pytest.fixture(params=["non-bare", "bare"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return make_repo(tmp_path, bare=request.param == "bare")


@pytest.fixture
def client(repo: Path, tmp_path: Path) -> Path:
    return clone(repo, tmp_path / "client")


# ------------------------------------------------------------------ opening and reading


def test_open_get_list_find(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    assert isinstance(forge, Forge)
    tip = push_branch(client, "promote/api-staging", {"envs/staging/api/values.yaml": "x: 1\n"})
    pr = forge.open_pr(
        head="promote/api-staging",
        title="Promote api",
        body="why",
        labels=["promotion", "promotion"],
        key="prom-1",
    )
    assert pr.number == 1
    assert pr.state == "open" and pr.base == "main" and pr.head_sha == tip
    assert pr.labels == ["promotion"]
    assert pr.url == f"file://{repo.resolve()}#pr-1"
    assert pr.merge_commit is None and pr.merged_at is None

    push_branch(client, "other", {"other.txt": "o\n"})
    pr2 = forge.open_pr(head="other", title="Other", body="")
    assert pr2.number == 2 and pr2.key is None

    assert forge.get_pr(1) == pr
    assert forge.find_pr("prom-1") == pr
    assert forge.find_pr("nope") is None
    assert [p.number for p in forge.list_prs()] == [2, 1]
    assert [p.number for p in forge.list_prs("open")] == [2, 1]
    assert forge.list_prs("merged") == []
    with pytest.raises(PullRequestNotFound):
        forge.get_pr(99)
    with pytest.raises(ValueError):
        forge.list_prs("bogus")

    # another instance (another process would do the same) reads the same records
    assert LocalForge(repo).get_pr(1) == pr
    # records are plain JSON readable without the class
    gitdir = Path(git("rev-parse", "--absolute-git-dir", cwd=repo))
    raw = json.loads((gitdir / "ferry" / "pulls" / "1.json").read_text())
    assert raw["key"] == "prom-1" and raw["head"] == "promote/api-staging"
    assert [p.number for p in read_pulls(gitdir)] == [2, 1]


def test_open_twice_with_same_key_returns_same_pr(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    push_branch(client, "b1", {"a.txt": "a\n"})
    first = forge.open_pr(head="b1", title="T", body="B", key="k")
    again = forge.open_pr(head="b1", title="Another title", body="other", labels=["x"], key="k")
    assert again == first
    assert len(forge.list_prs()) == 1
    # still returned unchanged once merged, even after the branch is gone
    forge.merge_pr(first.number)
    git("push", "-q", "origin", ":b1", cwd=client)
    merged = forge.open_pr(head="b1", title="T", body="B", key="k")
    assert merged.number == first.number and merged.state == "merged"
    assert len(forge.list_prs()) == 1


def test_open_refuses_missing_branch_and_duplicate_head(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    with pytest.raises(PermanentForgeError, match="branch 'ghost' does not exist in .*push it"):
        forge.open_pr(head="ghost", title="T", body="")
    assert forge.list_prs() == []
    push_branch(client, "b", {"a.txt": "a\n"})
    first = forge.open_pr(head="b", title="T", body="")
    with pytest.raises(PermanentForgeError, match="already open"):
        forge.open_pr(head="b", title="T", body="", key="different")
    # Once that PR is closed (or merged), the same branch may be proposed again.
    forge.close_pr(first.number)
    second = forge.open_pr(head="b", title="T again", body="", key="different")
    assert second.number != first.number and second.state == "open"
    with pytest.raises(PermanentForgeError, match=f"#{second.number} .* already open"):
        LocalForge(repo).open_pr(head="b", title="T", body="")


def test_missing_or_plain_directory_is_not_a_repo(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ForgeError) as info:
        LocalForge(missing)
    assert str(info.value) == (
        f"FERRY_GITOPS_REPO '{missing}' is not a git repository: run `ferry init {missing}` first"
    )
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ForgeError, match="is not a git repository"):
        LocalForge(plain)
    # a directory inside a repository is not the repository
    repo = make_repo(tmp_path)
    with pytest.raises(ForgeError, match="is not a git repository"):
        LocalForge(repo / "envs")


# ------------------------------------------------------------------ merging


def test_merge_makes_a_real_merge_commit(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    before = main_sha(repo)
    tip = push_branch(
        client,
        "promote/api",
        {
            "envs/staging/api/values.yaml": "image:\n  digest: sha256:bbb\n",
            "envs/staging/api/new.yaml": "n: 1\n",
        },
    )
    branch_diff = git("diff", before, tip, cwd=client)
    pr = forge.open_pr(head="promote/api", title="Promote", body="", key="p")

    merged = forge.merge_pr(pr.number)
    assert merged.state == "merged" and merged.merged_at is not None
    mc = merged.merge_commit
    assert mc is not None and main_sha(repo) == mc
    parents = git("rev-list", "--parents", "-n", "1", mc, cwd=repo).split()[1:]
    assert parents == [before, tip]
    assert git("log", "-1", "--format=%s", mc, cwd=repo) == "Merge pull request #1 from promote/api"
    assert git("diff", f"{mc}^1", mc, cwd=repo) == branch_diff
    assert show(repo, "main", "envs/staging/api/values.yaml") == "image:\n  digest: sha256:bbb"
    if (repo / ".git").is_dir():  # non-bare: the working tree follows main
        values = (repo / "envs/staging/api/values.yaml").read_text()
        assert values == "image:\n  digest: sha256:bbb\n"
        assert (repo / "envs/staging/api/new.yaml").read_text() == "n: 1\n"
        assert git("status", "--porcelain", cwd=repo) == ""
    # the head branch is left alone
    assert git("rev-parse", "refs/heads/promote/api", cwd=repo) == tip
    # made without a working tree of its own: no scratch clone, and git finds every object sound
    assert not (forge.state_dir / "merge-work").exists()
    git("fsck", "--strict", "--no-progress", cwd=repo)

    again = forge.merge_pr(pr.number)
    assert again == merged
    assert main_sha(repo) == mc
    assert forge.get_pr(pr.number).merge_commit == mc


def test_a_checkout_left_half_updated_by_a_killed_merge_is_finished_by_the_next(
    tmp_path: Path,
) -> None:
    # A merge into a checked-out main whose pusher was killed while the checkout was rewritten
    # (or raced by the next merge once the forge lock was free) left the index holding a merge
    # that never landed: with receive.denyCurrentBranch=updateInstead every later merge was
    # refused for good ("Working directory has staged changes").
    repo = make_repo(tmp_path)
    client = clone(repo, tmp_path / "client")
    forge = LocalForge(repo)
    lost = push_branch(client, "lost", {"envs/staging/api/values.yaml": "lost\n"})
    git("read-tree", "-u", "-m", "HEAD", lost, cwd=repo)  # the half-done rewrite
    assert git("status", "--porcelain", cwd=repo) == "M  envs/staging/api/values.yaml"

    push_branch(client, "next", {"envs/staging/web/values.yaml": "web\n"})
    pr = forge.open_pr(head="next", title="Next", body="")
    merged = forge.merge_pr(pr.number)
    assert merged.state == "merged" and main_sha(repo) == merged.merge_commit
    # The checkout is main again: the lost merge's change undone, the new one there.
    assert git("status", "--porcelain", cwd=repo) == ""
    assert (repo / "envs/staging/api/values.yaml").read_text() == "image:\n  digest: sha256:aaa\n"
    assert (repo / "envs/staging/web/values.yaml").read_text() == "web\n"
    # A person's uncommitted edit elsewhere in the checkout is kept through a merge.
    (repo / "README.md").write_text("my notes\n")
    push_branch(client, "third", {"envs/staging/api/values.yaml": "third\n"})
    third = forge.merge_pr(forge.open_pr(head="third", title="Third", body="").number)
    assert main_sha(repo) == third.merge_commit
    assert (repo / "README.md").read_text() == "my notes\n"
    assert (repo / "envs/staging/api/values.yaml").read_text() == "third\n"


def test_a_branch_cut_from_main_merges_to_its_own_tree_loose_or_packed(
    repo: Path, client: Path
) -> None:
    """A head made on main as it is merges to the head's own tree: read from its loose commit
    without git merging, or, once git packed it, merged by git: the same result either way."""
    forge = LocalForge(repo)
    loose = push_branch(client, "loose", {"envs/staging/api/values.yaml": "loose\n"})
    first = forge.merge_pr(forge.open_pr(head="loose", title="L", body="").number)
    assert git("rev-parse", f"{first.merge_commit}^{{tree}}", cwd=repo) == git(
        "rev-parse", f"{loose}^{{tree}}", cwd=repo
    )
    packed = push_branch(client, "packed", {"envs/staging/web/values.yaml": "packed\n"})
    git("repack", "-a", "-d", "-q", cwd=repo)
    git("prune-packed", cwd=repo)
    gitdir = Path(git("rev-parse", "--absolute-git-dir", cwd=repo))
    assert not (gitdir / "objects" / packed[:2] / packed[2:]).exists()
    second = forge.merge_pr(forge.open_pr(head="packed", title="P", body="").number)
    assert git("rev-parse", f"{second.merge_commit}^{{tree}}", cwd=repo) == git(
        "rev-parse", f"{packed}^{{tree}}", cwd=repo
    )
    assert git("rev-list", "--parents", "-n", "1", "main", cwd=repo).split()[1:] == [
        first.merge_commit,
        packed,
    ]
    assert show(repo, "main", "envs/staging/api/values.yaml") == "loose"
    assert show(repo, "main", "envs/staging/web/values.yaml") == "packed"
    git("fsck", "--strict", "--no-progress", cwd=repo)


def test_merge_with_a_custom_message(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    push_branch(client, "b", {"a.txt": "a\n"})
    pr = forge.open_pr(head="b", title="T", body="")
    merged = forge.merge_pr(pr.number, message="Promote api to staging")
    assert git("log", "-1", "--format=%s", merged.merge_commit or "", cwd=repo) == (
        "Promote api to staging"
    )


def test_merge_when_main_moved_since_the_branch_was_cut(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    tip = push_branch(client, "late", {"envs/staging/api/values.yaml": "late\n"})
    branch_diff = git("diff", "origin/main", tip, cwd=client)
    # main moves: someone pushes another change straight to main
    moved = push_branch(client, "main", {"README.md": "changed on main\n"}, push=False)
    git("push", "-q", "origin", "main", cwd=client)
    assert main_sha(repo) == moved

    pr = forge.open_pr(head="late", title="Late", body="")
    mc = forge.merge_pr(pr.number).merge_commit
    assert mc is not None and main_sha(repo) == mc
    assert git("rev-parse", f"{mc}^1", cwd=repo) == moved
    assert git("diff", f"{mc}^1", mc, cwd=repo) == branch_diff
    assert show(repo, "main", "README.md") == "changed on main"
    assert show(repo, "main", "envs/staging/api/values.yaml") == "late"


def _note_git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """Have every git that Ferry starts note its arguments in a log (the real git runs); return
    the log and the real git, for the test's own calls, which are not to be noted."""
    real = shutil.which("git")
    assert real is not None
    folder = tmp_path / "noting-bin"
    folder.mkdir()
    log = tmp_path / "git-calls.log"
    log.write_text("")
    wrapper = folder / "git"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log, real


def test_heads_cut_from_an_older_main_merge_in_process_as_git_merges_them(
    repo: Path, client: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas cut promotion branches from main as it is, and merge them while others merge
    theirs: a head whose changes touch other files than main's since its fork is merged by the
    forge itself, to the tree `git merge-tree` makes, without a git merge (or merge-base)
    process; the others (the same file changed on both sides) are merged by git, or refused as
    git refuses them. Random branches over a few files (seeded), so that each kind occurs."""
    rng = random.Random(7)
    paths = [f"envs/{e}/{s}/values.yaml" for e in ("dev", "prod") for s in "abcde"]
    paths += ["envs/staging/a/values.yaml", "apps/notes.txt", "apps/a/app.yaml"]
    push_branch(client, "main", {p: f"{p} at start\n" for p in paths}, push=False)
    git("push", "-q", "origin", "main", cwd=client)
    log, real = _note_git_calls(tmp_path, monkeypatch)
    forge = LocalForge(repo)

    def real_git(*args: str, cwd: Path = repo) -> subprocess.CompletedProcess[str]:
        return subprocess.run([real, *args], cwd=cwd, capture_output=True, text=True)

    def cut(i: int) -> tuple[int, str, set[str]]:
        changed = set(rng.sample(paths, rng.choice((1, 1, 2))))
        content = f"{rng.choice(('one', str(i)))}\n"  # sometimes two make the same change
        real_git("fetch", "-q", "origin", cwd=client)
        real_git("checkout", "-q", "-B", f"h{i}", "origin/main", cwd=client)
        _write(client, {p: content for p in changed})
        real_git("commit", "-q", "--allow-empty", "-am", f"h{i}", cwd=client)
        real_git("push", "-q", "origin", f"h{i}:refs/heads/h{i}", cwd=client)
        tip = real_git("rev-parse", "HEAD", cwd=client).stdout.strip()
        return forge.open_pr(head=f"h{i}", title=f"h{i}", body="").number, tip, changed

    kinds = {"in process": 0, "on main": 0, "by git": 0, "refused": 0}
    pending = [cut(i) for i in range(4)]
    for i in range(4, 28):
        if i == 12:  # a person's edit straight on main, to a file no branch touches
            real_git("fetch", "-q", "origin", cwd=client)
            real_git("checkout", "-q", "-B", "main", "origin/main", cwd=client)
            _write(client, {"README.md": "a person's notes\n"})
            real_git("commit", "-q", "-am", "notes", cwd=client)
            real_git("push", "-q", "origin", "main", cwd=client)
            if (repo / ".git").is_dir():
                real_git("reset", "-q", "--hard")  # its checkout follows
        number, tip, changed = pending.pop(0 if rng.random() < 0.8 else -1)
        before = main_sha(repo)
        fork = real_git("rev-parse", f"{tip}^").stdout.strip()
        on_main = set(real_git("diff", "--name-only", fork, before).stdout.split())
        expected = real_git("merge-tree", "--write-tree", "--name-only", before, tip)
        log.write_text("")
        if expected.returncode == 1:  # git finds a conflict
            with pytest.raises(MergeConflict):
                forge.merge_pr(number)
            assert main_sha(repo) == before
            kinds["refused"] += 1
        else:
            merged = forge.merge_pr(number).merge_commit
            assert merged == main_sha(repo)
            parents = real_git("rev-list", "--parents", "-n", "1", merged).stdout.split()[1:]
            assert parents == [before, tip]
            tree = real_git("rev-parse", f"{merged}^{{tree}}").stdout.strip()
            assert tree == expected.stdout.split()[0]
            calls = log.read_text()
            if changed & on_main:
                kinds["by git"] += 1
            else:
                assert "merge-tree" not in calls and "merge-base" not in calls, calls
                kinds["in process" if fork != before else "on main"] += 1
        pending.append(cut(i))
    assert kinds == {"in process": 16, "on main": 3, "by git": 3, "refused": 2}  # seeded
    assert show(repo, "main", "README.md") == "a person's notes"
    assert real_git("fsck", "--strict", "--no-progress").returncode == 0


def test_a_head_merged_by_a_person_is_found_merged_not_merged_again(
    repo: Path, client: Path
) -> None:
    """A head cut from an older main that a person merged (or fast-forwarded main to) since:
    the forge finds that merge instead of making an empty one."""
    forge = LocalForge(repo)
    push_branch(client, "other", {"other.txt": "o\n"})
    tip = push_branch(client, "p", {"envs/staging/api/values.yaml": "p\n"})
    other = forge.merge_pr(forge.open_pr(head="other", title="o", body="").number)
    git("fetch", "-q", "origin", cwd=client)
    git("checkout", "-q", "-B", "main", "origin/main", cwd=client)
    git("merge", "-q", "--no-ff", "-m", "merged by hand", "origin/p", cwd=client)
    git("push", "-q", "origin", "main", cwd=client)
    by_hand = main_sha(repo)
    assert git("rev-parse", f"{by_hand}^1", cwd=repo) == other.merge_commit
    merged = forge.merge_pr(forge.open_pr(head="p", title="p", body="").number)
    assert merged.merge_commit == by_hand and main_sha(repo) == by_hand
    assert merged.head_sha == tip
    # main fast-forwarded to a head by hand: that head is main's own commit
    ahead = push_branch(client, "q", {"envs/staging/api/values.yaml": "q\n"})
    git("push", "-q", "origin", "q:main", cwd=client)
    assert main_sha(repo) == ahead
    with pytest.raises(PermanentForgeError, match="already contained"):
        forge.merge_pr(forge.open_pr(head="q", title="q", body="").number)
    assert main_sha(repo) == ahead


def test_merge_is_retried_when_main_moves_during_the_merge(
    repo: Path, client: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forge = LocalForge(repo)
    push_branch(client, "b", {"b.txt": "b\n"})
    pr = forge.open_pr(head="b", title="T", body="")
    other = clone(repo, tmp_path / "other")
    original = LocalForge._push_base
    calls: list[str] = []

    def racing_push(self: LocalForge, work: Path, base: str, base_sha: str, merge_sha: str) -> None:
        calls.append(base_sha)
        if len(calls) == 1:  # another writer updates main between our fetch and our push
            push_branch(other, "main", {"racer.txt": "r\n"}, push=False)
            git("push", "-q", "origin", "main", cwd=other)
        original(self, work, base, base_sha, merge_sha)

    monkeypatch.setattr(LocalForge, "_push_base", racing_push)
    merged = forge.merge_pr(pr.number)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert main_sha(repo) == merged.merge_commit
    assert show(repo, "main", "racer.txt") == "r"
    assert show(repo, "main", "b.txt") == "b"


def test_conflicting_branch_raises_and_leaves_main_unchanged(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    push_branch(client, "one", {"README.md": "one\n"})
    push_branch(client, "two", {"README.md": "two\n"})
    first = forge.open_pr(head="one", title="1", body="")
    second = forge.open_pr(head="two", title="2", body="")
    forge.merge_pr(first.number)
    before = main_sha(repo)

    with pytest.raises(MergeConflict, match="README.md"):
        forge.merge_pr(second.number)
    assert main_sha(repo) == before
    assert forge.get_pr(second.number).state == "open"
    if (repo / ".git").is_dir():
        assert (repo / "README.md").read_text() == "one\n"
        assert git("status", "--porcelain", cwd=repo) == ""

    # the forge's scratch clone recovers: a clean PR still merges
    push_branch(client, "three", {"three.txt": "3\n"})
    third = forge.open_pr(head="three", title="3", body="")
    assert forge.merge_pr(third.number).merge_commit == main_sha(repo)


def test_closed_and_merged_states(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    push_branch(client, "a", {"a.txt": "a\n"})
    push_branch(client, "b", {"b.txt": "b\n"})
    a = forge.open_pr(head="a", title="A", body="")
    b = forge.open_pr(head="b", title="B", body="")

    closed = forge.close_pr(a.number, comment="superseded by #2")
    assert closed.state == "closed" and closed.closed_at is not None
    assert [c.body for c in closed.comments] == ["superseded by #2"]
    assert forge.close_pr(a.number, comment="superseded by #2") == closed  # no second comment
    with pytest.raises(ForgeError, match="closed"):
        forge.merge_pr(a.number)

    forge.merge_pr(b.number)
    with pytest.raises(ForgeError, match="merged"):
        forge.close_pr(b.number)
    with pytest.raises(PullRequestNotFound):
        forge.close_pr(42)
    assert [p.number for p in forge.list_prs("closed")] == [a.number]
    assert [p.number for p in forge.list_prs("merged")] == [b.number]


def test_comments_labels_statuses_round_trip(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    push_branch(client, "b", {"b.txt": "b\n"})
    pr = forge.open_pr(head="b", title="T", body="", labels=["promotion"])

    forge.comment(pr.number, "gates pending: approval")
    forge.comment(pr.number, "lgtm", author="alice")
    forge.add_labels(pr.number, ["gated", "promotion", "env/staging"])
    forge.remove_label(pr.number, "gated")
    forge.remove_label(pr.number, "absent")
    forge.set_status(pr.number, "ferry/gates", "pending", "approval missing")
    forge.set_status(pr.number, "ci", "success")
    last = forge.set_status(pr.number, "ferry/gates", "success", "all gates pass")
    with pytest.raises(ValueError):
        forge.set_status(pr.number, "ci", "maybe")

    got = LocalForge(repo).get_pr(pr.number)
    assert got == last
    assert [(c.author, c.body) for c in got.comments] == [
        ("ferry", "gates pending: approval"),
        ("alice", "lgtm"),
    ]
    assert got.labels == ["promotion", "env/staging"]
    assert got.statuses == {"ferry/gates": "success", "ci": "success"}
    assert got.status_descriptions["ferry/gates"] == "all gates pass"
    assert got.updated_at >= got.created_at


def test_update_body_writes_only_a_changed_description(repo: Path, client: Path) -> None:
    forge = LocalForge(repo)
    push_branch(client, "b", {"b.txt": "b\n"})
    pr = forge.open_pr(head="b", title="T", body="gates: waiting")

    changed = forge.update_body(pr.number, "gates: passed")
    same = forge.update_body(pr.number, "gates: passed")

    assert LocalForge(repo).get_pr(pr.number).body == "gates: passed"
    assert changed.updated_at > pr.updated_at
    assert same.updated_at == changed.updated_at


# ------------------------------------------------------------------ several processes at once

_WORKER = r"""
import json, sys, time
from pathlib import Path
from ferry.adapters.forge import LocalForge

repo, mode, prefix, count, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
forge = LocalForge(repo)
while not Path(go).exists():
    time.sleep(0.002)
out = []
for i in range(count):
    pr = forge.open_pr(head=f"{prefix}-{i}", title=f"{prefix} {i}", body="", key=f"{prefix}-{i}")
    if mode == "merge":
        pr = forge.merge_pr(pr.number)
    out.append([pr.number, pr.merge_commit])
print(json.dumps(out))
"""


def _run_workers(repo: Path, tmp_path: Path, jobs: list[tuple[str, str, int]]) -> list[list]:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(repo), mode, prefix, str(count), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for mode, prefix, count in jobs
    ]
    time.sleep(0.5)  # let both import ferry, then start them together
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=110)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def _push_many(client: Path, branches: dict[str, dict[str, str]]) -> None:
    for branch, files in branches.items():
        push_branch(client, branch, files, push=False)
    git("push", "-q", "origin", *[f"{b}:refs/heads/{b}" for b in branches], cwd=client)


@pytest.mark.slow
def test_two_processes_open_and_merge_25_prs_each(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    client = clone(repo, tmp_path / "client")
    branches = {
        f"{who}-{i}": {f"changes/{who}/{i}.txt": f"{who} {i}\n"}
        for who in ("p", "q")
        for i in range(25)
    }
    _push_many(client, branches)
    start = main_sha(repo)

    results = _run_workers(repo, tmp_path, [("merge", "p", 25), ("merge", "q", 25)])

    numbers = [n for result in results for n, _ in result]
    merges = [m for result in results for _, m in result]
    assert sorted(numbers) == list(range(1, 51))
    # the two processes really took turns (neither starved until the other had finished)
    assert {n for n, _ in results[0]} not in ({*range(1, 26)}, {*range(26, 51)})
    assert len(set(merges)) == 50 and all(merges)
    forge = LocalForge(repo)
    assert len(forge.list_prs("merged")) == 50
    # no lost update: every change is on main, through exactly 50 merge commits
    tree = git("ls-tree", "-r", "--name-only", "main", "changes", cwd=repo).splitlines()
    assert sorted(tree) == sorted(f"changes/{who}/{i}.txt" for who in "pq" for i in range(25))
    merge_commits = git("rev-list", "--merges", f"{start}..main", cwd=repo).splitlines()
    assert sorted(merge_commits) == sorted(merges)
    assert git("status", "--porcelain", cwd=repo) == ""


@pytest.mark.slow
def test_two_processes_racing_on_the_same_keys_open_one_pr_per_key(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, bare=True)
    client = clone(repo, tmp_path / "client")
    _push_many(client, {f"k-{i}": {f"k/{i}.txt": f"{i}\n"} for i in range(20)})

    first, second = _run_workers(repo, tmp_path, [("open", "k", 20), ("open", "k", 20)])

    assert first == second  # both processes got the same PR for each key
    forge = LocalForge(repo)
    prs = forge.list_prs()
    assert len(prs) == 20
    assert sorted(p.key or "" for p in prs) == sorted(f"k-{i}" for i in range(20))
    assert sorted(p.number for p in prs) == list(range(1, 21))


# The flock system call's number, where this test knows it.
_FLOCK_SYSCALL = {"x86_64": 73, "aarch64": 32}.get(platform.machine())


def _threads_in_flock() -> int:
    """How many threads of this process are blocked in the flock system call now."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            call = (task / "syscall").read_text().split()
        except OSError:
            continue
        count += bool(call) and call[0] == str(_FLOCK_SYSCALL)
    return count


@pytest.mark.skipif(_FLOCK_SYSCALL is None, reason="flock's system call number unknown here")
def test_a_writer_waits_for_the_forge_lock_in_the_kernel_not_by_polling(tmp_path: Path) -> None:
    """A writer that finds forge.lock taken sleeps in flock until the holder lets go (woken
    then, where a poll left the lock idle a few ms at each hand-over between replicas); one that
    waited longer than its timeout gives up, and the lock it would have taken later is let go."""
    repo = make_repo(tmp_path, bare=True)
    client = clone(repo, tmp_path / "client")
    push_branch(client, "b", {"b.txt": "b\n"})
    forge = LocalForge(repo)
    pr = forge.open_pr(head="b", title="t", body="")
    holder = os.open(forge.state_dir / "forge.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process's merge, as far as the forge can tell
    try:
        with ThreadPoolExecutor(1) as pool:
            commented = pool.submit(forge.comment, pr.number, "waited")
            seen = 0
            deadline = time.monotonic() + 20
            try:
                while seen < 5 and time.monotonic() < deadline:  # asleep in flock, and stays so
                    seen = seen + 1 if _threads_in_flock() == 1 else 0
                    time.sleep(0.05)
                assert seen == 5, "no thread sleeps in flock while the lock is taken"
                assert not commented.done()
                assert len(list(forge.waiting_dir.iterdir())) == 1
            finally:
                fcntl.flock(holder, fcntl.LOCK_UN)
            assert commented.result(timeout=20).comments[-1].body == "waited"
        assert list(forge.waiting_dir.iterdir()) == []
        fcntl.flock(holder, fcntl.LOCK_EX)
        impatient = LocalForge(repo, lock_timeout=0.3)
        with pytest.raises(TransientForgeError, match="stayed locked"):
            impatient.comment(pr.number, "never")
    finally:
        os.close(holder)
    # the waiter given up on lets go of the lock it took once the holder had
    assert LocalForge(repo, lock_timeout=20).comment(pr.number, "later").comments[-1].body == (
        "later"
    )
    assert [c.body for c in forge.get_pr(pr.number).comments] == ["waited", "later"]


_UNDER_STRACE = """
import sys
from ferry.adapters.forge import LocalForge
forge = LocalForge(sys.argv[1])
forge.merge_pr(forge.open_pr(head="b", title="t", body="", key="k").number)
"""


def _fsyncs_by_lock_hold(log: str) -> tuple[list[int], int]:
    """From an strace log of one process (flock, fsync and close calls): the number of fsyncs
    made during each hold of a lock taken by flock(LOCK_EX|LOCK_NB), and of those made outside
    any hold. Only the first process's lines count (git's are its children's)."""
    lines = [line.split(None, 1) for line in log.splitlines() if line.strip()]
    pid = lines[0][0]
    holds: list[int] = []
    outside = 0
    held: str | None = None
    for who, call in lines:
        if who != pid:
            continue
        taken = call.startswith("flock(") and "LOCK_EX|LOCK_NB" in call
        if taken and call.rstrip().endswith("= 0"):
            held = call[len("flock(") :].split(",", 1)[0]
            holds.append(0)
        elif held is not None and call.startswith(f"close({held})"):
            held = None
        elif call.startswith("fsync("):
            if held is None:
                outside += 1
            else:
                holds[-1] += 1
    return holds, outside


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_the_forge_lock_is_not_held_while_names_are_made_durable(tmp_path: Path) -> None:
    """What every replica waits for is what runs under forge.lock, and fsync is most of it on a
    busy disk. Under the lock: the number's counter and the key's index, each durable (content
    and name) before the record that depends on them, and the record's content; the record's new
    name is made durable once the lock is let go, and the advisory head index not at all. So an
    open takes 5 fsyncs under the lock (it took 8), a merge 1 (it took 2)."""
    repo = make_repo(tmp_path, bare=True)
    client = clone(repo, tmp_path / "client")
    push_branch(client, "b", {"b.txt": "b\n"})
    log = tmp_path / "strace.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=flock,fsync,close", "-o", str(log)]
        + [sys.executable, "-c", _UNDER_STRACE, str(repo)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace may not trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    holds, outside = _fsyncs_by_lock_hold(log.read_text())
    assert holds == [5, 1]  # open, merge
    assert outside >= 2  # the records' folder, after each
    assert LocalForge(repo).find_pr("k").state == "merged"  # type: ignore[union-attr]


def test_threads_sharing_one_forge(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    client = clone(repo, tmp_path / "client")
    _push_many(client, {f"t-{i}": {f"t/{i}.txt": f"{i}\n"} for i in range(12)})
    forge = LocalForge(repo)

    def work(i: int) -> tuple[int, str | None]:
        pr = forge.open_pr(head=f"t-{i}", title="t", body="", key=f"t-{i % 6}-{i}")
        return pr.number, forge.merge_pr(pr.number).merge_commit

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(12)))
    assert sorted(n for n, _ in results) == list(range(1, 13))
    assert len({m for _, m in results}) == 12
    assert len(git("ls-tree", "-r", "--name-only", "main", "t", cwd=repo).splitlines()) == 12
