"""preview-reaper's state in Redis: one record per application pull request (its events, the
reaper's marks and the forge actions still to do), each team's live previews in a set; the due
times are preview-reaper's `DueTimes` (ferry.adapters.due). The one module that knows these keys.

Every change to a record is an optimistic transaction (WATCH the record, compute, MULTI/EXEC), so
an event and a timer touching the same preview at once never lose each other's work; a record's
next due time is written in the same transaction. A due preview is claimed with a lease, so of
many replicas one handles it; a replica that dies holding a lease frees it when the lease ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import redis

from ferry.adapters.bus import Bus
from ferry.adapters.due import DueTimes
from ferry.core.events import PreviewEvent
from ferry.core.previews import Mark, ordered

T = TypeVar("T")


@dataclass
class Action:
    """One thing to do on the application PR, kept until the forge has done it."""

    id: str  # e.g. "reap:<period>:label": one decision never acts twice
    kind: str  # "remove_label" | "comment"
    arg: str  # the label, or the comment's body
    attempts: int = 0
    error: str | None = None
    next_try: float = 0.0  # epoch seconds


@dataclass
class Record:
    """Everything known about one application pull request's preview."""

    repo: str
    pr: int
    events: list[PreviewEvent] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    outbox: list[Action] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # ids of actions done, oldest first
    # Where the index lists it: the team whose live set holds it ("" for no team), and when the
    # reaper must look at it next (epoch seconds).
    live_team: str | None = None
    due: float | None = None

    @property
    def key(self) -> str:
        return member(self.repo, self.pr)

    def add_event(self, event: PreviewEvent) -> bool:
        """Keep EVENT unless it was seen already (a redelivery); True if it is new."""
        if any(e.event_id == event.event_id for e in self.events):
            return False
        self.events.append(event)
        # Every push is an `updated`: of those that carry nothing else, keep only what the rule
        # can tell apart, so a busy PR's record stays small.
        self.events = _compacted(self.events, self.marks)
        return True

    def history(self) -> list[PreviewEvent | Mark]:
        return [*self.events, *self.marks]

    def to_json(self) -> str:
        return json.dumps(
            {
                "repo": self.repo,
                "pr": self.pr,
                "events": [e.to_fields() for e in self.events],
                "marks": [_mark_to_dict(m) for m in self.marks],
                "outbox": [a.__dict__ for a in self.outbox],
                "done": self.done,
                "live_team": self.live_team,
                "due": self.due,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Record:
        data = json.loads(text)
        return cls(
            repo=data["repo"],
            pr=int(data["pr"]),
            events=[PreviewEvent.model_validate(e) for e in data["events"]],
            marks=[_mark_from_dict(m) for m in data["marks"]],
            outbox=[Action(**a) for a in data["outbox"]],
            done=list(data["done"]),
            live_team=data.get("live_team"),
            due=data.get("due"),
        )


def _bare_activity(event: PreviewEvent) -> bool:
    return event.kind == "updated" and not event.labels and event.until is None


# Forge events may reach the reaper out of order (a webhook retried, the ingress down a while):
# a bare update is only dropped once no event can still arrive between it and the later one that
# stands for it, i.e. once that later one is this much older than the newest event of the record.
SETTLED = timedelta(hours=1)


def _compacted(events: list[PreviewEvent], marks: list[Mark]) -> list[PreviewEvent]:
    """EVENTS without the bare updates the rule cannot tell from a later one. The rule reads a
    bare update only for its period's latest activity, and any other event or mark may end a
    period; so of each run of bare updates with nothing else between them, in the order the rule
    reads history, only the last is kept (a run across a label's removal keeps one on each
    side), once it is SETTLED. A mark is made at the reaper's own time, after what it follows."""
    settled = max(e.occurred_at for e in events) - SETTLED
    dropped: set[int] = set()
    last: PreviewEvent | None = None
    for item in ordered([*events, *marks]):
        if isinstance(item, PreviewEvent) and _bare_activity(item):
            if last is not None and item.occurred_at <= settled:
                dropped.add(id(last))
            last = item
        else:
            last = None
    return [e for e in events if id(e) not in dropped]


def member(repo: str, pr: int) -> str:
    """A preview's name in the index: OWNER/NAME#PR."""
    return f"{repo}#{pr}"


def _mark_to_dict(mark: Mark) -> dict[str, Any]:
    return {
        "kind": mark.kind,
        "at": mark.at.isoformat(),
        "period": mark.period.isoformat(),
        "reason": mark.reason,
        "for_end": mark.for_end.isoformat() if mark.for_end else None,
        "dry_run": mark.dry_run,
    }


def _mark_from_dict(data: dict[str, Any]) -> Mark:
    return Mark(
        kind=data["kind"],
        at=datetime.fromisoformat(data["at"]),
        period=datetime.fromisoformat(data["period"]),
        reason=data["reason"],
        for_end=datetime.fromisoformat(data["for_end"]) if data["for_end"] else None,
        dry_run=bool(data["dry_run"]),
    )


class PreviewStore:
    """Records, due times, team sets and the local forge's action log of previews."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.redis: Any = bus.redis
        # A record, the index sets and its due time change in one transaction: they all live in
        # the hash slot of the index of every preview (one Redis Cluster node).
        self._all = bus.settings.key("previews", "all")
        self.due = DueTimes(bus, "preview-reaper", anchor=self._all)

    def _key(self, *parts: str) -> str:
        if parts == ("all",):
            return self._all
        if parts[0] == "log":  # written alone: no slot of its own to keep
            return self.bus.settings.key("previews", *parts)
        return self.bus.settings.near(self._all, "previews", *parts)

    def _team_key(self, team: str) -> str:
        return self._key("team", team)

    # ------------------------------------------------------------------ records

    def load(self, key: str) -> Record | None:
        raw = self.redis.get(self._key("record", key))
        return Record.from_json(raw) if raw else None

    def keys(self) -> list[str]:
        return sorted(k.decode() for k in self.redis.smembers(self._key("all")))

    def records(self) -> Iterator[Record]:
        for key in self.keys():
            record = self.load(key)
            if record is not None:
                yield record

    def team_members(self, team: str) -> list[str]:
        return sorted(k.decode() for k in self.redis.smembers(self._team_key(team)))

    def change(
        self,
        repo: str,
        pr: int,
        step: Callable[[Record], T],
        *,
        lease: str | None = None,
    ) -> T:
        """Apply STEP to the record of REPO#PR (a new one if there is none) and store the result
        with its index entries, atomically; STEP runs again if someone else wrote in between.
        With LEASE (a claim's token), the claim ends in the same transaction."""
        key = member(repo, pr)
        record_key = self._key("record", key)
        while True:
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(record_key)
                    raw = pipe.get(record_key)
                    record = Record.from_json(raw) if raw else Record(repo=repo, pr=pr)
                    old_team = record.live_team
                    result = step(record)
                    pipe.multi()
                    pipe.set(record_key, record.to_json())
                    pipe.sadd(self._key("all"), key)
                    if old_team is not None and old_team != record.live_team:
                        pipe.srem(self._team_key(old_team), key)
                    if record.live_team is not None:
                        pipe.sadd(self._team_key(record.live_team), key)
                    self.due.set(key, record.due, token=lease, pipe=pipe)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    # ------------------------------------------------------------------ the local forge

    def log_action(self, repo: str, pr: int, entry: dict[str, Any]) -> None:
        """Record an action on the application PR that only the local forge's log will show."""
        entry = {"at": time.time(), **entry}
        self.redis.rpush(self._key("log", member(repo, pr)), json.dumps(entry))

    def action_log(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.redis.lrange(self._key("log", key), 0, -1)]
