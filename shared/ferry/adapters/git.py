"""Run git as a subprocess: the one place that knows how Ferry calls git."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Commits made by Ferry carry this identity unless the environment sets another.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "Ferry",
    "GIT_AUTHOR_EMAIL": "ferry@localhost",
    "GIT_COMMITTER_NAME": "Ferry",
    "GIT_COMMITTER_EMAIL": "ferry@localhost",
}


class GitError(RuntimeError):
    """A git command failed; the message carries git's own stderr."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        self.args_ = args
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(args)} failed ({returncode}): {self.stderr}")


def _credential_env(env: dict[str, str]) -> dict[str, str]:
    """Hand FERRY_FORGE_TOKEN to git through a credential helper that reads it from git's own
    environment when a forge asks: the token is never in a command line, a remote URL, a
    `.git/config` or a credential store (the empty helper first drops any configured store)."""
    if not env.get("FERRY_FORGE_TOKEN"):
        return {}
    user = "oauth2" if env.get("FERRY_FORGE") == "gitlab" else "x-access-token"
    helper = (
        '!f() { test "$1" = get || exit 0; echo username=' + user + "; "
        'echo "password=$FERRY_FORGE_TOKEN"; }; f'
    )
    n = int(env.get("GIT_CONFIG_COUNT") or 0)
    return {
        "GIT_CONFIG_COUNT": str(n + 2),
        f"GIT_CONFIG_KEY_{n}": "credential.helper",
        f"GIT_CONFIG_VALUE_{n}": "",
        f"GIT_CONFIG_KEY_{n + 1}": "credential.helper",
        f"GIT_CONFIG_VALUE_{n + 1}": helper,
    }


def git_bytes(
    *args: str, cwd: str | Path | None = None, check: bool = True, input: bytes | None = None
) -> bytes:
    """Run `git ARGS` in CWD and return its stdout byte for byte (file contents keep their
    CRLFs and final newlines)."""
    env = {**_IDENTITY, **os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    env.update(_credential_env(env))
    proc = subprocess.run(
        ["git", *args],
        cwd=str(cwd) if cwd is not None else None,
        capture_output=True,
        env=env,
        input=input,
    )
    if check and proc.returncode != 0:
        raise GitError(list(args), proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


def git(
    *args: str, cwd: str | Path | None = None, check: bool = True, input: str | None = None
) -> str:
    """Run `git ARGS` in CWD and return its stdout as text, without the final newline."""
    out = git_bytes(
        *args, cwd=cwd, check=check, input=input.encode() if input is not None else None
    )
    return out.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")


# ---------------------------------------------------------------------------- objects in-process
#
# A promotion is one changed blob, the trees above it and a commit: a few hundred bytes that git
# stores as zlib-compressed loose objects named by their hash. Writing them here saves a git
# process per object (hash-object, mktree, commit-tree); reading still goes through
# `git cat-file --batch`, which also reads packed objects.


def _hasher(object_id_len: int) -> Callable[[bytes], Any]:
    return hashlib.sha256 if object_id_len == 64 else hashlib.sha1


# Loose objects at least this large are stored rather than compressed (zlib level 0), unless
# the repository sets a level: an environment's directory at 10,000 services is a 360 kB tree,
# which takes 5 ms to compress at level 1 (git's default for loose objects) and 0.2 ms to store;
# every reader (git merge-tree, `git cat-file`) inflates it in a tenth of the time too. It takes
# about half as much room again on disk, until `git gc` packs it (at pack.compression).
STORED_FROM = 64 << 10
_LEVELS: dict[str, tuple[int | None, int | None]] = {}  # gitdir -> (config mtime, level)


def loose_compression(gitdir: str | Path) -> int | None:
    """The zlib level GITDIR's configuration asks for loose objects: core.looseCompression, else
    core.compression (-1 is zlib's default, 0 none, 9 the smallest), as git reads them (the
    repository's, the user's and the system's files); None when neither is set. Asked of git once,
    and again when the repository's config file changes."""
    config = Path(gitdir) / "config"
    try:
        mtime: int | None = config.stat().st_mtime_ns
    except OSError:
        mtime = None
    known = _LEVELS.get(str(gitdir))
    if known is not None and known[0] == mtime:
        return known[1]
    out = git(
        f"--git-dir={gitdir}",
        "config",
        "--get-regexp",
        r"^core\.(loose)?compression$",
        check=False,
    )
    found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    value = found.get("core.loosecompression", found.get("core.compression"))
    level = int(value) if value is not None and re.fullmatch(r"-?\d", value.strip()) else None
    _LEVELS[str(gitdir)] = (mtime, level)
    return level


def write_object(gitdir: str | Path, kind: str, content: bytes, *, id_len: int = 40) -> str:
    """Store CONTENT as a loose object of KIND (blob, tree, commit) in GITDIR; return its id.
    ID_LEN is the length of the repository's object ids (64 for SHA-256 repositories). Compressed
    at the level the repository sets (`loose_compression`), else at git's default (1), or stored
    uncompressed from STORED_FROM bytes on."""
    raw = f"{kind} {len(content)}\0".encode() + content
    oid = _hasher(id_len)(raw).hexdigest()
    folder = Path(gitdir) / "objects" / oid[:2]
    target = folder / oid[2:]
    if target.exists():
        # The same content is the same object: nothing to write. Its time is brought up to now,
        # as git does, so that a `git gc` pruning old unreachable objects keeps it.
        with contextlib.suppress(OSError):
            os.utime(target)
        return oid
    level = loose_compression(gitdir)
    if level is None:
        level = 0 if len(raw) >= STORED_FROM else 1
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="tmp_obj_")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(zlib.compress(raw, level))
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return oid


def read_loose(gitdir: str | Path, oid: str) -> tuple[str, bytes] | None:
    """(kind, content) of object OID when GITDIR holds it as a loose object, read without a
    process; None when it does not (packed, elsewhere, or unreadable): then ask git."""
    if not OBJECT_ID.match(oid):
        return None
    try:
        raw = zlib.decompress((Path(gitdir) / "objects" / oid[:2] / oid[2:]).read_bytes())
    except (OSError, zlib.error):
        return None
    if _hasher(len(oid))(raw).hexdigest() != oid:
        return None  # a damaged file: let git say so
    header, _, content = raw.partition(b"\0")
    kind, _, size = header.decode("ascii", "replace").partition(" ")
    if not size.isdigit() or int(size) != len(content):
        return None
    return kind, content


def commit_fields(commit: bytes) -> tuple[str, list[str], str]:
    """(tree, parents, message) of a raw commit object."""
    head, _, message = commit.decode("utf-8", "replace").partition("\n\n")
    tree, parents = "", []
    for line in head.split("\n"):
        key, _, value = line.partition(" ")
        if key == "tree":
            tree = value
        elif key == "parent":
            parents.append(value)
    return tree, parents, clean_message(message)


def raw_id(oid: str) -> bytes:
    return bytes.fromhex(oid)


# One entry of a raw tree: "<mode> <name>\0<id>", the id 20 bytes (SHA-1) or 32 (SHA-256).
_TREE_ENTRY = {
    width: re.compile(rb"([0-7]{5,6}) ([^\0]+)\0(.{%d})" % width, re.DOTALL) for width in (20, 32)
}
_DIR_MODE = b"40000"


def _tree_entries(raw: bytes, width: int) -> list[tuple[bytes, bytes, bytes]] | None:
    """(mode, name, raw id) of each entry of the raw tree RAW, in its order; None when RAW does
    not read as a tree from end to end."""
    out: list[tuple[bytes, bytes, bytes]] = []
    at = 0
    for match in _TREE_ENTRY[width].finditer(raw):
        if match.start() != at:
            return None
        out.append(match.groups())  # type: ignore[arg-type]
        at = match.end()
    return out if at == len(raw) else None


def merge_trees(gitdir: str | Path, fork: str, head: str, base: str) -> str | None:
    """The tree of a three-way merge of HEAD's changes since FORK (their merge base) into BASE,
    written in-process as loose objects; None when git must merge (then `git merge-tree`).

    Only the merges every merge strategy agrees on are made here: each entry HEAD changed
    (same name, same kind: a file stays a file, a directory a directory) that BASE left as FORK
    had it is taken from HEAD; an entry both changed the same way, or only BASE changed, is
    BASE's; a directory both changed is merged entry by entry. HEAD adding or removing an entry,
    both changing one file differently (a conflict, or lines git would merge), HEAD changing
    what BASE removed, a tree that is not loose: None. Rename detection cannot change such a
    result (HEAD renames nothing; what BASE renamed, HEAD left alone). Every tree written keeps
    BASE's entries in BASE's order with some ids (and file modes) replaced, so its id is the one
    git would give it."""
    if head in (fork, base):
        return base
    if base == fork:
        return head
    width = len(base) // 2
    trees = []
    for tree in (fork, head, base):
        found = read_loose(gitdir, tree)
        entries = _tree_entries(found[1], width) if found and found[0] == "tree" else None
        if entries is None:
            return None
        trees.append(entries)
    was = {name: (mode, oid) for mode, name, oid in trees[0]}
    now = {name: (mode, oid) for mode, name, oid in trees[1]}
    if was.keys() != now.keys():
        return None  # HEAD added or removed an entry here
    merged: list[bytes] = []
    kept = set()
    for mode, name, oid in trees[2]:
        kept.add(name)
        theirs = (mode, oid)
        before, mine = was.get(name), now.get(name)
        if before is None or mine is None or mine in (before, theirs):
            pass  # BASE added it, HEAD left it alone, or both made the same change
        elif theirs == before and (mine[0] == _DIR_MODE) == (mode == _DIR_MODE):
            mode, oid = mine
        elif mode == before[0] == mine[0] == _DIR_MODE:
            sub = merge_trees(gitdir, before[1].hex(), mine[1].hex(), oid.hex())
            if sub is None:
                return None
            oid = raw_id(sub)
        else:
            return None
        merged.append(mode + b" " + name + b"\0" + oid)
    if any(now[name] != was[name] for name in was.keys() - kept):
        return None  # HEAD changed what BASE removed
    return write_object(gitdir, "tree", b"".join(merged), id_len=len(base))


def clean_message(message: str) -> str:
    """MESSAGE as `git commit -m` stores it: trailing spaces cut, runs of blank lines made one,
    no blank lines at either end, one final newline."""
    out: list[str] = []
    for line in message.replace("\r\n", "\n").split("\n"):
        line = line.rstrip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def _ident(role: str) -> str:
    env = {**_IDENTITY, **os.environ}
    name = env[f"GIT_{role}_NAME"].replace("<", "").replace(">", "").replace("\n", " ").strip()
    email = env[f"GIT_{role}_EMAIL"].replace("<", "").replace(">", "").replace("\n", " ").strip()
    now = time.time()
    offset = time.localtime(now).tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    offset = abs(offset)
    return f"{name} <{email}> {int(now)} {sign}{offset // 60:02d}{offset % 60:02d}"


def write_commit(
    gitdir: str | Path, tree: str, parents: Sequence[str], message: str, cwd: str | Path
) -> str:
    """A commit of TREE on PARENTS with MESSAGE (cleaned as `git commit -m` does), by Ferry's
    identity (or GIT_AUTHOR_*/GIT_COMMITTER_* from the environment); return its id. When the
    environment fixes the dates (GIT_AUTHOR_DATE, GIT_COMMITTER_DATE), git writes it, so that
    every date format git reads is read the same."""
    message = clean_message(message)
    if os.environ.get("GIT_AUTHOR_DATE") or os.environ.get("GIT_COMMITTER_DATE"):
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        commit = git(*args, cwd=cwd, input=message)
    else:
        lines = [f"tree {tree}", *[f"parent {p}" for p in parents]]
        lines += [f"author {_ident('AUTHOR')}", f"committer {_ident('COMMITTER')}"]
        content = ("\n".join(lines) + "\n\n" + message).encode("utf-8")
        commit = write_object(gitdir, "commit", content, id_len=len(tree))
    _housekeep(gitdir)
    return commit


# Ferry writes its objects itself, and moves refs by `git update-ref`, so git's own
# housekeeping never starts (`git commit`, `merge` and `receive-pack` run `git gc --auto`;
# update-ref and commit-tree do not), and loose objects would pile up for ever. Every GC_EVERY
# commits Ferry writes into a repository, it runs `git gc --auto` there: it returns at once
# while the repository holds fewer loose objects than gc.auto (6,700 by default), else packs
# them, in the background unless gc.autoDetach is false. Everything git's defaults and the
# repository's gc.* settings say applies (gc.auto=0 turns it off).
GC_EVERY = 64
_WRITTEN: dict[str, int] = {}  # gitdir -> commits written since its last `git gc --auto`
_WRITTEN_LOCK = threading.Lock()


def _housekeep(gitdir: str | Path) -> None:
    with _WRITTEN_LOCK:
        n = _WRITTEN.get(str(gitdir), 0) + 1
        _WRITTEN[str(gitdir)] = 0 if n >= GC_EVERY else n
    if n >= GC_EVERY:
        git(f"--git-dir={gitdir}", "gc", "--auto", "--quiet", check=False)


OBJECT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


def read_ref(gitdir: Path, ref: str) -> str | None:
    """The object id REF names: its loose file (git writes them whole, by rename), else its line
    in packed-refs; None when it is symbolic, missing or kept some other way (reftable): then ask
    git. Saves a process per read of main, the hottest call of gate-evaluator."""
    try:
        value = (gitdir / ref).read_text().strip()
    except OSError:
        value = None
    if value is not None:
        return value if OBJECT_ID.match(value) else None
    try:
        packed = (gitdir / "packed-refs").read_bytes()
    except OSError:
        return None
    wanted = b" " + ref.encode() + b"\n"
    at = packed.find(wanted)
    if at < 0:
        return None
    start = packed.rfind(b"\n", 0, at) + 1
    oid = packed[start:at].decode("ascii", "replace")
    return oid if OBJECT_ID.match(oid) else None


RECEIVE_HOOKS = ("pre-receive", "update", "post-receive", "post-update", "proc-receive")


def takes_plain_ref_updates(gitdir: str | Path, branch: str) -> bool:
    """May BRANCH of the repository at GITDIR (on this machine) be moved by `git update-ref`
    rather than a push? Only when a push would do nothing more: no receive hook would run (none
    in hooks/, no core.hooksPath), and no checkout of BRANCH would have to follow it (the
    repository is bare or has another branch checked out, and has no linked worktrees)."""
    gitdir = Path(gitdir)
    try:
        config = (gitdir / "config").read_text(errors="replace").lower()
    except OSError:
        return False
    if "hookspath" in config or (gitdir / "worktrees").exists():
        return False
    if any((gitdir / "hooks" / name).exists() for name in RECEIVE_HOOKS):
        return False
    if "bare = true" in config.replace("\t", " "):
        return True
    try:
        head = (gitdir / "HEAD").read_text().strip()
    except OSError:
        return False
    return head != f"ref: refs/heads/{branch}"


class CatFile:
    """One long-lived `git cat-file --batch` for a repository: each read costs a write and a read
    on its pipes, not a process (a process is about a millisecond and a half; a read from a warm
    one, tens of microseconds). Thread-safe; a process that died is started again once. Names
    are read as git reads them at each request (objects and refs are looked up afresh). A process
    forked after the first read (`ferry status` on two cores) starts its own git: the pipes it
    inherited are its parent's, whose answers it would take."""

    CHUNK = 256  # names written before their answers are read, so neither pipe fills up

    def __init__(self, *args: str) -> None:
        self.args = args
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0  # the process that started self._proc
        self._lock = threading.Lock()

    def read(self, names: Sequence[str]) -> list[tuple[str, str, bytes] | None]:
        """(id, type, content) of each of NAMES, or None when git has no such object."""
        if any("\n" in n for n in names):
            raise ValueError(f"bad object name in {list(names)!r}")
        with self._lock:
            if self._owner != os.getpid():
                self._proc = None  # the parent's git, left to the parent
            try:
                return self._read(names)
            except (OSError, ValueError, EOFError):
                self._close()
                return self._read(names)  # a process that died (or was killed): once more

    def close(self) -> None:
        with self._lock:
            self._close()

    def _read(self, names: Sequence[str]) -> list[tuple[str, str, bytes] | None]:
        proc = self._proc or self._start()
        assert proc.stdin is not None and proc.stdout is not None
        found: list[tuple[str, str, bytes] | None] = []
        for at in range(0, len(names), self.CHUNK):
            chunk = names[at : at + self.CHUNK]
            proc.stdin.write("".join(f"{n}\n" for n in chunk).encode())
            proc.stdin.flush()
            for _ in chunk:
                header = proc.stdout.readline()
                if not header.endswith(b"\n"):
                    raise EOFError("git cat-file --batch ended")
                fields = header.split()
                if len(fields) != 3:
                    found.append(None)  # "<name> missing" or "<name> ambiguous"
                    continue
                size = int(fields[2])
                data = proc.stdout.read(size + 1)  # each object is followed by a newline
                if len(data) != size + 1:
                    raise EOFError("git cat-file --batch ended")
                found.append((fields[0].decode(), fields[1].decode(), data[:size]))
        return found

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        self._proc = subprocess.Popen(
            ["git", *self.args, "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._owner = os.getpid()
        return self._proc

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or self._owner != os.getpid():
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()  # git exits at the end of its input
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
