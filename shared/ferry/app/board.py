"""What `ferry board` shows: the grid of services x environments (each cell what `ferry explain`
says, from the same `decide`), a service's story (its audit trail and dead letters), and for each
waiting gate the command that would move it.

A page of the grid costs one read of main (the service list and one `git cat-file --batch` for the
page's values files) and one batched read of Redis (app/batch.py), whatever the page size."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ferry.adapters.bus import Bus
from ferry.adapters.gitops import GitOpsRepo, MainSnapshot
from ferry.adapters.state import LiveStore
from ferry.app.batch import Cost, read_batched
from ferry.app.explain import Explanation, explanation
from ferry.core.errors import Rejected
from ferry.core.events import AuditRecord, DeadLetter, decode_fields, parse
from ferry.core.names import check_label
from ferry.core.policy import Policy

MAX_PER_PAGE = 100
# A story reads at most this many entries of each stream, newest first.
STORY_SCAN = 5000


class BadQuery(Rejected):
    """A query the board cannot answer (a malformed parameter): a 400 with this sentence."""


class UnknownService(Rejected):
    """A service with no values file on main: a 404."""


@dataclass(frozen=True)
class Query:
    """The grid's filter and page, checked at the edge: q is part of a service name."""

    q: str = ""
    page: int = 1
    per_page: int = 50

    @classmethod
    def parse(cls, params: dict[str, list[str]]) -> Query:
        unknown = sorted(set(params) - {"q", "page", "per_page"})
        if unknown:
            raise BadQuery(f"unknown parameter {unknown[0]!r}: use q, page or per_page")

        def one(name: str, default: str) -> str:
            values = params.get(name, [default])
            if len(values) != 1:
                raise BadQuery(f"give {name} once, got it {len(values)} times")
            return values[0]

        q = one("q", "").strip()
        if q and not re.fullmatch(r"[a-z0-9-]{1,63}", q):
            raise BadQuery(
                f"q filters service names: lowercase letters, digits and '-', got {q[:40]!r}"
            )
        page = _number("page", one("page", "1"), 1, 10**6)
        per_page = _number("per_page", one("per_page", "50"), 1, MAX_PER_PAGE)
        return cls(q=q, page=page, per_page=per_page)

    def as_params(self, **changes: Any) -> str:
        values = {"q": self.q, "page": self.page, "per_page": self.per_page, **changes}
        defaults = {"q": "", "page": 1, "per_page": 50}
        return "&".join(f"{k}={v}" for k, v in values.items() if v != defaults[k])


def _number(name: str, text: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,7}", text) or not low <= int(text) <= high:
        raise BadQuery(f"{name} must be a whole number from {low} to {high}, got {text[:20]!r}")
    return int(text)


@dataclass(frozen=True)
class Move:
    """The command that would move a waiting gate, for a person to copy."""

    gate: str
    command: str


@dataclass
class Cell:
    env: str
    pinned: str | None = None
    since: datetime | None = None
    explanation: Explanation | None = None  # None: the service has no values file here
    moves: list[Move] = field(default_factory=list)


@dataclass
class Row:
    service: str
    cells: list[Cell]


@dataclass
class Grid:
    envs: list[str]
    rows: list[Row]
    query: Query
    total: int  # services that match the filter
    commit: str
    cost: Cost

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per_page))


def grid(repo: GitOpsRepo, bus: Bus, query: Query, now: datetime) -> Grid:
    """One page of the grid, filtered by QUERY."""
    main = repo.at_main()
    found = [s for s in repo.services() if query.q in s]
    start = (query.page - 1) * query.per_page
    if found and start >= len(found):
        raise BadQuery(
            f"page {query.page} is past the last page ({-(-len(found) // query.per_page)})"
        )
    shown = found[start : start + query.per_page]
    cost = Cost()
    return Grid(
        envs=main.policy.env_names(),
        rows=rows(main, bus, shown, now, cost),
        query=query,
        total=len(found),
        commit=main.commit,
        cost=cost,
    )


def rows(
    main: MainSnapshot, bus: Bus, services: list[str], now: datetime, cost: Cost | None = None
) -> list[Row]:
    """The rows of SERVICES: main read once for all of them, Redis in one batched read."""
    main.prefetch(services)
    return read_batched(bus, lambda b: [_row(b, main, s, now) for s in services], cost)


def grid_as_dict(g: Grid) -> dict[str, Any]:
    """The page as JSON (GET /api/grid): what a script would read."""
    return {
        "environments": g.envs,
        "commit": g.commit,
        "page": g.query.page,
        "pages": g.pages,
        "total": g.total,
        "services": {
            row.service: {
                c.env: {
                    "pinned": c.pinned,
                    "since": c.since.isoformat() if c.since else None,
                    "explain": c.explanation.as_dict() if c.explanation else None,
                    "moves": [{"gate": m.gate, "command": m.command} for m in c.moves],
                }
                for c in row.cells
            }
            for row in g.rows
        },
    }


def known_services(repo: GitOpsRepo, names: list[str]) -> list[str]:
    """NAMES, each a DNS label with a values file on main (else BadQuery or UnknownService)."""
    if not names:
        raise BadQuery("name at least one service: ?service=api")
    if len(names) > MAX_PER_PAGE:
        raise BadQuery(f"at most {MAX_PER_PAGE} services at once, got {len(names)}")
    for name in names:
        try:
            check_label(name, "service")
        except ValueError as e:
            raise BadQuery(str(e)) from None
    services = set(repo.services())
    for name in names:
        if name not in services:
            raise UnknownService(f"unknown service {name!r}: no values file for it on main")
    return list(dict.fromkeys(names))


def _row(bus: Bus, main: MainSnapshot, service: str, now: datetime) -> Row:
    cells = []
    for env in main.policy.env_names():
        if not main.values_exists(service, env):
            cells.append(Cell(env=env))
            continue
        e = explanation(bus, main, service, env, now)
        since = LiveStore(bus).since(service, env, e.pinned) if e.pinned else None
        cells.append(
            Cell(
                env=env,
                pinned=e.pinned,
                since=since,
                explanation=e,
                moves=moves(main.policy, e),
            )
        )
    return Row(service=service, cells=cells)


def moves(policy: Policy, e: Explanation) -> list[Move]:
    """For each gate that waits (or a rejection that holds), the command that would move it; for
    a PR waiting for a person, the merge; for a paused canary, the promote."""
    found: list[Move] = []
    digest = e.next_digest
    gates = policy.environment(e.env, e.service).gates
    for g in e.gates:
        if g["status"] == "passed" or digest is None:
            continue
        if g["gate"] == "approval":
            found.append(
                Move("approval", f"ferry approve {e.service} {digest} --env {e.env} --as $USER")
            )
        elif g["gate"] == "ci" and gates.ci is not None:
            checks: list[str | None] = [*gates.ci.checks] or [None]
            for check in checks:
                found.append(Move("ci", _publish("ci", e.service, digest, e.source, check)))
        elif g["gate"] == "soak" and gates.soak is not None:
            for check in gates.soak.checks:
                found.append(Move("soak", _publish("check", e.service, digest, e.source, check)))
    pr = e.pull_request
    if e.state == "waiting for a person to merge" and pr is not None:
        found.append(Move("merge", f"ferry pr merge {pr['number']}"))
    if e.canary is not None and e.canary.get("phase") == "paused":
        found.append(Move("canary", f"ferry canary promote {e.service} {e.env} --as $USER"))
    return found


def _publish(kind: str, service: str, digest: str, env: str, check: str | None) -> str:
    named = f" --check {check}" if check else ""
    return f"ferry publish {kind} --service {service} --digest {digest} --env {env}{named}"


# --- a service's story ------------------------------------------------------------------------


@dataclass
class Step:
    """One audit record about a service, with what it links to."""

    record: AuditRecord
    entry_id: str
    pr: int | None


@dataclass
class Story:
    service: str
    steps: list[Step]  # newest first
    dead_letters: list[tuple[str, DeadLetter]]  # (entry id, letter), newest first


_PR = re.compile(r"(?:PR|pull request) #(\d+)")


def story(bus: Bus, service: str, limit: int = 200) -> Story:
    """SERVICE's audit trail newest first, and the dead letters whose entry names it."""
    steps: list[Step] = []
    for entry_id, fields in _newest(bus, "audit"):
        record = parse("audit", fields)
        assert isinstance(record, AuditRecord)
        if record.subject.split("@", 1)[0].split(" ", 1)[0] != service:
            continue
        number = _PR.search(record.reason)
        steps.append(Step(record, entry_id, int(number[1]) if number else None))
        if len(steps) == limit:
            break
    letters: list[tuple[str, DeadLetter]] = []
    for entry_id, fields in _newest(bus, "dlq"):
        letter = parse("dlq", fields)
        assert isinstance(letter, DeadLetter)
        if letter.payload.get("service") == service:
            letters.append((entry_id, letter))
            if len(letters) == limit:
                break
    return Story(service=service, steps=steps, dead_letters=letters)


def _newest(bus: Bus, short: str) -> list[tuple[str, dict[str, str]]]:
    batch = bus.redis.xrevrange(bus.stream(short), count=STORY_SCAN)
    return [(entry_id.decode(), decode_fields(raw)) for entry_id, raw in batch]


def find_event(bus: Bus, event_id: str) -> tuple[str, str, dict[str, Any]] | None:
    """The entry whose event_id is EVENT_ID (what an audit record says caused it), looked for in
    the newest entries of the streams events come from: (stream, entry id, fields)."""
    for short in ("ci", "signals", "changes", "promotions", "canary", "previews"):
        for entry_id, fields in _newest(bus, short):
            if fields.get("event_id") == event_id:
                shown = {k: _loads(v) for k, v in fields.items()}
                return short, entry_id, shown
    return None


def _loads(value: str) -> Any:
    if value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
