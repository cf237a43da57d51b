"""What `ferry status`, `ferry manifest` and `ferry audit` report, read from main and the audit
stream (shared by the CLI and the demo)."""

from __future__ import annotations

import gc
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ferry.adapters.bus import Bus
from ferry.adapters.gitops import MainSnapshot
from ferry.runtime.resources import connect, open_repo
from ferry.runtime.settings import Settings

if TYPE_CHECKING:
    from ferry.core.decision import Decision, Snapshot


def status_table(settings: Settings) -> dict[str, dict[str, str | None]]:
    repo = open_repo(settings)
    return _table(repo.at_main(), repo.services())  # one commit for the whole table


def _table(main: MainSnapshot, services: list[str]) -> dict[str, dict[str, str | None]]:
    main.prefetch(services)  # every values file in one pass of git cat-file --batch
    envs = main.policy.env_names()
    return {service: {env: main.pinned(service, env) for env in envs} for service in services}


def _cells(
    bus: Bus, main: MainSnapshot, services: list[str]
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    """What gate-evaluator decides now for every service and environment (the same `decide` on
    the same snapshot as `ferry explain`), and every canary: main read once (SERVICES' values
    files prefetched, by `_table`), Redis in a few bulk rounds for all the cells together
    (app/bulk.py), then `decide` on each snapshot. A cell with no digest to move is read only as
    far as what names the digest (without_digest). With many cells, the second half is read and
    decided in a child process on another core (app/split.py)."""
    from ferry.app.split import in_two

    now = datetime.now(UTC)
    cells = [(s, e) for s in services for e in main.policy.env_names()]
    found = in_two(cells, lambda part: _read_cells(bus, main, part, now))
    decided: dict[str, dict[str, dict[str, Any]]] = {}
    watched: dict[str, dict[str, Any]] = {}
    for (service, env), (decision, canary) in zip(cells, found, strict=True):
        if decision is not None:
            decided.setdefault(service, {})[env] = decision
        if canary is not None:
            watched.setdefault(service, {})[env] = canary
    return decided, watched


def _read_cells(
    bus: Bus, main: MainSnapshot, cells: list[tuple[str, str]], now: datetime
) -> list[tuple[dict[str, Any] | None, Any]]:
    """For each of CELLS, its decision (None without a values file) and its canary (None where
    none ran)."""
    from ferry.adapters.canary_state import cells_with_state
    from ferry.app.batch import read_batched
    from ferry.app.canary import canaries

    kept = [cell for cell in cells if main.values_exists(*cell)]
    decided = dict(zip(kept, _decide(bus, main, kept, now), strict=True))
    # Only the cells where a canary ran (or verified a digest) have a state to read.
    present = cells_with_state(bus, cells)
    ran = [cell for cell in cells if cell in present]
    watched = read_batched(bus, lambda b: canaries(b, main.policy, ran))
    return [(decided.get((s, e)), watched.get(s, {}).get(e)) for s, e in cells]


def _decide(
    bus: Bus, main: MainSnapshot, cells: list[tuple[str, str]], now: datetime
) -> list[dict[str, Any]]:
    """The decision of each of CELLS, as status shows it. A cell with no digest to move is
    answered by `decide`'s first rule from its source alone: one decision per source answers
    them all (the same dict, which nothing changes once made)."""
    from ferry.app.bulk import snapshots as read_snapshots
    from ferry.app.snapshot import nothing_to_move
    from ferry.core.decision import decide

    found = read_snapshots(bus, main, cells, now)
    by_source: dict[str, dict[str, Any]] = {}
    out = []
    for cell in cells:
        source = found.without_digest.get(cell)
        if source is None:
            out.append(_shown(decide(found.gathered[cell])))
            continue
        shown = by_source.get(source)
        if shown is None:
            shown = by_source[source] = _shown(decide(nothing_to_move(main, *cell, source, now)))
        out.append(shown)
    return out


def _shown(d: Decision) -> dict[str, Any]:
    """A decision as status shows it."""
    return {
        "state": d.state,
        "digest": d.digest,
        "reasons": list(d.reasons),
        "actions": [a.kind for a in d.actions if a.kind not in ("wait", "nothing")],
    }


@dataclass
class Status:
    """What `ferry status` shows: main's pins, every cell's decision and the canaries."""

    table: dict[str, dict[str, str | None]]
    decided: dict[str, dict[str, dict[str, Any]]]
    watched: dict[str, dict[str, Any]]


def status(settings: Settings) -> Status:
    """The table, the decisions and the canaries from one snapshot of main (every values file
    read once) and batched reads of Redis; without Redis, the table alone."""
    import redis

    from ferry.adapters.embedded import NoRedis

    with uncollected():
        repo = open_repo(settings)
        main = repo.at_main()
        services = repo.services()  # main's pins: read whole, or loaded from the CLI's copy
        table = _table(main, services)
        try:
            decided, watched = _cells(connect(settings), main, services)
        except (redis.RedisError, NoRedis):
            decided, watched = {}, {}  # no Ferry running: what main pins is still worth showing
    return Status(table, decided, watched)


@contextmanager
def uncollected() -> Iterator[None]:
    """Tens of thousands of small objects that all live until the answer is printed: the cyclic
    collector would walk them again and again (a third of the time at 10,000 services)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def platform_manifest(settings: Settings, env: str) -> dict[str, Any]:
    """ENV's platform version: every service's pinned digest on main, named by a content hash of
    the sorted `service=digest` pairs (services with nothing pinned are left out)."""
    repo = open_repo(settings)
    main = repo.at_main()
    main.policy.environment(env)  # unknown environment: one line, not a traceback
    pins = {s: d for s in repo.services() if (d := main.pinned(s, env)) is not None}
    lines = "".join(f"{service}={digest}\n" for service, digest in sorted(pins.items()))
    version = "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    return {"environment": env, "version": version, "commit": main.commit, "services": pins}


def audit_records(settings: Settings, service: str | None, limit: int) -> list[Any]:
    """The newest LIMIT decisions (about SERVICE, if given), oldest first."""
    from ferry.core.events import AuditRecord, decode_fields, parse

    bus = connect(settings)
    found: list[Any] = []
    last = "+"
    while len(found) < limit:
        batch = bus.redis.xrevrange(settings.stream("audit"), max=last, count=500)
        if not batch:
            break
        for _, raw in batch:
            record = parse("audit", decode_fields(raw))
            assert isinstance(record, AuditRecord)
            if service is None or record.subject.startswith((f"{service}@", f"{service} in ")):
                found.append(record)
                if len(found) == limit:
                    break
        last = "(" + batch[-1][0].decode()
    return list(reversed(found))


def short_subject(subject: str) -> str:
    """'api@sha256:<64 hex> -> dev' as 'api@4f1c2ab9d3e5 -> dev'."""
    return re.sub(r"sha256:([0-9a-f]{12})[0-9a-f]{52}", r"\1", subject)


# Decisions that need nobody: the digest is live, or nothing waits.
_SETTLED = ("up to date", "nothing to promote")


def pending(settings: Settings) -> list[dict[str, Any]]:
    """Every promotion that is open or waits, with its unmet gates and who can move each one
    (the same `decide` on the same snapshot as `ferry explain`): read as `ferry status` reads
    every cell (app/bulk.py; the second half in a child process when there are many: split.py)."""
    from ferry.app.split import in_two

    with uncollected():
        repo = open_repo(settings)
        bus = connect(settings)
        main = repo.at_main()
        services = repo.services()
        main.prefetch(services)
        now = datetime.now(UTC)
        envs = main.policy.env_names()
        cells = [(s, e) for s in services for e in envs if main.values_exists(s, e)]
        found = in_two(cells, lambda part: _pending(bus, main, part, now))
    return [p for p in found if p is not None]


def _pending(
    bus: Bus, main: MainSnapshot, cells: list[tuple[str, str]], now: datetime
) -> list[dict[str, Any] | None]:
    """For each of CELLS, what waits there (None: nothing, the cell is settled). A cell with no
    digest to move is settled: `decide` finds nothing to promote."""
    from ferry.app.bulk import snapshots as read_snapshots

    gathered = read_snapshots(bus, main, cells, now).gathered
    return [_waits(gathered[cell]) if cell in gathered else None for cell in cells]


def _waits(s: Snapshot) -> dict[str, Any] | None:
    """What waits in the cell of snapshot S, and on whom; None when it is settled."""
    from ferry.core.decision import decide

    d = decide(s)
    if d.state in _SETTLED:
        return None
    pr = s.promotion.pr if s.promotion else None
    gates = [
        {"gate": g.gate, "status": g.status, "reason": g.reason, "who": _who(s, g.gate)}
        for g in d.gates
        if g.status != "passed"
    ]
    return {
        "service": s.service,
        "env": s.target,
        "digest": d.digest,
        "state": d.state,
        "pull_request": pr,
        "unmet": gates,
        "who": _who_moves(s, d.state, pr) if not gates else None,
        "reason": d.sentence,
    }


def _who(s: Any, gate: str) -> str:
    """Who (or what) can move GATE for snapshot S."""
    from ferry.core.rollback import approvers_of

    if gate == "approval":
        listed = approvers_of(s.env_policy, dict(s.teams))
        return "approvers: " + (", ".join(sorted(listed)) or "nobody is listed")
    if gate == "hold":
        return f"anyone: ferry release {s.service} {s.target} --as USER"
    if gate == "ci":
        return f"CI: a green result for this digest in {s.source}"
    if gate == "soak":
        return f"time, and the named checks green in {s.source}"
    return "time: the next sync window"


def _who_moves(s: Any, state: str, pr: int | None) -> str:
    """Who can move a promotion whose gates all passed (or that no gate holds)."""
    again = f"a person: ferry promote {s.service} {s.target} --as USER"
    return {
        "waiting for a person to merge": f"a person: ferry pr merge {pr} --as USER",
        "closed": again,
        "reverted": again,
        "rolled back": again,
        "older": "nobody: a newer build is the candidate",
        "ready": "ferry: it merges now",
        "merged": "ferry: main is about to show it",
    }.get(state, "ferry")
