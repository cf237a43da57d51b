"""The GitOps repository: read what `main` pins, and push promotion branches.

Ferry never edits the remote's working tree. Reads come straight from the remote's object
database when it is a local directory, or from a private clone (WORKDIR) fetched from it
otherwise. A promotion is a branch of its own: written into a local remote directly (its objects,
then `git update-ref`) when a push would do nothing more (no receive hooks), else written in the
private clone and pushed.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from ferry.core.names import DIGEST, check_digest, check_label
from ferry.core.policy import EnvironmentPolicy, Policy, PolicyError, load_policy
from ferry.core.values import read_value, set_digest

from . import pins as pin_index
from .git import (
    CatFile,
    GitError,
    clean_message,
    commit_fields,
    git,
    git_bytes,
    raw_id,
    read_ref,
    takes_plain_ref_updates,
    write_commit,
    write_object,
)

POLICY_FILE = "ferry.yaml"
MAIN = "main"


FILE_CACHE_SIZE = 1024
# A CLI command that asks about more services than this (prefetch) reads main's pins whole, from
# the copy kept on disk (adapters/pins.py); one about fewer reads their files.
PREFETCH_MANY = 64
# Trees kept by id, for walking to a file (an environment's directory at 10,000 services is
# about 400 kB): enough for a few versions of each environment's directory.
TREE_CACHE_BYTES = 4 << 20


class PinChange(NamedTuple):
    """A change of what a service pins in an environment: the commit of main that made it, the
    digest pinned, and when the commit landed on main."""

    commit: str
    digest: str
    at: datetime


class PromotionError(ValueError):
    """A promotion cannot be prepared for a reason that retrying will not fix."""


def _looks_remote(remote: str) -> bool:
    """True for URLs (https://, ssh://, file://) and scp-like user@host:path."""
    return "://" in remote or bool(re.match(r"^[^/\\]+@[^/\\]+:", remote))


# How long main's commit, read from its ref file, is trusted while the file looks unchanged.
MAIN_REF_TRUST_S = 1.0


class GitOpsRepo:
    """One GitOps repository, seen through one private working clone (thread-safe)."""

    def __init__(self, remote: str | Path, workdir: Path, *, keep_pins: bool = False) -> None:
        """KEEP_PINS, for the CLI (a process per command): what main pins is read whole only for
        a question about many services (MainSnapshot.prefetch, services()), and kept on disk
        beside WORKDIR for the next process, which then reads only the values files it has not
        seen before; a command about one service reads that service's files. Without it (a
        worker), main's pins are read whole at the first question and kept in memory."""
        remote = str(remote)
        if not _looks_remote(remote) and Path(remote).is_dir():
            remote = str(Path(remote).resolve())
        self.remote = remote
        self.workdir = Path(workdir)
        self.keep_pins = keep_pins
        self._lock = threading.RLock()
        self._gitdir: str | None = None
        self._gitdir_known = False
        self._cloned = False
        self._policy_cache: tuple[str, Policy] | None = None
        self._effective: OrderedDict[str, tuple[Policy, str | None]] = OrderedDict()
        # Files by (commit, path): a commit's content never changes, so this is never stale.
        self._files: OrderedDict[tuple[str, str], str | None] = OrderedDict()
        self._reader: CatFile | None = None  # started at the first read
        self._roots: OrderedDict[str, str] = OrderedDict()  # commit -> its tree
        self._trees: OrderedDict[str, bytes] = OrderedDict()  # tree id -> raw tree
        self._tree_bytes = 0
        # What main pins, by commit (adapters/pins.py): the newest two, the older one for
        # snapshots still answering from it.
        self._pins: OrderedDict[str, pin_index.Pins] = OrderedDict()
        self._pins_lock = threading.Lock()
        # main's ref file as last read: (its stat stamp, the commit, when read: monotonic)
        self._main_seen: tuple[tuple[int, int, int, int], str, float] | None = None
        self._at_main: MainSnapshot | None = None  # the newest, answered again while main stays

    # ------------------------------------------------------------------ plumbing

    def _local_gitdir(self) -> str | None:
        """The remote's git dir when it is a repository on this machine, else None."""
        with self._lock:
            if not self._gitdir_known:
                self._gitdir = None
                if not _looks_remote(self.remote) and Path(self.remote).is_dir():
                    try:
                        gitdir = git("-C", self.remote, "rev-parse", "--absolute-git-dir")
                    except GitError:
                        gitdir = ""
                    root = Path(self.remote).resolve()
                    # Only the repository AT remote, not one that happens to contain it.
                    if gitdir and Path(gitdir).resolve() in (root, root / ".git"):
                        self._gitdir = gitdir
                self._gitdir_known = True
            return self._gitdir

    def _ensure_clone(self) -> None:
        with self._lock:
            if self._cloned:
                return
            if (self.workdir / ".git").is_dir():
                url = git("-C", str(self.workdir), "remote", "get-url", "origin", check=False)
                if url != self.remote:
                    git("-C", str(self.workdir), "remote", "set-url", "origin", self.remote)
            else:
                if self.workdir.exists() and any(self.workdir.iterdir()):
                    raise PromotionError(
                        f"workdir {self.workdir} exists and is not a clone: remove it"
                    )
                self.workdir.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.workdir.parent / f".{self.workdir.name}.clone-{uuid.uuid4().hex[:8]}"
                try:
                    git(
                        "clone",
                        "-q",
                        "--no-tags",
                        "--no-checkout",
                        "-c",
                        "core.autocrlf=false",
                        "-c",
                        "commit.gpgsign=false",
                        self.remote,
                        str(tmp),
                    )
                    if self.workdir.exists():
                        self.workdir.rmdir()
                    os.replace(tmp, self.workdir)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
            self._cloned = True

    def _wgit(self, *args: str) -> str:
        return git(*args, cwd=self.workdir)

    def _fetch(self, *also: str) -> str:
        """Fetch origin's main (and the branches named ALSO, when they exist) into the workdir;
        return origin/main's commit. Only the refs named are asked for, so the cost does not grow
        with the number of promotion branches on the remote."""
        with self._lock:
            self._ensure_clone()
            refspecs = [f"+refs/heads/{MAIN}:refs/remotes/origin/{MAIN}"]
            # A pattern matches nothing rather than failing when the branch does not exist yet.
            refspecs += [f"+refs/heads/{b}*:refs/remotes/origin/{b}*" for b in also]
            self._wgit("fetch", "-q", "--prune", "--no-tags", "origin", *refspecs)
            return self._ref(f"refs/remotes/origin/{MAIN}")

    def _ref(self, ref: str) -> str:
        """The commit REF names in the workdir (read from the ref files; git when in doubt)."""
        found = read_ref(self.workdir / ".git", ref)
        return found or self._wgit("rev-parse", "--verify", f"{ref}^{{commit}}")

    def _object_git_args(self) -> list[str]:
        gitdir = self._local_gitdir()
        if gitdir is not None:
            return [f"--git-dir={gitdir}"]
        return ["-C", str(self.workdir)]

    def _read_at(self, commit: str, relpath: str) -> str | None:
        """The content of RELPATH at COMMIT (byte-exact), or None if there is no such file."""
        if not relpath or "\n" in relpath or relpath.startswith("/"):
            raise ValueError(f"bad path {relpath!r}")
        key = (commit, relpath)
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
        text = self._cat_file(commit, relpath)
        with self._lock:
            self._files[key] = text
            if len(self._files) > FILE_CACHE_SIZE:
                self._files.popitem(last=False)
        return text

    def _cat_file(self, commit: str, relpath: str) -> str | None:
        """One file: its directories down to the file's own are walked here, through trees kept
        by id; git then reads the file from that directory (`<tree>:<name>`), one round trip.
        git's own `commit:path` lookup reads every tree on the way each time, and an
        environment's directory holds an entry per service (10,000 entries: 2 ms a lookup)."""
        name = self._object_name(commit, relpath)
        return None if name is None else self._cat_blobs([name], [relpath])[0]

    def _object_name(self, commit: str, relpath: str) -> str | None:
        """`<tree id>:<file name>` for RELPATH at COMMIT, or None when a directory on the way is
        missing."""
        with self._lock:
            tree = self._roots.get(commit)
        if tree is None:
            found = self._objects(self._object_git_args(), [f"{commit}^{{tree}}"])[0]
            if found is None:
                return None
            tree = found[0]
            with self._lock:
                self._roots[commit] = tree
                while len(self._roots) > 64:
                    self._roots.popitem(last=False)
                self._keep_tree(tree, found[2])
        *folders, leaf = relpath.split("/")
        for folder in folders:
            raw = self._tree(tree)
            entry = _tree_entry(raw, folder, len(tree) // 2) if raw is not None else None
            if entry is None or entry[0] != b"40000":
                return None
            tree = entry[1]
        return f"{tree}:{leaf}"

    def _tree(self, oid: str) -> bytes | None:
        with self._lock:
            raw = self._trees.get(oid)
            if raw is not None:
                self._trees.move_to_end(oid)
                return raw
        found = self._objects(self._object_git_args(), [oid])[0]
        if found is None or found[1] != "tree":
            return None
        with self._lock:
            self._keep_tree(oid, found[2])
        return found[2]

    def _keep_tree(self, oid: str, raw: bytes) -> None:
        """Remember tree OID (call with the lock held); the oldest go past TREE_CACHE_BYTES."""
        if oid in self._trees:
            return
        self._trees[oid] = raw
        self._tree_bytes += len(raw)
        while self._tree_bytes > TREE_CACHE_BYTES and len(self._trees) > 1:
            _, old = self._trees.popitem(last=False)
            self._tree_bytes -= len(old)

    def _cat_files(self, commit: str, relpaths: list[str]) -> list[str | None]:
        """The content of each of RELPATHS at COMMIT (see _cat_pairs)."""
        return self._cat_pairs([(commit, relpath) for relpath in relpaths])

    def _cat_pairs(self, pairs: list[tuple[str, str]]) -> list[str | None]:
        """The content of each (commit, relpath) of PAIRS, read through the long-lived
        `git cat-file --batch` (no process per read)."""
        if len({commit for commit, _ in pairs}) == 1 and len(pairs) <= 64:
            # A few files of one commit (a service's values files): walk the trees kept by id.
            walked = [self._object_name(commit, relpath) for commit, relpath in pairs]
            names = [n or f"{c}:{r}" for n, (c, r) in zip(walked, pairs, strict=True)]
        else:
            names = [f"{commit}:{relpath}" for commit, relpath in pairs]
        return self._cat_blobs(names, [relpath for _, relpath in pairs])

    def _cat_blobs(self, names: list[str], relpaths: list[str]) -> list[str | None]:
        """The text of each object of NAMES (a blob id, or commit:path), None when missing or
        not a file; RELPATHS name them in errors."""
        found: list[str | None] = []
        objects = self._objects(self._object_git_args(), names)
        for relpath, obj in zip(relpaths, objects, strict=True):
            if obj is None or obj[1] != "blob":
                found.append(None)  # missing, or a directory
                continue
            try:
                found.append(obj[2].decode("utf-8"))
            except UnicodeDecodeError:
                raise PromotionError(f"{relpath} on {MAIN} is not UTF-8 text") from None
        return found

    def _objects(self, where: list[str], names: list[str]) -> list[tuple[str, str, bytes] | None]:
        """(id, type, content) of each of NAMES in the repository git's options WHERE name (None
        when missing): through the long-lived reader when WHERE is where reads go."""
        with self._lock:
            if where == self._object_git_args():
                if self._reader is None or self._reader.args != tuple(where):
                    self._reader = CatFile(*where)
                reader = self._reader
            else:
                reader = None
        if reader is None:
            return _objects(where, names)
        return reader.read(names)

    def prefetch(self, commit: str, relpaths: list[str]) -> None:
        """Read RELPATHS at COMMIT in one git call, so that the reads that follow are answered
        from memory (the board reads a whole page of values files this way)."""
        with self._lock:
            wanted = [p for p in dict.fromkeys(relpaths) if (commit, p) not in self._files]
        if not wanted:
            return
        for relpath, text in zip(wanted, self._cat_files(commit, wanted), strict=True):
            with self._lock:
                self._files[(commit, relpath)] = text
                if len(self._files) > FILE_CACHE_SIZE:
                    self._files.popitem(last=False)

    def _parse_policy(self, text: str) -> Policy:
        with self._lock:
            # Keyed by content: a merge that moves main rarely touches ferry.yaml.
            if self._policy_cache is not None and self._policy_cache[0] == text:
                return self._policy_cache[1]
        policy = load_policy(text, POLICY_FILE)
        with self._lock:
            self._policy_cache = (text, policy)
        return policy

    def _policy_at(self, commit: str) -> Policy:
        """ferry.yaml at COMMIT, or PolicyError naming the file, line and reason."""
        text = self._read_at(commit, POLICY_FILE)
        if text is None:
            raise PolicyError(
                f"{POLICY_FILE} not found on {MAIN} of {self.remote}: run `ferry init` or add it"
            )
        return self._parse_policy(text)

    def effective_policy(self, commit: str) -> tuple[Policy, str | None]:
        """The policy in force at COMMIT: its ferry.yaml, or when that is refused, the newest
        earlier one on main that was valid, with the refusal (file, line, reason)."""
        with self._lock:
            if commit in self._effective:
                return self._effective[commit]
        try:
            found: tuple[Policy, str | None] = (self._policy_at(commit), None)
        except PolicyError as e:
            found = (self._last_valid_policy(commit, e), str(e))
        with self._lock:
            self._effective[commit] = found
            while len(self._effective) > 64:
                self._effective.popitem(last=False)
        return found

    def _last_valid_policy(self, commit: str, error: PolicyError) -> Policy:
        history = git(
            *self._object_git_args(),
            "log",
            "--first-parent",
            "--format=%H",
            "--max-count=200",
            commit,
            "--",
            POLICY_FILE,
        ).split()
        for older in history:
            if older == commit:
                continue
            try:
                return self._policy_at(older)
            except PolicyError:
                continue
        raise error  # no valid policy ever: nothing to fall back on

    # ------------------------------------------------------------------ reading main

    def main_commit(self) -> str:
        """The commit `main` points to on the remote."""
        gitdir = self._local_gitdir()
        if gitdir is not None:
            found = self._main_ref(gitdir)
            if found is not None:
                return found
            return git(
                f"--git-dir={gitdir}", "rev-parse", "--verify", f"refs/heads/{MAIN}^{{commit}}"
            )
        return self._fetch()

    def _main_ref(self, gitdir: str) -> str | None:
        """main's commit from its loose ref file, read again only when the file looks changed
        (git replaces it whole, by rename: a new inode and new times) or MAIN_REF_TRUST_S after
        it was last read (a bound on a change that coarse file times and a reused inode could
        hide); a packed or missing ref is read every time (read_ref)."""
        ref = f"refs/heads/{MAIN}"
        try:
            st = os.stat(os.path.join(gitdir, ref))
        except OSError:
            return read_ref(Path(gitdir), ref)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        now = time.monotonic()
        seen = self._main_seen
        if seen is not None and seen[0] == stamp and now - seen[2] < MAIN_REF_TRUST_S:
            return seen[1]
        found = read_ref(Path(gitdir), ref)
        if found is not None:
            self._main_seen = (stamp, found, now)
        return found

    def read_at(self, commit: str, relpath: str) -> str | None:
        """RELPATH's content at COMMIT, or None when there is no such file."""
        return self._read_at(commit, relpath)

    def read_main(self, relpath: str) -> str | None:
        """RELPATH's content on main, or None when main has no such file."""
        return self._read_at(self.main_commit(), relpath)

    def policy(self) -> Policy:
        """The policy in force on main (re-read only when main moves)."""
        return self.effective_policy(self.main_commit())[0]

    def at_main(self) -> MainSnapshot:
        """Main as it is now, read through one commit: several questions, one `rev-parse`. The
        same snapshot while main stays at that commit, with what it has read so far (a commit's
        content never changes)."""
        commit = self.main_commit()
        snapshot = self._at_main
        if snapshot is None or snapshot.commit != commit:
            snapshot = self._at_main = MainSnapshot(self, commit)
        return snapshot

    def values_exists(self, service: str, env: str) -> bool:
        return self.at_main().values_exists(service, env)

    def pinned(self, service: str, env: str) -> str | None:
        """The digest SERVICE runs in ENV according to main; None if absent or empty."""
        return self.at_main().pinned(service, env)

    def repository(self, service: str, env: str) -> str | None:
        """The image repository of SERVICE in ENV according to main."""
        return self.at_main().repository(service, env)

    def pin_history(self, service: str, env: str, limit: int = 100) -> list[tuple[str, str]]:
        """(commit, digest) for each change of what SERVICE pins in ENV on main, newest first:
        the values file's history along main's first parents (the merges of pull requests)."""
        commit = self.main_commit()
        policy = self._policy_at(commit)
        path = policy.values_path(env, service)
        log = git(
            *self._object_git_args(),
            "log",
            "--first-parent",
            "--format=%H",
            f"-n{limit}",
            commit,
            "--",
            path,
        )
        history: list[tuple[str, str]] = []
        for sha in log.split():
            text = self._read_at(sha, path)
            digest = _read_value(text, policy.digest_key, path) if text is not None else None
            if digest and (not history or history[-1][1] != digest):
                history.append((sha, digest))
        return history

    def pin_changes(
        self, services: set[str] | None = None, envs: set[str] | None = None
    ) -> dict[tuple[str, str], list[PinChange]]:
        """Every change of what each service pins in each environment (of SERVICES and ENVS, if
        given) along main's first parents, oldest first, with the time it landed on main (the
        committer time of the first-parent commit: a pull request's merge). One `git log` and one
        `git cat-file` for the whole repository, whatever the number of services."""
        commit = self.main_commit()
        policy = self.effective_policy(commit)[0]
        template = policy.layout.values_path
        pattern = pin_index.template_regex(template)
        glob = template.replace("{env}", "*").replace("{service}", "*")
        log = git(
            *self._object_git_args(),
            "log",
            "--first-parent",
            "--diff-merges=first-parent",
            "--no-renames",
            "--reverse",
            "--format=%x01%H %ct",
            "--name-only",
            commit,
            "--",
            f":(glob){glob}",
        )
        known = set(policy.env_names())
        touched: list[tuple[str, datetime, str, str, str]] = []
        for block in log.split("\x01")[1:]:
            head, *names = block.strip().split("\n")
            sha, seconds = head.split()
            at = datetime.fromtimestamp(int(seconds), UTC)
            for name in names:
                match = pattern.match(name.strip())
                if not match or match["env"] not in known:
                    continue
                service, env = match["service"], match["env"]
                if (services is None or service in services) and (envs is None or env in envs):
                    touched.append((sha, at, name.strip(), service, env))
        texts = self._cat_pairs([(sha, path) for sha, _, path, _, _ in touched]) if touched else []
        out: dict[tuple[str, str], list[PinChange]] = {}
        last: dict[tuple[str, str], str | None] = {}
        for (sha, at, path, service, env), text in zip(touched, texts, strict=True):
            # Parsing YAML is the cost here: a file without a digest in it pins nothing.
            try:
                digest = (
                    _read_value(text, policy.digest_key, path) or None
                    if text and DIGEST.search(text)
                    else None
                )
            except ValueError:
                continue  # a values file main could not be read at that commit: no change
            key = (service, env)
            if digest != last.get(key):
                last[key] = digest
                if digest is not None:
                    out.setdefault(key, []).append(PinChange(sha, digest, at))
        return out

    def pinned_before(self, service: str, env: str, digest: str) -> str | None:
        """The digest SERVICE pinned in ENV before DIGEST was last pinned there (None when
        DIGEST was never pinned, or nothing was before it)."""
        pins = [d for _, d in self.pin_history(service, env)]
        if digest not in pins:
            return None
        older = pins[pins.index(digest) + 1 :]
        return older[0] if older else None

    def services(self) -> list[str]:
        """Services that have a values file on main for at least one environment."""
        commit = self.main_commit()
        return self.pins(commit).services(self.effective_policy(commit)[0].env_names())

    def _list(self, commit: str) -> Iterator[tuple[str, str]]:
        """(path, blob id) of every file at COMMIT (one `git ls-tree -r`), as they come."""
        out = git_bytes(*self._object_git_args(), "ls-tree", "-r", "-z", "--full-tree", commit)
        at = 0
        while at < len(out):
            end = out.find(b"\0", at)
            end = len(out) if end < 0 else end
            meta, _, name = out[at:end].partition(b"\t")
            at = end + 1
            fields = meta.split()
            if len(fields) == 3 and fields[1] == b"blob":
                yield name.decode("utf-8", "surrogateescape"), fields[2].decode()

    def pins(self, commit: str) -> pin_index.Pins:
        """What every values file pins at COMMIT (a commit of main), kept in memory: built once
        from a listing of the tree, then carried to each new main by re-reading only the values
        files `git diff-tree` says changed (see adapters/pins.py)."""
        layout = self._pin_layout(commit)
        with self._pins_lock:
            found = self._pins.get(commit)
            if found is not None and found.layout == layout:
                return found
            base = next((p for p in reversed(self._pins.values()) if p.layout == layout), None)
            made = None
            if base is not None:
                try:
                    diff = git_bytes(
                        *self._object_git_args(),
                        "diff-tree",
                        "-r",
                        "-z",
                        "--no-renames",
                        base.commit,
                        commit,
                    )
                    made = pin_index.moved(base, commit, pin_index.changed(diff), self._read_ids)
                except GitError:
                    made = None  # the old commit is gone (a forced push, a gc): read it all
            if made is None:
                made = self._build_pins(commit, layout)
            self._pins[commit] = made
            self._pins.move_to_end(commit)
            while len(self._pins) > 2:
                self._pins.popitem(last=False)
            return made

    def pins_read(self, commit: str) -> pin_index.Pins | None:
        """The pins at COMMIT when they are in memory already, else None (nothing is read)."""
        layout = self._pin_layout(commit)
        with self._pins_lock:
            found = self._pins.get(commit)
        return found if found is not None and found.layout == layout else None

    def _pin_layout(self, commit: str) -> pin_index.Layout:
        policy = self.effective_policy(commit)[0]
        return pin_index.Layout(policy.layout.values_path, policy.digest_key, policy.repository_key)

    def _build_pins(self, commit: str, layout: pin_index.Layout) -> pin_index.Pins:
        if not self.keep_pins:
            return pin_index.build(commit, layout, self._list(commit), self._read_ids)[0]
        # What an earlier process read is kept by blob id beside the workdir, with the pins of
        # the last commit it read whole: at that commit again, no tree is listed.
        kept = self.workdir.parent / f"{self.workdir.name}.pins"
        last = pin_index.load_pins(kept, layout, commit)
        if last is not None:
            return last
        known = pin_index.load(kept, layout)
        made, by_oid = pin_index.build(commit, layout, self._list(commit), self._read_ids, known)
        pin_index.save(kept, layout, by_oid, made)
        return made

    def _read_ids(self, names: list[str]) -> list[tuple[str, str, bytes] | None]:
        return self._objects(self._object_git_args(), names)

    # ------------------------------------------------------------------ writing

    def _promotion_reads(
        self, where: list[str], base: str, parts: list[str], ref: str
    ) -> tuple[list[bytes], tuple[str, str, bytes] | None, tuple[str, str, bytes] | None]:
        """For a promotion of the file PARTS at BASE, read in the repository WHERE names: the
        raw trees along its directories (root first), the file (None when missing or not a
        regular file) and REF (the branch as the remote has it).

        Trees come from those kept by id where they can: the tree a promotion writes is main's
        own once it is merged, so the next promotion does not read an environment's directory
        of 10,000 entries again. The trees not kept are read in one round trip, by id below the
        last one kept (git does not walk the big directory to find them either), then the file
        by id with REF in another; with every tree kept, that one alone. Raises PromotionError
        when a directory on the way is missing."""
        width = len(base) // 2
        trees: list[bytes] = []
        with self._lock:
            tree = self._roots.get(base)  # the id of the first tree not kept, once walked
            while tree is not None:
                raw = self._trees.get(tree)
                if raw is None:
                    break
                self._trees.move_to_end(tree)
                trees.append(raw)
                if len(trees) == len(parts):
                    tree = None
                    break
                entry = _tree_entry(raw, parts[len(trees) - 1], width)
                if entry is None or entry[0] != b"40000":
                    raise _no_values_file("/".join(parts))
                tree = entry[1]
        kept = len(trees)
        if kept < len(parts):
            start = tree or base
            names = [tree or f"{base}^{{tree}}"]
            names += [f"{start}:{'/'.join(parts[kept:i])}" for i in range(kept + 1, len(parts))]
            for i, found in enumerate(self._objects(where, names), start=kept):
                if found is None or found[1] != "tree":
                    raise _no_values_file("/".join(parts))
                with self._lock:
                    self._keep_tree(found[0], found[2])
                    if i == 0:
                        self._roots[base] = found[0]
                        while len(self._roots) > 64:
                            self._roots.popitem(last=False)
                trees.append(found[2])
        entry = _tree_entry(trees[-1], parts[-1], width)
        if entry is None or entry[0] not in (b"100644", b"100755"):
            if entry is not None and entry[0] == b"120000":
                raise PromotionError(f"{'/'.join(parts)} on {MAIN} is not a regular file")
            return trees, None, self._objects(where, [ref])[0]
        blob, pushed = self._objects(where, [entry[1], ref])
        return trees, blob, pushed

    def prepare_promotion(
        self, *, branch: str, service: str, env: str, digest: str, message: str
    ) -> str | None:
        """Push BRANCH = origin/main + the one-line pin of DIGEST; return its commit.

        None when main already pins DIGEST. The branch is force-pushed: it belongs to this
        promotion alone, and a redelivery redoes it (an identical change is not pushed again).
        """
        try:
            check_digest(digest, "digest")
            check_label(service, "service")
            check_label(env, "environment")
        except ValueError as exc:
            raise PromotionError(str(exc)) from None
        if not message.strip():
            raise PromotionError("a promotion commit needs a message")
        if branch in (MAIN, "HEAD") or branch.startswith("-") or not _branch_name_ok(branch):
            raise PromotionError(f"bad promotion branch name {branch!r}")

        with self._lock:
            local = self._local_gitdir()
            if local is not None and takes_plain_ref_updates(local, branch):
                # A repository on this machine: write into it, move the branch by update-ref.
                gitdir, where, ref = Path(local), [f"--git-dir={local}"], f"refs/heads/{branch}"
                base = self.main_commit()
            else:
                base = self._fetch(branch)
                gitdir, where = self.workdir / ".git", ["-C", str(self.workdir)]
                ref = f"refs/remotes/origin/{branch}"
            policy = self.effective_policy(base)[0]
            policy.environment(env)
            path = policy.values_path(env, service)
            parts = path.split("/")
            id_len = len(base)
            trees, blob, pushed = self._promotion_reads(where, base, parts, ref)
            if blob is None or blob[1] != "blob":
                raise _no_values_file(path)
            try:
                text = blob[2].decode("utf-8")
            except UnicodeDecodeError:
                raise PromotionError(f"{path} on {MAIN} is not UTF-8 text") from None
            if read_value(text, policy.digest_key, source=path) == digest:
                return None
            new = set_digest(text, policy.digest_key, digest, source=path).encode()
            oid = write_object(gitdir, "blob", new, id_len=id_len)
            for raw, name in zip(reversed(trees), reversed(parts), strict=True):
                content = _replace_entry(raw, name, oid, id_len, path)
                oid = write_object(gitdir, "tree", content, id_len=id_len)
                self._keep_tree(oid, content)  # main's own tree once this promotion is merged
            if pushed is not None and pushed[1] == "commit":
                same = commit_fields(pushed[2])
                if same == (oid, [base], clean_message(message)):
                    return pushed[0]  # this change, on this main, is already there
            head = write_commit(gitdir, oid, [base], message, cwd=gitdir)
            if ref.startswith("refs/heads/"):
                git(*where, "update-ref", "-m", "ferry: promotion", ref, head)
            else:
                self._wgit("push", "-q", "--force", "origin", f"{head}:refs/heads/{branch}")
            return head


def _objects(where: list[str], names: list[str]) -> list[tuple[str, str, bytes] | None]:
    """(id, type, content) of each of NAMES in the repository git's options WHERE name, or None
    for a missing one; read by one `git cat-file --batch`."""
    if any("\n" in n for n in names):
        raise ValueError(f"bad object name in {names!r}")
    request = "".join(f"{n}\n" for n in names).encode()
    out = git_bytes(*where, "cat-file", "--batch", input=request)
    found: list[tuple[str, str, bytes] | None] = []
    at = 0
    for _ in names:
        end = out.index(b"\n", at)
        fields = out[at:end].split()
        at = end + 1
        if len(fields) != 3 or fields[1] == b"missing":
            found.append(None)
            continue
        size = int(fields[2])
        found.append((fields[0].decode(), fields[1].decode(), out[at : at + size]))
        at += size + 1  # each object is followed by a newline
    return found


_SIMPLE_BRANCH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")


def _branch_name_ok(branch: str) -> bool:
    """Is BRANCH a valid branch name? The usual ones are checked here; others by git."""
    if (
        _SIMPLE_BRANCH.match(branch)
        and ".." not in branch
        and not any(p.endswith((".", ".lock")) for p in branch.split("/"))
    ):
        return True
    return git("check-ref-format", "--branch", branch, check=False) == branch


_TREE_MODES = (b"40000", b"100644", b"100755", b"120000", b"160000")


def _tree_entry(tree: bytes, name: str, width: int, *, start: bool = False) -> Any:
    """(mode, id) of entry NAME in TREE (git's binary tree format), found by a search of the
    bytes rather than a parse of every entry (or with START, (mode, where its id starts)); None
    when there is none. A match counts only where an entry can start (the buffer's start, or
    just after an earlier entry's id) with a mode."""
    needle = b" " + name.encode() + b"\0"
    at = tree.find(needle)
    while at >= 0:
        for mode in _TREE_MODES:
            begin = at - len(mode)
            if (
                begin >= 0
                and tree[begin:at] == mode
                and (begin == 0 or (begin > width and tree[begin - width - 1] == 0))
            ):
                end = at + len(needle)
                return (mode, end) if start else (mode, tree[end : end + width].hex())
        at = tree.find(needle, at + 1)
    return None


def _no_values_file(path: str) -> PromotionError:
    return PromotionError(
        f"{path} does not exist on {MAIN}: add the service with `ferry init` or by hand"
    )


def _replace_entry(tree: bytes, name: str, oid: str, id_len: int, path: str) -> bytes:
    """TREE (git's binary tree format) with the entry NAME pointing at OID; its mode, its place
    and every other entry stay as they are."""
    width = id_len // 2
    found = _tree_entry(tree, name, width, start=True)
    if found is None:
        raise _no_values_file(path)
    mode, at = found
    if mode not in (b"100644", b"100755", b"40000"):
        raise PromotionError(f"{path} on {MAIN} is not a regular file")
    return tree[:at] + raw_id(oid) + tree[at + width :]


@functools.lru_cache(maxsize=1024)
def _read_value(text: str, key: str, source: str) -> str | None:
    """read_value, remembered: the same file at the same commit parses the same."""
    return read_value(text, key, source=source)


class MainSnapshot:
    """The GitOps repository at one commit of main: answers never mix two commits."""

    def __init__(self, repo: GitOpsRepo, commit: str) -> None:
        self.repo = repo
        self.commit = commit
        # What every values file pins at this commit (GitOpsRepo.pins), taken at the first
        # question: the digest and the repository come from it; other keys, and files it does
        # not answer for, are read.
        self._index: pin_index.Pins | None = None
        self._envs: frozenset[str] = frozenset()
        self._many = False  # asked about many services (prefetch): read main's pins whole
        # Values files read ahead for this snapshot (prefetch): kept as long as it is.
        self._texts: dict[str, str | None] = {}
        self._paths: dict[tuple[str, str], str] = {}  # (env, service) -> values file
        self._read: dict[tuple[str, str], str | None] = {}  # (path, key) -> value
        self._env_policies: dict[tuple[str, str], EnvironmentPolicy] = {}
        self._effective: tuple[Policy, str | None] | None = None

    @property
    def policy(self) -> Policy:
        """The policy in force: ferry.yaml at this commit, or the last valid one before it."""
        return self._policy()[0]

    @property
    def policy_error(self) -> str | None:
        """Why ferry.yaml at this commit is refused (file:line: reason), or None."""
        return self._policy()[1]

    def _policy(self) -> tuple[Policy, str | None]:
        # Kept by the snapshot (its commit's answer never changes): every decision asks for it,
        # and `ferry status` decides every cell; the repository's cache takes a lock per ask.
        found = self._effective
        if found is None:
            found = self._effective = self.repo.effective_policy(self.commit)
        return found

    def _pins(self) -> pin_index.Pins | None:
        """This commit's pins (GitOpsRepo.pins); None for a command of the CLI that asked
        about no more than a few services (its files are read), unless they are read already."""
        index = self._index
        if index is None:
            self._envs = frozenset(self.policy.env_names())
            if self.repo.keep_pins and not self._many:
                return self.repo.pins_read(self.commit)
            index = self._index = self.repo.pins(self.commit)
        return index

    def _entry(self, service: str, env: str) -> pin_index.Entry | None:
        """SERVICE's pins in ENV from the index (UNSURE: read the file); None when there is no
        values file. A name that is not a DNS label, or an environment ferry.yaml does not
        define, is a PolicyError, as reading the file would be."""
        index = self._pins()
        entry = index.entry(env, service) if index is not None else pin_index.UNSURE
        if entry is None or env not in self._envs:
            self._path(service, env)
        return entry

    def _path(self, service: str, env: str) -> str:
        path = self._paths.get((env, service))
        if path is None:
            policy = self.policy
            path = policy.values_path(env, service)
            policy.environment(env)  # unknown environment: PolicyError
            self._paths[(env, service)] = path
        return path

    def _values(self, service: str, env: str) -> tuple[str, str | None]:
        path = self._path(service, env)
        if path in self._texts:
            return path, self._texts[path]
        return path, self.repo._read_at(self.commit, path)

    def _value(self, service: str, env: str, key: str) -> str | None:
        """The string at KEY in SERVICE's values file for ENV (remembered by this snapshot)."""
        policy = self.policy
        if key in (policy.digest_key, policy.repository_key):
            entry = self._entry(service, env)
            if entry is None:
                return None
            if not isinstance(entry, pin_index.Unsure):
                return entry[0] if key == policy.digest_key else entry[1]
        path, text = self._values(service, env)
        if text is None:
            return None
        memo = (path, key)
        if memo not in self._read:
            self._read[memo] = _read_value(text, key, path) or None
        return self._read[memo]

    def contains(self, commit: str) -> bool:
        """Is COMMIT part of main's history at this snapshot (a merge that landed)?"""
        try:
            git(*self.repo._object_git_args(), "merge-base", "--is-ancestor", commit, self.commit)
        except GitError:
            return False  # not an ancestor, or a commit this clone never saw
        return True

    def values_exists(self, service: str, env: str) -> bool:
        entry = self._entry(service, env)
        if isinstance(entry, pin_index.Unsure):
            return self._values(service, env)[1] is not None
        return entry is not None

    def pinned(self, service: str, env: str) -> str | None:
        """The digest SERVICE runs in ENV; None if absent or empty."""
        index = self._pins()
        entry = index.entry(env, service) if index is not None else None
        if entry is not None and env in self._envs and not isinstance(entry, pin_index.Unsure):
            return entry[0]  # the common case, asked tens of thousands of times by status
        return self._value(service, env, self.policy.digest_key)

    def environment(self, env: str, service: str) -> EnvironmentPolicy:
        """ENV's policy for SERVICE (Policy.environment), remembered by this snapshot: a
        decision asks for it several times, and `ferry status` decides every cell."""
        found = self._env_policies.get((env, service))
        if found is None:
            found = self._env_policies[(env, service)] = self.policy.environment(env, service)
        return found

    def repository(self, service: str, env: str) -> str | None:
        """The image repository of SERVICE in ENV."""
        return self._value(service, env, self.policy.repository_key)

    def prefetch(self, services: list[str]) -> None:
        """Make the reads about SERVICES that follow answer from memory (a page of the board,
        or every service for `ferry status`): the digests and repositories are in the index;
        the few files it does not answer for are read in one pass of `git cat-file --batch`."""
        self._many = self._many or len(services) > PREFETCH_MANY
        index = self._pins()
        envs = self.policy.env_names()
        wanted = [
            path
            for s in services
            for e in envs
            if (index is None or isinstance(index.entry(e, s), pin_index.Unsure))
            and (path := self._path(s, e)) not in self._texts
        ]
        if wanted:
            self._texts.update(zip(wanted, self.repo._cat_files(self.commit, wanted), strict=True))
