"""What main pins, kept in memory: the digest and the image repository of every values file at one
commit of main, read once (one listing of the tree, every values file in one pass of the
long-lived `git cat-file --batch`) and then carried from one main to the next by re-reading only
the files the new main changed (`git diff-tree` of the old and the new commit).

A decision reads two or three values files; at 10,000 services each would be a file not read
before (a round trip to git, a walk of a directory of 10,000 entries, a parse). With the pins in
memory a decision reads no file, whatever the number of services.

An index is a pure function of (commit, values template, digest key, repository key): a new one is
built (never edited in place) when main moves, so a snapshot keeps answering from its own commit.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.core.values import read_values

# Read the blobs of a full listing this many at a time: a values file is a few hundred bytes, and
# reading 30,000 at once would hold 15 MB of text at the peak.
CHUNK = 512


class Unsure:
    """A values file the index does not answer for (not UTF-8, or a value the reader refuses):
    the ordinary read of that file says what it says (an error, most often)."""

    def __repr__(self) -> str:
        return "UNSURE"


UNSURE = Unsure()
# (digest, repository), each None when absent or empty; or UNSURE.
Entry = tuple[str | None, str | None] | Unsure
# (id, type, content) of each object named, None when missing: GitOpsRepo._objects.
Reader = Callable[[list[str]], list[tuple[str, str, bytes] | None]]


@dataclass(frozen=True)
class Layout:
    """Where values files are and which keys the index keeps (from the policy in force)."""

    template: str  # envs/{env}/{service}/values.yaml
    digest_key: str
    repository_key: str


@dataclass(frozen=True)
class Pins:
    """Every values file's pins at COMMIT: env -> service -> Entry. A file that is not in it does
    not exist at COMMIT (or is not a file)."""

    commit: str
    layout: Layout
    by_env: dict[str, dict[str, Entry]]

    def entry(self, env: str, service: str) -> Entry | None:
        found = self.by_env.get(env)
        return found.get(service) if found is not None else None

    def services(self, envs: list[str]) -> list[str]:
        """Services with a values file in at least one of ENVS."""
        found: set[str] = set()
        for env in envs:
            found.update(self.by_env.get(env, ()))
        return sorted(found)


def template_regex(template: str) -> re.Pattern[str]:
    """'envs/{env}/{service}/values.yaml' -> a regex with named groups env and service (DNS
    labels, but for their length: see `_names`)."""
    out: list[str] = []
    seen: set[str] = set()
    for part in re.split(r"(\{env\}|\{service\})", template):
        name = part[1:-1] if part in ("{env}", "{service}") else None
        if name is None:
            out.append(re.escape(part))
        elif name in seen:
            out.append(f"(?P={name})")
        else:
            seen.add(name)
            out.append(f"(?P<{name}>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)")
    return re.compile("^" + "".join(out) + "$")


def _names(pattern: re.Pattern[str], path: str) -> tuple[str, str] | None:
    """(env, service) of the values file at PATH, or None when PATH is not one."""
    match = pattern.match(path)
    if match is None or len(match["env"]) > 63 or len(match["service"]) > 63:
        return None
    return match["env"], match["service"]


def _parse(raw: bytes, layout: Layout, path: str, repositories: dict[str, str]) -> Entry:
    try:
        text = raw.decode("utf-8")
        keys = [layout.digest_key, layout.repository_key]
        digest, repository = (v or None for v in read_values(text, keys, source=path))
    except ValueError:  # not UTF-8, not YAML, not a string: the ordinary read says so
        return UNSURE
    if repository is not None:  # the same in every environment of a service, most often
        repository = repositories.setdefault(repository, repository)
    if digest is not None:
        digest = sys.intern(digest)
    return (digest, repository)


def _read(
    read: Reader,
    files: list[tuple[str, str, str, str]],
    layout: Layout,
    into: dict[str, Any],
    by_oid: dict[str, Entry] | None = None,
) -> None:
    """Read FILES ((env, service, path, blob id)) into INTO (env -> service -> Entry), and into
    BY_OID (blob id -> Entry) when given."""
    repositories: dict[str, str] = {}
    for at in range(0, len(files), CHUNK):
        chunk = files[at : at + CHUNK]
        for (env, service, path, oid), obj in zip(
            chunk, read([oid for _, _, _, oid in chunk]), strict=True
        ):
            if obj is None or obj[1] != "blob":
                into.setdefault(env, {}).pop(service, None)
                continue
            entry = into.setdefault(env, {})[service] = _parse(obj[2], layout, path, repositories)
            if by_oid is not None:
                by_oid[oid] = entry


def build(
    commit: str,
    layout: Layout,
    listing: Iterable[tuple[str, str]],
    read: Reader,
    known: dict[str, Entry] | None = None,
) -> tuple[Pins, dict[str, Entry]]:
    """The pins at COMMIT from LISTING ((path, blob id) of every file at COMMIT, read as it
    comes: a worker's peak memory must not hold 30,000 paths twice), reading the blobs CHUNK at
    a time. With KNOWN (blob id -> Entry, see `load`), only the values files whose blob is not
    in it are read, and the Entry of every values file's blob at COMMIT is returned too (what
    `save` keeps); else that map is empty."""
    pattern = template_regex(layout.template)
    by_env: dict[str, dict[str, Entry]] = {}
    by_oid: dict[str, Entry] = {}
    keep = by_oid if known is not None else None
    names: dict[str, str] = {}  # one string per service name, whatever its environments
    files: list[tuple[str, str, str, str]] = []
    for path, oid in listing:
        found = _names(pattern, path)
        if found is None:
            continue
        env = names.setdefault(found[0], found[0])
        service = names.setdefault(found[1], found[1])
        entry = known.get(oid) if known is not None else None
        if entry is not None:
            by_env.setdefault(env, {})[service] = by_oid[oid] = entry
            continue
        files.append((env, service, path, oid))
        if len(files) == CHUNK:
            _read(read, files, layout, by_env, keep)
            files.clear()
    _read(read, files, layout, by_env, keep)
    return Pins(commit, layout, by_env), by_oid


# ---------------------------------------------------------------------------- kept on disk
#
# A blob's content never changes, nor what the reader makes of it: a process that starts (`ferry
# status`, a worker) reads again only the values files whose blob it has not read before. The file
# names the reader's code (a hash of this module and of core/values.py) and the keys: a file
# written by other code, or for other keys, is not used.

_FORMAT = "ferry-pins-2"


@functools.cache
def _reader_code() -> str:
    from ferry.core import values

    digest = hashlib.sha256()
    for module in (__file__, values.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()


def _kept(path: Path, layout: Layout) -> tuple[dict[str, Any], Any]:
    """The blob ids and the last commit's pins `save` left in PATH for LAYOUT's keys."""
    try:
        head, code, keys, entries, last = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return {}, None
    if (head, code, keys) != (_FORMAT, _reader_code(), [layout.digest_key, layout.repository_key]):
        return {}, None
    return (entries if isinstance(entries, dict) else {}), last


def load(path: Path, layout: Layout) -> dict[str, Entry]:
    """Blob id -> Entry, as `save` left it for LAYOUT's keys; empty when there is none to use."""
    entries = _kept(path, layout)[0]
    return {oid: UNSURE if e is None else e for oid, e in entries.items()}


def load_pins(path: Path, layout: Layout, commit: str) -> Pins | None:
    """The pins at COMMIT when `save` left them in PATH for LAYOUT (the last commit a process
    read whole: `ferry status` again on the same main lists no tree), else None."""
    last = _kept(path, layout)[1]
    if not isinstance(last, tuple) or len(last) != 2 or last[0] != commit:
        return None
    by_env = {
        env: {service: UNSURE if e is None else e for service, e in services.items()}
        for env, services in last[1].items()
    }
    return Pins(commit, layout, by_env)


def save(path: Path, layout: Layout, by_oid: dict[str, Entry], pins: Pins | None = None) -> None:
    """Keep BY_OID in PATH for the next process, and PINS whole when given (nothing when it
    cannot be written)."""
    entries = {oid: None if isinstance(e, Unsure) else e for oid, e in by_oid.items()}
    last = None
    if pins is not None:
        by_env = {
            env: {service: None if isinstance(e, Unsure) else e for service, e in found.items()}
            for env, found in pins.by_env.items()
        }
        last = (pins.commit, by_env)
    data = marshal.dumps(
        (_FORMAT, _reader_code(), [layout.digest_key, layout.repository_key], entries, last)
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def changed(diff: bytes) -> list[tuple[str, str | None]]:
    """(path, new blob id, or None when the path holds no file any more) from the output of
    `git diff-tree -r -z --no-renames OLD NEW`."""
    out: list[tuple[str, str | None]] = []
    fields = diff.split(b"\0")
    i = 0
    while i + 1 < len(fields):
        meta, path = fields[i], fields[i + 1].decode("utf-8", "surrogateescape")
        i += 2
        parts = meta.lstrip(b":").split()
        if len(parts) != 5:
            raise ValueError(f"unexpected git diff-tree output: {meta!r}")
        new_mode, new_oid, status = parts[1], parts[3].decode(), parts[4]
        gone = status.startswith(b"D") or new_mode == b"160000"  # removed, or now a submodule
        out.append((path, None if gone else new_oid))
    return out


def moved(old: Pins, commit: str, changes: list[tuple[str, str | None]], read: Reader) -> Pins:
    """OLD carried to COMMIT, whose files differ from OLD's by CHANGES (see `changed`): only the
    environments a change touches are copied; every other one is shared with OLD."""
    pattern = template_regex(old.layout.template)
    by_env = dict(old.by_env)
    files = []
    copied: set[str] = set()
    for path, oid in changes:
        names = _names(pattern, path)
        if names is None:
            continue
        env, service = names
        if env not in copied:
            by_env[env] = dict(by_env.get(env, {}))
            copied.add(env)
        if oid is None:
            by_env[env].pop(service, None)
        else:
            files.append((env, service, path, oid))
    _read(read, files, old.layout, by_env)
    return Pins(commit, old.layout, by_env)
