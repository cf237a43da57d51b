"""A snapshot of main answers from one commit, even after main moves; reads are cached by
commit, so they can never be stale."""

from __future__ import annotations

import os
from pathlib import Path

from ferry.adapters.git import git
from ferry.adapters.gitops import GitOpsRepo
from ferry.adapters.scaffold import scaffold
from tests.helpers import commit_by_hand, digest_of, pin_digest


def pin_by_hand(repo: Path, clone: Path, digest: str) -> None:
    commit_by_hand(repo, clone, f"pin {digest[:19]}", lambda c: pin_digest(c, "dev", "api", digest))


def test_snapshot_keeps_its_commit_while_the_repo_follows_main(tmp_path: Path) -> None:
    scaffold(tmp_path / "gitops", ["api"])
    repo = GitOpsRepo(remote=str(tmp_path / "gitops"), workdir=tmp_path / "work")
    first, second = digest_of("1"), digest_of("2")
    pin_by_hand(tmp_path / "gitops", tmp_path / "clone", first)
    before = repo.at_main()
    assert before.pinned("api", "dev") == first
    pin_by_hand(tmp_path / "gitops", tmp_path / "clone", second)
    assert before.pinned("api", "dev") == first  # the same commit, the same answer
    assert repo.pinned("api", "dev") == second  # a new read follows main
    assert repo.at_main().commit != before.commit
    assert before.repository("api", "dev") == "registry.example.com/shop/api"
    assert before.values_exists("api", "dev") and not before.values_exists("web", "dev")


def test_main_is_read_right_whether_its_ref_is_loose_or_packed(tmp_path: Path) -> None:
    remote = tmp_path / "gitops"
    scaffold(remote, ["api"])
    repo = GitOpsRepo(remote=str(remote), workdir=tmp_path / "work")
    git("pack-refs", "--all", cwd=remote)
    assert not (remote / ".git" / "refs" / "heads" / "main").exists()
    assert repo.main_commit() == git("rev-parse", "main", cwd=remote)
    pin_by_hand(remote, tmp_path / "clone", digest_of("loose"))
    assert (remote / ".git" / "refs" / "heads" / "main").exists()
    assert repo.main_commit() == git("rev-parse", "main", cwd=remote)
    assert repo.pinned("api", "dev") == digest_of("loose")


def test_while_main_stays_one_snapshot_answers_and_a_move_is_seen_at_once(tmp_path: Path) -> None:
    """gate-evaluator asks for main twice per decision: while main's ref file is unchanged the
    same snapshot answers (with what it read so far); the first question after main moves gets
    the new commit, also when the ref is moved back to an older one with its times put back."""
    remote = tmp_path / "gitops"
    scaffold(remote, ["api"])
    repo = GitOpsRepo(remote=str(remote), workdir=tmp_path / "work")
    first, second = digest_of("1"), digest_of("2")
    pin_by_hand(remote, tmp_path / "clone", first)
    old = repo.at_main()
    assert old.pinned("api", "dev") == first
    assert repo.at_main() is old
    pin_by_hand(remote, tmp_path / "clone", second)
    new = repo.at_main()
    assert new is not old and new.pinned("api", "dev") == second
    assert repo.at_main() is new
    ref = remote / ".git" / "refs" / "heads" / "main"
    times = ref.stat()
    git("update-ref", "refs/heads/main", old.commit, cwd=remote)
    os.utime(ref, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert repo.at_main().commit == old.commit
    assert repo.pinned("api", "dev") == first
