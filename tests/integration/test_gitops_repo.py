"""GitOpsRepo against real git repositories in tmp_path (bare and non-bare remotes)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ferry.adapters.forge.local import LocalForge
from ferry.adapters.git import git, git_bytes, write_object
from ferry.adapters.gitops import GitOpsRepo, PromotionError
from ferry.core.policy import PolicyError
from ferry.core.values import ValuesError

OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64
NEWER = "sha256:" + "3" * 64

POLICY = """\
# the policy
environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, gates: {ci: {}}, auto_merge: true}
  prod: {promote_from: staging}
"""

VALUES = """\
# api in {env}
image:
  repository: registry.example.com/shop/api   # same everywhere
  digest: "{digest}"   # the only line ferry writes
replicas: 2   # ferry never touches this
"""


def commit_files(repo: Path, files: dict[str, str], message: str = "change") -> str:
    for relpath, content in files.items():
        target = repo / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode())
    git("add", "-A", cwd=repo)
    git("-c", "commit.gpgsign=false", "commit", "-q", "-m", message, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


def make_source(path: Path) -> Path:
    git("init", "-q", "-b", "main", str(path))
    commit_files(
        path,
        {
            "ferry.yaml": POLICY,
            "envs/dev/api/values.yaml": VALUES.format(env="dev", digest=OLD),
            "envs/staging/api/values.yaml": VALUES.format(env="staging", digest=""),
            "envs/prod/web/values.yaml": VALUES.format(env="prod", digest=OLD).replace(
                "/api", "/web"
            ),
            "envs/qa/ghost/values.yaml": "image: {digest: x}\n",  # qa is not in the policy
            "README.md": "hi\n",
        },
        "initial",
    )
    return path


@pytest.fixture(params=["bare", "non-bare"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    source = make_source(tmp_path / "source")
    if request.param == "non-bare":
        git("config", "receive.denyCurrentBranch", "updateInstead", cwd=source)
        return source
    bare = tmp_path / "remote.git"
    git("clone", "-q", "--bare", str(source), str(bare))
    return bare


@pytest.fixture
def editor(remote: Path, tmp_path: Path) -> Path:
    """A person's clone of the remote, to change main the way people do."""
    clone = tmp_path / "person"
    git("clone", "-q", str(remote), str(clone))
    return clone


def push_main(editor: Path, files: dict[str, str]) -> str:
    git("pull", "-q", "--ff-only", cwd=editor)
    sha = commit_files(editor, files)
    git("push", "-q", "origin", "HEAD:main", cwd=editor)
    return sha


def test_reads_main(remote: Path, tmp_path: Path) -> None:
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    assert repo.main_commit() == git(
        "--git-dir",
        str(remote if remote.suffix == ".git" else remote / ".git"),
        "rev-parse",
        "main",
    )
    assert repo.read_main("README.md") == "hi\n"
    assert repo.read_main("nope.txt") is None
    assert repo.read_main("envs") is None  # a directory is not a file
    assert repo.pinned("api", "dev") == OLD
    assert repo.pinned("api", "staging") is None  # "" means nothing promoted yet
    assert repo.pinned("api", "prod") is None  # no values file
    assert repo.repository("api", "dev") == "registry.example.com/shop/api"
    assert repo.values_exists("api", "dev") and not repo.values_exists("api", "prod")
    assert repo.services() == ["api", "web"]
    assert repo.policy().env_names() == ["dev", "staging", "prod"]
    with pytest.raises(PolicyError, match="unknown environment 'qa'"):
        repo.pinned("api", "qa")
    with pytest.raises(PolicyError, match="DNS label"):
        repo.pinned("../x", "dev")


def test_local_reads_need_no_clone(remote: Path, tmp_path: Path) -> None:
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    repo.pinned("api", "dev")
    repo.services()
    assert not (tmp_path / "work").exists()


def test_read_main_is_byte_exact(remote: Path, editor: Path, tmp_path: Path) -> None:
    content = "a: 1\r\nb: 2\r\n\n\n"
    push_main(editor, {"crlf.yaml": content})
    assert GitOpsRepo(str(remote), tmp_path / "work").read_main("crlf.yaml") == content


def test_prepare_promotion_changes_exactly_one_line(remote: Path, tmp_path: Path) -> None:
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    main_before = repo.main_commit()
    sha = repo.prepare_promotion(
        branch="ferry/api/staging",
        service="api",
        env="staging",
        digest=NEW,
        message="Promote api to staging",
    )
    assert sha is not None
    gitdir = str(remote) if remote.suffix == ".git" else str(remote / ".git")
    assert git("--git-dir", gitdir, "rev-parse", "refs/heads/ferry/api/staging") == sha
    assert git("--git-dir", gitdir, "rev-parse", f"{sha}^") == main_before
    assert repo.main_commit() == main_before  # main itself is untouched
    diff = git("--git-dir", gitdir, "diff", "-U0", "main", sha)
    changed = [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == [
        '-  digest: ""   # the only line ferry writes',
        f'+  digest: "{NEW}"   # the only line ferry writes',
    ]
    assert git("--git-dir", gitdir, "diff", "--name-only", "main", sha) == (
        "envs/staging/api/values.yaml"
    )
    assert git("--git-dir", gitdir, "log", "-1", "--format=%s", sha) == "Promote api to staging"
    if remote.suffix != ".git":  # a non-bare remote's checkout is never touched
        assert git("status", "--porcelain", cwd=remote) == ""
        assert git("branch", "--show-current", cwd=remote) == "main"


def test_promotion_commit_keeps_every_other_byte(
    remote: Path, editor: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit is built without a working tree: the values file's other bytes (CRLF line
    ends, no final newline, trailing spaces), its mode and every other file stay as they were."""
    # Ferry's own identity, as on a machine without GIT_AUTHOR_*/GIT_COMMITTER_* (CI sets them).
    for role in ("AUTHOR", "COMMITTER"):
        for part in ("NAME", "EMAIL"):
            monkeypatch.delenv(f"GIT_{role}_{part}", raising=False)
    crlf = VALUES.format(env="staging", digest="").replace("\n", "\r\n").rstrip("\r\n") + "  "
    push_main(editor, {"envs/staging/api/values.yaml": crlf})
    git("update-index", "--chmod=+x", "envs/staging/api/values.yaml", cwd=editor)
    git("-c", "commit.gpgsign=false", "commit", "-q", "-m", "exec bit", cwd=editor)
    git("push", "-q", "origin", "HEAD:main", cwd=editor)
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    base = repo.main_commit()
    sha = repo.prepare_promotion(
        branch="ferry/staging/api/x",
        service="api",
        env="staging",
        digest=NEW,
        message="Promote api\n\nFerry-Digest: x  \n\n\n",
    )
    assert sha is not None
    gitdir = str(remote) if remote.suffix == ".git" else str(remote / ".git")
    after = git_bytes(
        "--git-dir", gitdir, "cat-file", "blob", f"{sha}:envs/staging/api/values.yaml"
    )
    before = crlf.encode()
    old_line = b'  digest: ""   # the only line ferry writes\r\n'
    assert after == before.replace(
        old_line, f'  digest: "{NEW}"   # the only line ferry writes\r\n'.encode()
    )
    assert (
        git("--git-dir", gitdir, "diff", "--name-only", base, sha) == "envs/staging/api/values.yaml"
    )
    assert git("--git-dir", gitdir, "ls-tree", sha, "envs/staging/api/values.yaml").startswith(
        "100755"
    )
    assert (
        git("--git-dir", gitdir, "log", "-1", "--format=%B", sha)
        == "Promote api\n\nFerry-Digest: x"
    )
    assert (
        git("--git-dir", gitdir, "log", "-1", "--format=%an <%ae>", sha)
        == "Ferry <ferry@localhost>"
    )
    # a remote on this machine is written directly: no clone, no checkout anywhere
    assert not (tmp_path / "work").exists()
    git("--git-dir", gitdir, "fsck", "--strict", "--no-progress")


def test_a_remote_with_receive_hooks_gets_a_push(remote: Path, tmp_path: Path) -> None:
    """Hooks run as for any push: a remote with a receive hook is written through the private
    clone (which has no checkout) and pushed to."""
    gitdir = remote if remote.suffix == ".git" else remote / ".git"
    hook = gitdir / "hooks" / "post-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(f"#!/bin/sh\ncat >> {tmp_path / 'received'}\n")
    hook.chmod(0o755)
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    sha = repo.prepare_promotion(
        branch="ferry/staging/api/y", service="api", env="staging", digest=NEW, message="m"
    )
    assert sha is not None
    assert f"{sha} refs/heads/ferry/staging/api/y" in (tmp_path / "received").read_text()
    assert [p.name for p in (tmp_path / "work").iterdir()] == [".git"]
    git("fsck", "--strict", "--no-progress", cwd=tmp_path / "work")
    assert git("--git-dir", str(gitdir), "diff", "--name-only", "main", sha) == (
        "envs/staging/api/values.yaml"
    )


def test_main_is_read_from_packed_refs(remote: Path, editor: Path, tmp_path: Path) -> None:
    gitdir = str(remote) if remote.suffix == ".git" else str(remote / ".git")
    git("--git-dir", gitdir, "pack-refs", "--all")
    assert not (Path(gitdir) / "refs/heads/main").exists()
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    assert repo.main_commit() == git("--git-dir", gitdir, "rev-parse", "main")
    moved = push_main(editor, {"README.md": "moved\n"})  # a loose ref again, newer than the pack
    assert repo.main_commit() == moved


def test_redelivery_is_idempotent_and_follows_main(
    remote: Path, editor: Path, tmp_path: Path
) -> None:
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    kwargs = dict(
        branch="ferry/api/staging", service="api", env="staging", digest=NEW, message="Promote api"
    )
    first = repo.prepare_promotion(**kwargs)  # type: ignore[arg-type]
    assert repo.prepare_promotion(**kwargs) == first  # type: ignore[arg-type]
    # A fresh process (new workdir) redoing the same promotion lands on the same commit too.
    other = GitOpsRepo(str(remote), tmp_path / "work2")
    assert other.prepare_promotion(**kwargs) == first  # type: ignore[arg-type]
    # When main moves, the branch is rebuilt on the new main.
    new_main = push_main(editor, {"README.md": "changed\n"})
    rebuilt = repo.prepare_promotion(**kwargs)  # type: ignore[arg-type]
    assert rebuilt != first
    gitdir = str(remote) if remote.suffix == ".git" else str(remote / ".git")
    assert git("--git-dir", gitdir, "rev-parse", f"{rebuilt}^") == new_main


def test_already_pinned_returns_none(remote: Path, tmp_path: Path) -> None:
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    assert (
        repo.prepare_promotion(
            branch="ferry/api/dev", service="api", env="dev", digest=OLD, message="m"
        )
        is None
    )
    gitdir = str(remote) if remote.suffix == ".git" else str(remote / ".git")
    assert git("--git-dir", gitdir, "branch", "--list", "ferry/*") == ""


def test_missing_values_file(remote: Path, tmp_path: Path) -> None:
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    with pytest.raises(PromotionError) as info:
        repo.prepare_promotion(
            branch="ferry/api/prod", service="api", env="prod", digest=NEW, message="m"
        )
    assert str(info.value) == (
        "envs/prod/api/values.yaml does not exist on main: "
        "add the service with `ferry init` or by hand"
    )


def test_values_error_is_raised_unchanged(remote: Path, editor: Path, tmp_path: Path) -> None:
    push_main(editor, {"envs/dev/api/values.yaml": "image:\n  repository: r\n"})
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    with pytest.raises(ValuesError, match="image.digest not found"):
        repo.prepare_promotion(
            branch="ferry/api/dev", service="api", env="dev", digest=NEW, message="m"
        )
    # and the workdir recovers for the next promotion
    assert repo.prepare_promotion(
        branch="ferry/api/staging", service="api", env="staging", digest=NEW, message="m"
    )


def test_refuses_bad_input(remote: Path, tmp_path: Path) -> None:
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    base = dict(branch="ferry/x", service="api", env="staging", digest=NEW, message="m")
    for change in [
        {"digest": "latest"},
        {"branch": "main"},
        {"branch": "bad..name"},
        {"service": "../etc"},
        {"message": " "},
    ]:
        with pytest.raises(PromotionError):
            repo.prepare_promotion(**{**base, **change})  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="unknown environment"):
        repo.prepare_promotion(**{**base, "env": "qa"})  # type: ignore[arg-type]


def test_policy_cache_refreshes_when_main_changes(
    remote: Path, editor: Path, tmp_path: Path
) -> None:
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    first = repo.policy()
    assert repo.policy() is first  # cached: main did not move
    push_main(editor, {"ferry.yaml": POLICY + "  perf: {promote_from: staging}\n"})
    second = repo.policy()
    assert second is not first
    assert second.env_names() == ["dev", "staging", "prod", "perf"]
    assert repo.policy() is second


def test_remote_url_goes_through_the_clone(remote: Path, editor: Path, tmp_path: Path) -> None:
    repo = GitOpsRepo(f"file://{remote}", tmp_path / "work")
    assert repo.pinned("api", "dev") == OLD
    assert (tmp_path / "work" / ".git").is_dir()
    assert repo.services() == ["api", "web"]
    push_main(editor, {"envs/dev/api/values.yaml": VALUES.format(env="dev", digest=NEWER)})
    assert repo.pinned("api", "dev") == NEWER  # fetched again
    sha = repo.prepare_promotion(
        branch="ferry/api/staging", service="api", env="staging", digest=NEW, message="m"
    )
    assert sha is not None
    assert git("ls-remote", str(remote), "refs/heads/ferry/api/staging").split()[0] == sha


def test_missing_policy(tmp_path: Path) -> None:
    remote = tmp_path / "empty"
    git("init", "-q", "-b", "main", str(remote))
    commit_files(remote, {"README.md": "x\n"})
    with pytest.raises(PolicyError, match="ferry.yaml not found on main"):
        GitOpsRepo(str(remote), tmp_path / "work").policy()


def test_threads_share_one_repo(remote: Path, tmp_path: Path) -> None:
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    results: dict[str, str | None] = {}
    errors: list[BaseException] = []

    def promote(env: str, digest: str) -> None:
        try:
            results[env] = repo.prepare_promotion(
                branch=f"ferry/api/{env}", service="api", env=env, digest=digest, message=env
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(env, NEW)) for env in ("dev", "staging")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    gitdir = str(remote) if remote.suffix == ".git" else str(remote / ".git")
    for env in ("dev", "staging"):
        assert git("--git-dir", gitdir, "rev-parse", f"refs/heads/ferry/api/{env}") == results[env]
        assert git("--git-dir", gitdir, "diff", "--name-only", "main", results[env] or "") == (
            f"envs/{env}/api/values.yaml"
        )


@pytest.mark.parametrize("via", ["path", "file-url"])
def test_pin_history_follows_main_and_names_the_digest_pinned_before(
    remote: Path, editor: Path, tmp_path: Path, via: str
) -> None:
    """What `ferry rollback` and a failed canary roll back to: main's history of one values
    file, newest first, a repeated pin counted once; read the same through a clone (file://)."""
    path = "envs/dev/api/values.yaml"
    push_main(editor, {path: VALUES.format(env="dev", digest=NEW)})
    push_main(editor, {"README.md": "unrelated\n"})
    push_main(editor, {path: VALUES.format(env="dev", digest=NEWER)})
    push_main(editor, {path: VALUES.format(env="dev", digest=NEWER).replace("2   #", "3   #")})
    url = f"file://{remote}" if via == "file-url" else str(remote)
    repo = GitOpsRepo(url, tmp_path / "work")
    assert [d for _, d in repo.pin_history("api", "dev")] == [NEWER, NEW, OLD]
    assert repo.pinned_before("api", "dev", NEWER) == NEW
    assert repo.pinned_before("api", "dev", NEW) == OLD
    assert repo.pinned_before("api", "dev", OLD) is None
    assert repo.pinned_before("api", "dev", "sha256:" + "9" * 64) is None
    assert repo.pin_history("api", "staging") == []  # nothing pinned yet


def test_files_are_found_by_walking_the_trees(remote: Path, editor: Path, tmp_path: Path) -> None:
    """Reads walk the directories by entry name in the raw trees: names that are prefixes of one
    another, files and directories of the same name, and absent ones are told apart."""
    files = {f"deep/{n}/values.yaml": f"{n}\n" for n in ("a", "a-1", "a-10", "a.b", "b")}
    files["deep/a-1x"] = "a file, not a directory\n"
    new_main = push_main(editor, files)
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    for path, text in files.items():
        assert repo.read_at(new_main, path) == text
    for missing in ("deep/a-2/values.yaml", "deep/a-1x/values.yaml", "deep/a", "deep", "nope/x"):
        assert repo.read_at(new_main, missing) is None, missing
    assert repo.read_at(new_main, "envs/dev/api/values.yaml") == VALUES.format(
        env="dev", digest=OLD
    )


def test_reads_survive_the_reader_dying(remote: Path, editor: Path, tmp_path: Path) -> None:
    """Files are read through one long-lived `git cat-file --batch`; when it dies (killed, or
    the repository's git went away for a while), the next read starts another."""
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    assert repo.pinned("api", "dev") == OLD
    reader = repo._reader
    assert reader is not None and reader._proc is not None
    reader._proc.kill()
    reader._proc.wait()
    push_main(editor, {"envs/dev/api/values.yaml": VALUES.format(env="dev", digest=NEWER)})
    assert repo.pinned("api", "dev") == NEWER
    assert reader._proc is not None and reader._proc.poll() is None  # started again
    reader.close()
    assert reader._proc is None


def test_a_forked_child_reads_through_its_own_git(remote: Path, tmp_path: Path) -> None:
    """A child forked after the first read (`ferry status` on two cores) must not write to its
    parent's `git cat-file --batch`, whose answers the parent is waiting for: it starts its own,
    and the parent's goes on answering the parent."""
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    assert repo.read_main("README.md") == "hi\n"
    reader = repo._reader
    assert reader is not None and reader._proc is not None
    parents_git = reader._proc.pid
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            text = repo.read_main("ferry.yaml") or ""
            own = reader._proc.pid if reader._proc is not None else 0
            with os.fdopen(write_end, "w") as out:
                out.write(f"{own}\n{text}")
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as inp:
        childs_git, _, text = inp.read().partition("\n")
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert text == POLICY
    assert int(childs_git) not in (0, parents_git)
    assert reader._proc is not None and reader._proc.pid == parents_git
    assert repo.read_main("README.md") == "hi\n"


# ------------------------------------------------------------------ a directory of many services


def make_wide_remote(path: Path, services: int) -> Path:
    """A bare remote whose envs/dev holds SERVICES directories (a tree over 64 KiB from about
    1,900 on), written by one `git fast-import`; envs/staging holds api alone."""
    files = {
        "ferry.yaml": POLICY,
        "envs/staging/api/values.yaml": VALUES.format(env="x", digest=""),
    }
    for i in range(services):
        files[f"envs/dev/svc-{i:04d}/values.yaml"] = VALUES.format(env="dev", digest=OLD)
    stream = [b"commit refs/heads/main\n", b"committer T <t@localhost> 0 +0000\n", b"data 4\nwide"]
    for name, text in files.items():
        data = text.encode()
        stream.append(f"\nM 100644 inline {name}\ndata {len(data)}\n".encode() + data)
    git("init", "-q", "--bare", "-b", "main", str(path))
    git_bytes("fast-import", "--quiet", cwd=path, input=b"".join(stream) + b"\n")
    return path


def promote(repo: GitOpsRepo, service: str, digest: str, env: str = "dev") -> str:
    sha = repo.prepare_promotion(
        branch=f"ferry/{env}/{service}/{digest[7:15]}",
        service=service,
        env=env,
        digest=digest,
        message=f"Promote {service}",
    )
    assert sha is not None
    return sha


def merge(remote: Path, sha: str) -> str:
    """Merge the promotion branch at SHA on the local forge; return main's new commit."""
    forge = LocalForge(remote)
    branch = git(
        "--git-dir", str(remote), "for-each-ref", "--points-at", sha, "--format=%(refname:lstrip=2)"
    )
    merged = forge.merge_pr(forge.open_pr(head=branch, title="t", body="").number)
    assert merged.merge_commit == git("--git-dir", str(remote), "rev-parse", "main")
    return merged.merge_commit


def as_git_writes_it(gitdir: Path, tree: str) -> str:
    """The id `git mktree` gives TREE's entries: what git itself writes for that content."""
    listing = git_bytes("--git-dir", str(gitdir), "ls-tree", "-z", tree)
    return git_bytes("--git-dir", str(gitdir), "mktree", "-z", input=listing).decode().strip()


def test_a_large_directory_is_written_as_git_writes_it_and_kept_for_the_next_promotion(
    tmp_path: Path,
) -> None:
    """A promotion in a directory of 2,000 services writes its tree (70 kB) as git would (the
    same id as `git mktree`, stored rather than compressed), keeps it, and the next promotion,
    on the main that merged it, needs no read of that directory from git."""
    remote = make_wide_remote(tmp_path / "wide.git", 2000)
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    first = promote(repo, "svc-0007", NEW)
    main = merge(remote, first)
    directory = git("--git-dir", str(remote), "rev-parse", f"{main}:envs/dev")
    assert as_git_writes_it(remote, directory) == directory
    size = int(git("--git-dir", str(remote), "cat-file", "-s", directory))
    assert size > 64 << 10
    loose = remote / "objects" / directory[:2] / directory[2:]
    stored = loose.read_bytes()
    assert len(stored) > size  # no level configured: stored (zlib level 0), not compressed

    loose.unlink()  # git can no longer read main's envs/dev: only the kept copy can
    try:
        second = promote(repo, "svc-1500", NEWER)
    finally:
        loose.write_bytes(stored)
    assert git("--git-dir", str(remote), "rev-parse", f"{second}^") == main
    assert git("--git-dir", str(remote), "diff", "--name-only", main, second) == (
        "envs/dev/svc-1500/values.yaml"
    )
    after = git("--git-dir", str(remote), "rev-parse", f"{second}:envs/dev")
    assert as_git_writes_it(remote, after) == after
    git("--git-dir", str(remote), "fsck", "--strict", "--no-progress")


def test_kept_trees_follow_main_when_it_moves_under_them(tmp_path: Path) -> None:
    """Trees are kept by id, so a main moved by someone else (another pull request merged, a
    person's commit in the same directory) is read afresh: no change is lost or undone."""
    remote = make_wide_remote(tmp_path / "wide.git", 2000)
    repo = GitOpsRepo(str(remote), tmp_path / "work")
    other = GitOpsRepo(str(remote), tmp_path / "other")  # another pr-writer replica
    a, b = promote(repo, "svc-0001", NEW), promote(other, "svc-0002", NEW)
    merge(remote, a)
    merge(remote, b)  # cut before a was merged: git merges it
    person = tmp_path / "person"
    git("clone", "-q", str(remote), str(person))
    push_main(person, {"envs/dev/svc-0003/values.yaml": "image: {digest: by-hand}\n"})
    third = promote(repo, "svc-0004", NEW)
    assert git("--git-dir", str(remote), "diff", "--name-only", "main", third) == (
        "envs/dev/svc-0004/values.yaml"
    )
    for service, digest in (("svc-0001", NEW), ("svc-0002", NEW), ("svc-0004", NEW)):
        shown = git("--git-dir", str(remote), "show", f"{third}:envs/dev/{service}/values.yaml")
        assert f'digest: "{digest}"' in shown
    assert "by-hand" in git(
        "--git-dir", str(remote), "show", f"{third}:envs/dev/svc-0003/values.yaml"
    )
    # the same file promoted again on this main: the first promotion's line is replaced
    again = promote(repo, "svc-0001", NEWER)
    assert git("--git-dir", str(remote), "diff", "--name-only", "main", again) == (
        "envs/dev/svc-0001/values.yaml"
    )
    git("--git-dir", str(remote), "fsck", "--strict", "--no-progress")


def test_loose_objects_take_the_compression_the_repository_sets(tmp_path: Path) -> None:
    """Without a level configured, large objects are stored and small ones compressed at git's
    default; core.looseCompression (else core.compression) wins when set. Either way the id is
    the one `git hash-object` gives and git reads the object back."""
    gitdir = tmp_path / "r.git"
    git("init", "-q", "--bare", str(gitdir))
    large = b"image:\n  digest: x\n" * 5000  # 95 kB, compresses well
    small = b"image:\n  digest: y\n" * 100

    def written(content: bytes) -> int:
        oid = write_object(gitdir, "blob", content)
        assert (
            oid
            == git_bytes("--git-dir", str(gitdir), "hash-object", "--stdin", input=content)
            .decode()
            .strip()
        )
        assert git_bytes("--git-dir", str(gitdir), "cat-file", "blob", oid) == content
        return (gitdir / "objects" / oid[:2] / oid[2:]).stat().st_size

    assert written(large) > len(large)
    assert written(small) < len(small) // 4
    git("--git-dir", str(gitdir), "config", "core.compression", "0")
    assert written(small + b"\n") > len(small)
    git("--git-dir", str(gitdir), "config", "core.looseCompression", "9")
    assert written(large + b"\n") < len(large) // 4
    git("--git-dir", str(gitdir), "fsck", "--strict", "--no-progress")


def count_objects(gitdir: str) -> dict[str, int]:
    out = git(f"--git-dir={gitdir}", "count-objects", "-v")
    return {k: int(v) for k, v in (line.split(": ") for line in out.splitlines()) if v.isdigit()}


def test_objects_ferry_writes_get_packed_as_git_would(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ferry writes objects and moves refs without the git commands that start `git gc --auto`,
    so it starts it itself, every GC_EVERY commits; git's gc settings then decide (here: more
    than one pack is too many, so the first `git gc --auto` packs everything), and promotions go
    on reading from the pack."""
    import ferry.adapters.git as git_module

    monkeypatch.setattr(git_module, "GC_EVERY", 3)
    gitdir = str(remote) if remote.suffix == ".git" else str(remote / ".git")
    git(f"--git-dir={gitdir}", "config", "gc.autoPackLimit", "1")
    git(f"--git-dir={gitdir}", "config", "gc.autoDetach", "false")  # done when the call returns
    git(f"--git-dir={gitdir}", "repack", "-d", "-q")
    blob = git(f"--git-dir={gitdir}", "hash-object", "-w", "--stdin", input="another pack\n")
    git(f"--git-dir={gitdir}", "tag", "another", blob)
    git(f"--git-dir={gitdir}", "repack", "-d", "-q")
    assert count_objects(gitdir)["packs"] == 2
    repo = GitOpsRepo(str(remote), tmp_path / "work")

    def promote(n: int) -> str | None:
        return repo.prepare_promotion(
            branch=f"ferry/api/staging-{n}",
            service="api",
            env="staging",
            digest="sha256:" + f"{n + 4:x}" * 64,
            message=f"Promote api to staging ({n})",
        )

    heads = [promote(0), promote(1)]
    assert count_objects(gitdir)["count"] == 2 * 6  # a blob, four trees and a commit each
    heads.append(promote(2))  # the third commit: `git gc --auto`, which packs the first two
    counted = count_objects(gitdir)
    # left loose: the third's own objects, which no ref named yet when git looked (the next
    # `git gc --auto` packs them; unreachable objects are kept two weeks, gc.pruneExpire)
    assert (counted["count"], counted["packs"]) == (6, 1), counted
    assert git(f"--git-dir={gitdir}", "fsck", "--strict", "--no-progress") == ""
    for n, head in enumerate(heads):
        assert git(f"--git-dir={gitdir}", "rev-parse", f"ferry/api/staging-{n}") == head
    assert promote(0) == heads[0]  # the commit is found in the pack, not written anew


def test_writing_an_object_again_freshens_it_as_git_does(tmp_path: Path) -> None:
    """An object written again is not rewritten, but its time is brought up to now, so that a
    `git gc` pruning old unreachable objects does not take it just as a new tree names it."""
    gitdir = tmp_path / "r.git"
    git("init", "-q", "--bare", str(gitdir))
    oid = write_object(gitdir, "blob", b"kept\n")
    path = gitdir / "objects" / oid[:2] / oid[2:]
    month_ago = path.stat().st_mtime - 30 * 86400
    os.utime(path, (month_ago, month_ago))
    assert write_object(gitdir, "blob", b"kept\n") == oid
    assert path.stat().st_mtime > month_ago + 29 * 86400
    assert git_bytes(f"--git-dir={gitdir}", "cat-file", "blob", oid) == b"kept\n"
