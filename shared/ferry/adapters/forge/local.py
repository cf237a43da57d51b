"""The local forge: pull requests kept inside a git repository on disk.

Layout, all inside the repository's git dir (`git rev-parse --absolute-git-dir`), plain files that
any tool can read without this class:

    <gitdir>/ferry/pulls/<number>.json   one PullRequest record (JSON), replaced atomically
    <gitdir>/ferry/keys/<sha256(key)>    {"key": ..., "number": ...}: the idempotency-key index
    <gitdir>/ferry/next-number           the next PR number
    <gitdir>/ferry/forge.lock            an flock on it serialises every mutation
    <gitdir>/ferry/waiting/              one marker per process/thread waiting for that lock

The repository may be bare or not; in a non-bare one made by `ferry init` (main checked out) a
merge moves main by compare-and-swap and then brings the checkout to it (see `_checkout_of`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ferry.adapters.forge.base import (
    PR_STATES,
    STATUS_STATES,
    Comment,
    ForgeError,
    HeadMoved,
    MergeConflict,
    PermanentForgeError,
    PullRequest,
    PullRequestNotFound,
    Review,
    TransientForgeError,
    utcnow,
)
from ferry.adapters.git import (
    OBJECT_ID,
    RECEIVE_HOOKS,
    GitError,
    commit_fields,
    git,
    merge_trees,
    read_loose,
    read_ref,
    takes_plain_ref_updates,
    write_commit,
)

_PLAIN_BRANCH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")

# stderr fragments of a push that lost a race against another update of the branch
_LOST_RACE = (
    "stale info",
    "non-fast-forward",
    "fetch first",
    "cannot lock ref",
    "failed to update ref",
    "incorrect old value",
    "but expected",
)


def _not_a_repo(repo: str | Path) -> ForgeError:
    return ForgeError(
        f"FERRY_GITOPS_REPO '{repo}' is not a git repository: run `ferry init {repo}` first"
    )


def resolve_repo(repo: str | Path) -> tuple[Path, Path]:
    """Return (repository path, absolute git dir) of REPO, or raise ForgeError.

    REPO must be the repository itself (a bare repository, or the top of a working tree), not some
    directory that merely lies inside one.
    """
    path = Path(repo).expanduser()
    if not path.is_dir():
        raise _not_a_repo(repo)
    path = path.resolve()
    try:
        git_dir = Path(git("rev-parse", "--absolute-git-dir", cwd=path)).resolve()
    except GitError:
        raise _not_a_repo(repo) from None
    if git_dir == path:
        return path, git_dir
    top = git("rev-parse", "--show-toplevel", cwd=path, check=False)
    if top and Path(top).resolve() == path:
        return path, git_dir
    raise _not_a_repo(repo)


def _atomic_write(path: Path, text: str, *, sync: str = "all") -> None:
    """Write TEXT to PATH so that readers see the old file or the new one, never a part.

    SYNC says what is made durable before this returns: "all", the content and the new name
    (fsync of the file, then of its directory); "content", the content only, so that a crash
    may lose the new name (the old file stays) but never leaves the name on an empty file: the
    caller syncs the directory later (`_sync_dir`); "none", nothing (an index a crash may lose
    or leave empty, as a crash just before writing it would)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if sync != "none":
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync == "all":
        _sync_dir(path.parent)


def _sync_dir(folder: Path) -> None:
    """fsync FOLDER, so that the names changed in it last (best effort: not every system can)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _key_file_name(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_pulls(git_dir: Path, state: str | None = None) -> list[PullRequest]:
    """The PR records under GIT_DIR (optionally only those in STATE), newest first. No lock needed:
    records are replaced atomically."""
    if state not in (None, "all", *PR_STATES):
        raise ValueError(f"state must be one of {', '.join(PR_STATES)} or None, got {state!r}")
    pulls = Path(git_dir) / "ferry" / "pulls"
    out: list[PullRequest] = []
    try:
        entries = list(pulls.iterdir())
    except FileNotFoundError:
        return out
    for entry in entries:
        if entry.suffix != ".json" or not entry.stem.isdigit():
            continue
        try:
            pr = PullRequest.model_validate_json(entry.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        if state in (None, "all") or pr.state == state:
            out.append(pr)
    out.sort(key=lambda p: p.number, reverse=True)
    return out


def _flock_within(path: Path, timeout: float) -> int | None:
    """A descriptor of PATH holding an exclusive flock on it, waited for at most TIMEOUT seconds;
    None when it stayed taken. The wait is a blocking flock in a thread of its own (the kernel
    wakes it when the holder lets go), abandoned at the timeout: a lock it takes after that is
    let go at once."""
    taken = threading.Event()
    guard = threading.Lock()
    state: dict[str, Any] = {"fd": None, "abandoned": False}

    def wait() -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            taken.set()
            return
        with guard:
            if state["abandoned"]:
                os.close(fd)
                return
            state["fd"] = fd
        taken.set()

    threading.Thread(target=wait, name="forge-lock-wait", daemon=True).start()
    taken.wait(timeout)
    with guard:
        if state["fd"] is None:
            state["abandoned"] = True
        fd: int | None = state["fd"]
        return fd


class LocalForge:
    """A forge over a git repository on disk (see the module docstring for what it keeps where)."""

    MERGE_ATTEMPTS = 5
    # How long a thread that let go of the lock while others wait for it stays away.
    STEP_BACK_S = 0.002
    # How far back along main's first parents a head's fork point is looked for in-process.
    FORK_STEPS = 64

    def __init__(self, repo: str | Path, *, lock_timeout: float = 120.0) -> None:
        self.repo, self.git_dir = resolve_repo(repo)
        self.state_dir = self.git_dir / "ferry"
        self.pulls_dir = self.state_dir / "pulls"
        self.keys_dir = self.state_dir / "keys"
        self.waiting_dir = self.state_dir / "waiting"
        self.pulls_dir.mkdir(parents=True, exist_ok=True)
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "open-heads").mkdir(parents=True, exist_ok=True)
        self.waiting_dir.mkdir(parents=True, exist_ok=True)
        self.lock_timeout = lock_timeout
        self._commits: dict[str, tuple[str, list[str]]] = {}  # sha -> (tree, parents), loose
        self._lock_path = self.state_dir / "forge.lock"
        # .fd: the descriptor holding the lock in this thread; .dirs: folders to sync after it
        self._held = threading.local()

    def __repr__(self) -> str:
        return f"LocalForge({str(self.repo)!r})"

    # ---------------------------------------------------------------- reading

    def get_pr(self, number: int) -> PullRequest:
        pr = self._read(number)
        if pr is None:
            raise PullRequestNotFound(f"pull request #{number} does not exist in {self.repo}")
        return pr

    def find_pr(self, key: str) -> PullRequest | None:
        number = self._key_number(key)
        if number is None:
            return None
        pr = self._read(number)
        if pr is None or pr.key != key:
            return None
        return pr

    def list_prs(self, state: str | None = None) -> list[PullRequest]:
        return read_pulls(self.git_dir, state)

    # ---------------------------------------------------------------- opening

    def open_pr(
        self,
        *,
        head: str,
        title: str,
        body: str,
        base: str = "main",
        labels: Sequence[str] = (),
        key: str | None = None,
    ) -> PullRequest:
        if key is not None:
            existing = self.find_pr(key)
            if existing is not None:
                return existing
        if not head:
            raise PermanentForgeError("the head branch of a pull request must not be empty")
        if head == base:
            raise PermanentForgeError(f"head and base are the same branch '{head}'")
        with self._locked():
            number: int | None = None
            if key is not None:
                number = self._key_number(key)
                if number is not None:
                    existing = self._read(number)
                    if existing is not None:
                        return existing
                    # the index names a number whose record was never written (a crash): reuse it
            head_sha = self._branch_sha(head)
            if head_sha is None:
                raise PermanentForgeError(
                    f"branch '{head}' does not exist in {self.repo}: push it first"
                )
            if self._branch_sha(base) is None:
                raise PermanentForgeError(f"base branch '{base}' does not exist in {self.repo}")
            other = self._open_pr_from(head, base)
            if other is not None:
                raise PermanentForgeError(
                    f"pull request #{other.number} from '{head}' into '{base}' is already open"
                )
            if number is None:
                number = self._allocate_number()
                if key is not None:
                    _atomic_write(
                        self.keys_dir / _key_file_name(key),
                        json.dumps({"key": key, "number": number}) + "\n",
                    )
            now = utcnow()
            pr = PullRequest(
                number=number,
                title=title,
                body=body,
                head=head,
                base=base,
                state="open",
                labels=list(dict.fromkeys(labels)),
                key=key,
                head_sha=head_sha,
                created_at=now,
                updated_at=now,
                url=self._url(number),
            )
            self._write(pr)
            return pr

    # ---------------------------------------------------------------- merging and closing

    def merge_pr(
        self, number: int, *, message: str | None = None, sha: str | None = None
    ) -> PullRequest:
        with self._locked():
            pr = self.get_pr(number)
            if pr.state == "merged":
                return pr
            if pr.state == "closed":
                raise PermanentForgeError(f"pull request #{number} is closed: it cannot be merged")
            head_now = self._branch_sha(pr.head)
            if sha is not None and head_now is not None and head_now != sha:
                raise HeadMoved(
                    f"pull request #{number}: '{pr.head}' is at {head_now[:12]}, not the "
                    f"evaluated {sha[:12]}: not merged"
                )
            if self._branch_sha(pr.head) is None:
                raise PermanentForgeError(
                    f"pull request #{number}: branch '{pr.head}' no longer exists in {self.repo}"
                )
            if self._branch_sha(pr.base) is None:
                raise PermanentForgeError(
                    f"pull request #{number}: base branch '{pr.base}' does not exist in {self.repo}"
                )
            msg = message or f"Merge pull request #{number} from {pr.head}"
            merge_commit, head_sha = self._merge(pr, msg, sha)
            now = utcnow()
            pr.state = "merged"
            pr.merge_commit = merge_commit
            pr.head_sha = head_sha
            pr.merged_at = now
            pr.closed_at = now
            pr.updated_at = now
            self._write(pr)
            return pr

    def close_pr(self, number: int, *, comment: str | None = None) -> PullRequest:
        def close(pr: PullRequest) -> bool:
            if pr.state == "closed":
                return False  # closing again (a redelivery) adds no second comment
            if pr.state == "merged":
                raise PermanentForgeError(f"pull request #{number} is merged: it cannot be closed")
            now = utcnow()
            if comment:
                pr.comments.append(Comment(author="ferry", body=comment, at=now))
            pr.state = "closed"
            pr.closed_at = now
            return True

        return self._mutate(number, close)

    # ---------------------------------------------------------------- comments, labels, statuses

    def comment(self, number: int, body: str, *, author: str = "ferry") -> PullRequest:
        def add(pr: PullRequest) -> bool:
            pr.comments.append(Comment(author=author, body=body, at=utcnow()))
            return True

        return self._mutate(number, add)

    def update_body(self, number: int, body: str) -> PullRequest:
        def put(pr: PullRequest) -> bool:
            if pr.body == body:
                return False  # nothing changed: the record and its updated_at stay as they are
            pr.body = body
            return True

        return self._mutate(number, put)

    def add_labels(self, number: int, labels: Iterable[str]) -> PullRequest:
        wanted = list(labels)

        def add(pr: PullRequest) -> bool:
            new = [label for label in dict.fromkeys(wanted) if label not in pr.labels]
            pr.labels.extend(new)
            return bool(new)

        return self._mutate(number, add)

    def remove_label(self, number: int, label: str) -> PullRequest:
        def remove(pr: PullRequest) -> bool:
            if label not in pr.labels:
                return False
            pr.labels = [x for x in pr.labels if x != label]
            return True

        return self._mutate(number, remove)

    def set_status(
        self, number: int, context: str, state: str, description: str = ""
    ) -> PullRequest:
        if state not in STATUS_STATES:
            raise ValueError(f"status must be one of {', '.join(STATUS_STATES)}, got {state!r}")

        def put(pr: PullRequest) -> bool:
            if pr.statuses.get(context) == state and (
                pr.status_descriptions.get(context, "") == description
            ):
                return False
            pr.statuses[context] = state  # type: ignore[assignment]
            pr.status_descriptions[context] = description
            return True

        return self._mutate(number, put)

    def reviews(self, number: int) -> list[Review]:
        # People review on a real forge; the local forge has none (approvals come by `ferry
        # approve`).
        self.get_pr(number)
        return []

    # ---------------------------------------------------------------- internals: records

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the forge lock (an exclusive flock on forge.lock, per thread; re-entrant).

        A thread that finds it taken waits in the kernel, which wakes it as the holder lets go
        (no poll: with three pr-writer replicas a 5 ms poll left the lock idle 2.7 ms on average
        at each hand-over, while each holds it for a few ms). A thread that lets go while others
        wait steps back STEP_BACK_S before it may take it again, so that a busy writer in a
        loop cannot starve them (flock wakes the waiters; it does not hand the lock over)."""
        if getattr(self._held, "fd", None) is not None:  # re-entered by the same thread
            yield
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            marker = self.waiting_dir / f"{os.getpid()}-{threading.get_ident()}"
            marker.touch()
            try:
                got = _flock_within(self._lock_path, self.lock_timeout)
            finally:
                marker.unlink(missing_ok=True)
            if got is None:
                raise TransientForgeError(
                    f"the local forge in {self.repo} stayed locked for {self.lock_timeout}s",
                    retry_after=1.0,
                ) from None
            fd = got
        except BaseException:
            os.close(fd)
            raise
        self._held.fd = fd
        self._held.dirs = set()  # folders whose changed names are synced once the lock is free
        try:
            yield
        finally:
            self._held.fd = None
            os.close(fd)  # lets go of the flock
            folders, self._held.dirs = self._held.dirs, set()
            for folder in folders:
                _sync_dir(folder)
            if self._others_waiting():
                time.sleep(self.STEP_BACK_S)

    def _others_waiting(self) -> bool:
        try:
            entries = list(os.scandir(self.waiting_dir))
        except FileNotFoundError:
            return False
        stale = time.time() - self.lock_timeout - 60
        for entry in entries:
            try:
                if entry.stat().st_mtime >= stale:
                    return True
                os.unlink(entry.path)  # left by a process that died while waiting
            except FileNotFoundError:
                continue
        return False

    def _url(self, number: int) -> str:
        return f"file://{self.repo}#pr-{number}"

    def _record(self, number: int) -> Path:
        return self.pulls_dir / f"{int(number)}.json"

    def _read(self, number: int) -> PullRequest | None:
        try:
            text = self._record(number).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return PullRequest.model_validate_json(text)

    def _write(self, pr: PullRequest) -> None:
        """Replace PR's record (call with the lock held). The record's content is on disk before
        its new name; the name is made durable once the lock is let go (`_locked`), so that other
        writers need not wait for that fsync too. Until then a crash may lose this change as if
        it had come just before it: an open's record (its key, written durably first, names the
        number, which the next open of that key reuses), a merge (main has it: the next merge of
        the PR finds it there) or a comment, label or status (its command is redone)."""
        _atomic_write(self._record(pr.number), pr.model_dump_json(indent=2) + "\n", sync="content")
        self._held.dirs.add(self.pulls_dir)
        # The open PR per (head, base), so opening need not read every record ever written.
        # Advisory: _open_pr_from checks it against the record, so a stale entry is harmless,
        # and a missing or empty one (a crash) reads as none: not synced.
        index = self._head_index(pr.head, pr.base)
        if pr.state == "open":
            _atomic_write(index, f"{pr.number}\n", sync="none")
        elif self._indexed_number(index) == pr.number:
            index.unlink(missing_ok=True)

    def _head_index(self, head: str, base: str) -> Path:
        return self.state_dir / "open-heads" / _key_file_name(f"{base}\n{head}")

    @staticmethod
    def _indexed_number(index: Path) -> int | None:
        try:
            return int(index.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def _open_pr_from(self, head: str, base: str) -> PullRequest | None:
        number = self._indexed_number(self._head_index(head, base))
        pr = self._read(number) if number is not None else None
        if pr is not None and pr.state == "open" and pr.head == head and pr.base == base:
            return pr
        return None

    def _key_number(self, key: str) -> int | None:
        try:
            data = json.loads((self.keys_dir / _key_file_name(key)).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if data.get("key") != key:
            return None
        return int(data["number"])

    def _allocate_number(self) -> int:
        """The next free number; call with the lock held. The counter is advanced before anything
        uses the number, so a crash leaves a gap, never a reused number."""
        counter = self.state_dir / "next-number"
        try:
            number = int(counter.read_text().strip() or "1")
        except (FileNotFoundError, ValueError):
            number = 1
        highest = max(
            (int(p.stem) for p in self.pulls_dir.glob("*.json") if p.stem.isdigit()), default=0
        )
        number = max(number, highest + 1)
        _atomic_write(counter, f"{number + 1}\n")
        return number

    def _mutate(self, number: int, change: Callable[[PullRequest], bool]) -> PullRequest:
        with self._locked():
            pr = self.get_pr(number)
            if change(pr):
                pr.updated_at = utcnow()
                self._write(pr)
            return pr

    def _branch_sha(self, branch: str) -> str | None:
        if _PLAIN_BRANCH.match(branch) and ".." not in branch:
            found = read_ref(self.git_dir, f"refs/heads/{branch}")
            if found is not None:
                return found  # no process: the ref file says it (git asked only when in doubt)
        out = git(
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/heads/{branch}^{{commit}}",
            cwd=self.repo,
            check=False,
        )
        return out or None

    # ---------------------------------------------------------------- internals: merging

    def _merge(self, pr: PullRequest, message: str, sha: str | None = None) -> tuple[str, str]:
        """Merge PR's head into its base with a merge commit and push it; return
        (merge commit, merged head sha). Retried when the base moves under us.

        No working tree: a head made on the base as it is (a promotion branch) merges to its own
        tree, and one made on an older base that changed other files than the base did since is
        merged in-process (`_tree_in_process`); else `git merge-tree --write-tree` merges the
        trees inside the repository. The merge commit is written in-process, and the base is
        moved with a compare-and-swap (`_push_base`; a checkout of the base follows)."""
        last_error = ""
        for _attempt in range(self.MERGE_ATTEMPTS):
            base_sha, head_sha = self._branch_sha(pr.base), self._branch_sha(pr.head)
            if head_sha is None or base_sha is None:
                raise PermanentForgeError(
                    f"pull request #{pr.number}: branch '{pr.head}' or '{pr.base}' "
                    f"no longer exists in {self.repo}"
                )
            if sha is not None and head_sha != sha:
                raise HeadMoved(
                    f"pull request #{pr.number}: '{pr.head}' moved to {head_sha[:12]} after "
                    f"{sha[:12]} was evaluated: not merged"
                )
            tree = self._tree_in_process(base_sha, head_sha)
            if tree is None:
                if self._is_ancestor(self.repo, head_sha, base_sha):
                    # already in the base: a merge pushed just before a crash, or by hand
                    return self._find_merge(self.repo, pr, head_sha, base_sha), head_sha
                tree = self._merge_tree(pr, base_sha, head_sha)
            merge_sha = write_commit(
                self.git_dir, tree, [base_sha, head_sha], message, cwd=self.repo
            )
            try:
                self._push_base(self.repo, pr.base, base_sha, merge_sha)
            except GitError as exc:
                if any(fragment in exc.stderr for fragment in _LOST_RACE):
                    last_error = exc.stderr
                    continue  # the base moved since we read it: merge again
                raise ForgeError(
                    f"pushing the merge of pull request #{pr.number} into '{pr.base}' of "
                    f"{self.repo} failed: {exc.stderr}"
                ) from exc
            return merge_sha, head_sha
        raise TransientForgeError(
            f"pull request #{pr.number}: '{pr.base}' moved during each of "
            f"{self.MERGE_ATTEMPTS} merge attempts ({last_error}); try again",
            retry_after=1.0,
        )

    def _tree_in_process(self, base_sha: str, head_sha: str) -> str | None:
        """The tree of HEAD_SHA merged into BASE_SHA, found without a git process, or None (then
        git merges, or finds HEAD_SHA already merged). Read from loose objects only.

        A head made on BASE_SHA as it is (a promotion branch cut from the current main) merges
        to its own tree: `git merge-tree` would read both sides' trees, an environment's
        directory of 10,000 entries included. A head made on an older main (one parent, found a
        few merges back along BASE_SHA's first parents: another replica merged meanwhile) is
        merged here when its changes and main's since then touch different files
        (`merge_trees`), once HEAD_SHA is known not to be in BASE_SHA already (`_merged_since`)."""
        head = self._commit(head_sha)
        if head is None or len(head[1]) != 1:
            return None
        head_tree, (fork,) = head
        if fork == base_sha:
            return head_tree
        base = self._commit(base_sha)
        fork_commit = self._commit(fork)
        if base is None or fork_commit is None or self._merged_since(base_sha, fork, head_sha):
            return None
        return merge_trees(self.git_dir, fork_commit[0], head_tree, base[0])

    def _merged_since(self, base_sha: str, fork: str, head_sha: str) -> bool:
        """True unless FORK is on BASE_SHA's first-parent line (within FORK_STEPS commits) and
        HEAD_SHA provably is not in BASE_SHA: every commit on that line above FORK brought in
        nothing but, perhaps, one other branch of one commit made on that line (or on FORK's own
        first parents): the merges of the local forge, of promotion branches. Anything else
        (HEAD_SHA among them, a packed commit, a longer branch merged) answers True: git looks."""
        line: list[tuple[str, list[str]]] = []
        sha = base_sha
        while sha != fork:
            commit = self._commit(sha) if sha != head_sha else None
            if commit is None or not commit[1] or len(line) == self.FORK_STEPS:
                return True
            line.append((sha, commit[1]))
            sha = commit[1][0]
        on_line = {sha for sha, _ in line} | {fork}
        below = fork
        for _, parents in line:
            for side in parents[1:]:
                commit = self._commit(side) if side != head_sha else None
                if commit is None or len(commit[1]) != 1:
                    return True
                while commit[1][0] not in on_line:  # made on a main older than FORK?
                    older = self._commit(below)
                    if older is None or not older[1] or len(on_line) > 2 * self.FORK_STEPS:
                        return True
                    below = older[1][0]
                    on_line.add(below)
        return False

    def _commit(self, sha: str) -> tuple[str, list[str]] | None:
        """(tree, parents) of commit SHA when it is a loose object here, else None; kept (a
        commit never changes)."""
        found = self._commits.get(sha)
        if found is None:
            loose = read_loose(self.git_dir, sha)
            if loose is None or loose[0] != "commit":
                return None
            tree, parents, _ = commit_fields(loose[1])
            if not OBJECT_ID.match(tree):
                return None
            found = self._commits[sha] = (tree, parents)
            while len(self._commits) > 4 * self.FORK_STEPS:
                del self._commits[next(iter(self._commits))]
        return found

    def _merge_tree(self, pr: PullRequest, base_sha: str, head_sha: str) -> str:
        """The tree of HEAD_SHA merged into BASE_SHA, written by `git merge-tree --write-tree`;
        MergeConflict naming the files when they conflict."""
        merged = git(
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            base_sha,
            head_sha,
            cwd=self.repo,
            check=False,
        )
        tree, *conflicts = merged.splitlines() or [""]
        if conflicts or not OBJECT_ID.match(tree):
            files = ", ".join(dict.fromkeys(c for c in conflicts if c))
            if not files or not OBJECT_ID.match(tree):
                raise ForgeError(f"merging pull request #{pr.number} failed: {merged}")
            raise MergeConflict(
                f"pull request #{pr.number}: branch '{pr.head}' does not merge cleanly "
                f"into '{pr.base}' (conflicts in {files})"
            )
        return tree

    def _push_base(self, work: Path, base: str, base_sha: str, merge_sha: str) -> None:
        """Compare-and-swap BASE from BASE_SHA to MERGE_SHA; raises GitError if BASE moved. By
        `git update-ref` when no receive hook must run (then a checkout of BASE is brought to it),
        else by a push of the repository into itself."""
        checkout = self._checkout_of(base)
        if checkout is not None or takes_plain_ref_updates(self.git_dir, base):
            git(
                "update-ref",
                "-m",
                "ferry: merge",
                f"refs/heads/{base}",
                merge_sha,
                base_sha,
                cwd=work,
            )
            if checkout is not None:
                self._sync_checkout(checkout)
            return
        git(
            "push",
            "-q",
            "--no-verify",
            f"--force-with-lease=refs/heads/{base}:{base_sha}",
            ".",
            f"{merge_sha}:refs/heads/{base}",
            cwd=work,
        )

    def _checkout_of(self, base: str) -> Path | None:
        """The working tree that has BASE checked out, when a push into it would do nothing but
        update that tree (no receive hook, no linked worktree); else None.

        Such a tree is brought to BASE by `_sync_checkout` after the ref moved, rather than by
        receive.denyCurrentBranch=updateInstead: a pusher killed while the receiving side rewrote
        the tree (or an orphaned push racing the next one once the forge lock was free) left the
        index holding a merge that never landed, and every later push was refused for good
        ("Working directory has staged changes")."""
        if self.repo == self.git_dir or (self.git_dir / "worktrees").exists():
            return None
        try:
            head = (self.git_dir / "HEAD").read_text().strip()
            config = (self.git_dir / "config").read_text(errors="replace").lower()
        except OSError:
            return None
        if head != f"ref: refs/heads/{base}" or "hookspath" in config:
            return None
        if any((self.git_dir / "hooks" / name).exists() for name in RECEIVE_HOOKS):
            return None
        return self.repo

    @staticmethod
    def _sync_checkout(tree: Path) -> None:
        """Bring the index and files of the checkout at TREE from whatever they hold to HEAD (a
        two-tree read-tree from the index's own tree): idempotent, so each merge also finishes
        what a killed one left half done. Files a person changed there and the move would touch
        are left as they are (read-tree refuses; the next merge tries again)."""
        try:
            current = git("write-tree", cwd=tree)
            git("read-tree", "-u", "-m", current, "HEAD", cwd=tree)
        except GitError:
            pass  # another merge holds the index now, or a person's edits are in the way

    @staticmethod
    def _is_ancestor(work: Path, ancestor: str, descendant: str) -> bool:
        try:
            git("merge-base", "--is-ancestor", ancestor, descendant, cwd=work)
        except GitError as exc:
            if exc.returncode == 1:
                return False
            raise
        return True

    def _find_merge(self, work: Path, pr: PullRequest, head_sha: str, base_sha: str) -> str:
        """The commit on the base that merged HEAD_SHA (HEAD_SHA is already in the base)."""
        out = git(
            "rev-list",
            "--parents",
            "--reverse",
            "--ancestry-path",
            f"{head_sha}..{base_sha}",
            cwd=work,
        )
        for line in out.splitlines():
            sha, *parents = line.split()
            if head_sha in parents[1:]:
                return sha
        raise PermanentForgeError(
            f"pull request #{pr.number}: branch '{pr.head}' has nothing to merge: it is already "
            f"contained in '{pr.base}'"
        )
