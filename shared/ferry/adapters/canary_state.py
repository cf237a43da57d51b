"""The canary-watcher's state in Redis: the analysis of each (service, environment), its
measurements (deduplicated by event id) and the last verified digest. A projection of the
`changes` and `canary` streams."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from ferry.adapters import pipelined
from ferry.adapters.bus import Bus
from ferry.core.canary import Measurement

# running: being judged; paused: inconclusive, waiting for `ferry canary promote|abort`;
# the rest are final.
OPEN_PHASES = frozenset({"running", "paused"})


@dataclass(frozen=True)
class Analysis:
    id: str  # the promotion id of the merge that started it
    service: str
    env: str
    digest: str
    started_at: str  # ISO 8601
    phase: str = "running"  # running | paused | verified | failed | superseded | rolled back
    reason: str = ""
    pr: int | None = None
    decided_at: str | None = None
    rollback_to: str | None = None

    @property
    def open(self) -> bool:
        return self.phase in OPEN_PHASES

    def started(self) -> datetime:
        return datetime.fromisoformat(self.started_at)


class CanaryStore:
    """Key <prefix>canary:<service>:<env> holds the current analysis (JSON);
    <prefix>canary:<service>:<env>:<id>:m its measurements, a hash event id -> JSON."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _key(self, service: str, env: str) -> str:
        return self.bus.settings.key("canary", service, env)

    def _measurements_key(self, a: Analysis) -> str:
        return self.bus.settings.key("canary", a.service, a.env, a.id, "m")

    def get(self, service: str, env: str) -> Analysis | None:
        raw = self.bus.redis.get(self._key(service, env))
        return Analysis(**json.loads(raw)) if raw is not None else None

    def put(self, analysis: Analysis) -> None:
        self.bus.redis.set(self._key(analysis.service, analysis.env), json.dumps(asdict(analysis)))

    def update(self, analysis: Analysis, **changes: object) -> Analysis:
        new = replace(analysis, **changes)  # type: ignore[arg-type]
        self.put(new)
        return new

    def add(self, analysis: Analysis, event_id: str, m: Measurement) -> bool:
        """Record M once: False when this event id was recorded already (a redelivery)."""
        value = json.dumps(
            {"metric": m.metric, "phase": m.phase, "value": m.value, "at": m.at.isoformat()}
        )
        return bool(self.bus.redis.hsetnx(self._measurements_key(analysis), event_id, value))

    def measurements(self, analysis: Analysis) -> list[Measurement]:
        """In the order they arrived."""
        raw = self.bus.redis.hgetall(self._measurements_key(analysis))
        found = []
        for event_id, value in raw.items():
            data = json.loads(value)
            found.append(
                Measurement(
                    metric=data["metric"],
                    phase=data["phase"],
                    at=datetime.fromisoformat(data["at"]),
                    value=data["value"],
                    event_id=event_id.decode(),
                )
            )
        return sorted(found, key=lambda m: (m.at, m.event_id))

    def next_query(self, analysis: Analysis, metric: str) -> int:
        """The number of the next query of METRIC in this analysis (its measurement's id)."""
        key = self.bus.settings.key("canary", analysis.service, analysis.env, analysis.id, "q")
        return int(self.bus.redis.hincrby(key, metric, 1))


class VerifiedStore:
    """The last digest whose canary was verified in each (service, environment): where a failed
    canary rolls back to. Key <prefix>verified:<service>:<env>."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _key(self, service: str, env: str) -> str:
        return self.bus.settings.key("verified", service, env)

    def set(self, service: str, env: str, digest: str) -> None:
        self.bus.redis.set(self._key(service, env), digest)

    def get(self, service: str, env: str) -> str | None:
        value = self.bus.redis.get(self._key(service, env))
        return value.decode() if value is not None else None


def cells_with_state(bus: Bus, cells: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (service, environment) CELLS that have a canary analysis or a verified digest: the
    other cells have no canary to show. One MGET per thousand keys, rather than two reads per
    cell, all sent in one write (adapters/pipelined.py; on a Redis Cluster, redis-py's
    mget_nonatomic splits them by slot)."""
    analyses, verified = CanaryStore(bus), VerifiedStore(bus)
    keys = [k for s, e in cells for k in (analyses._key(s, e), verified._key(s, e))]
    found: list[object] = []
    if bus.settings.redis_cluster:
        for at in range(0, len(keys), 1000):
            found += bus.redis.mget_nonatomic(keys[at : at + 1000])
    else:
        found = list(pipelined.mget(bus.redis, [k.encode() for k in keys]))
    return {
        cell
        for cell, analysis, digest in zip(cells, found[::2], found[1::2], strict=True)
        if analysis is not None or digest is not None
    }
