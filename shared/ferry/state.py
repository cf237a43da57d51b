"""Ferry's state in Redis: a projection of the streams (evidence per digest and environment),
rebuilt by replaying them. The one module that knows these keys."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ferry.bus import Bus

ANY_CHECK = "*"  # a CI result without a check name


@dataclass(frozen=True)
class Evidence:
    """What is known about one digest in one environment: CI results by check name."""

    checks: dict[str, str] = field(default_factory=dict)  # check -> "success" | "failure"
    urls: dict[str, str] = field(default_factory=dict)

    def green(self) -> set[str]:
        return {name for name, status in self.checks.items() if status == "success"}


class EvidenceStore:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _key(self, service: str, digest: str, env: str) -> str:
        return self.bus.settings.key("evidence", service, env, digest)

    def record_check(
        self, service: str, digest: str, env: str, check: str | None, status: str, url: str | None
    ) -> None:
        """The latest result of a check wins: a red run after a green one makes it red again."""
        value = json.dumps({"status": status, "url": url})
        self.bus.redis.hset(self._key(service, digest, env), check or ANY_CHECK, value)

    def get(self, service: str, digest: str, env: str) -> Evidence:
        raw = self.bus.redis.hgetall(self._key(service, digest, env))
        checks, urls = {}, {}
        for name, value in raw.items():
            data = json.loads(value)
            checks[name.decode()] = data["status"]
            if data.get("url"):
                urls[name.decode()] = data["url"]
        return Evidence(checks=checks, urls=urls)


@dataclass(frozen=True)
class Candidate:
    """The digest currently chosen for (service, environment), and how new its build is."""

    digest: str
    rank: float  # when it was built (epoch seconds): a newer build outranks an older one
    promotion_id: str


class CandidateStore:
    """Build times per digest, and the current candidate per (service, environment).

    Written by gate-evaluator under its per-(service, environment) lock; read by pr-writer to
    close a pull request that a newer build superseded before it merged."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def record_build(self, service: str, digest: str, rank: float) -> None:
        # The first report of a build wins: a replayed or repeated build event changes nothing.
        self.bus.redis.set(self.bus.settings.key("built", service, digest), repr(rank), nx=True)

    def build_rank(self, service: str, digest: str) -> float | None:
        value = self.bus.redis.get(self.bus.settings.key("built", service, digest))
        return float(value) if value is not None else None

    def _key(self, service: str, env: str) -> str:
        return self.bus.settings.key("candidate", service, env)

    def get(self, service: str, env: str) -> Candidate | None:
        raw = self.bus.redis.hgetall(self._key(service, env))
        if not raw:
            return None
        return Candidate(
            digest=raw[b"digest"].decode(),
            rank=float(raw[b"rank"]),
            promotion_id=raw[b"promotion_id"].decode(),
        )

    def set(self, service: str, env: str, candidate: Candidate) -> None:
        self.bus.redis.hset(
            self._key(service, env),
            mapping={
                "digest": candidate.digest,
                "rank": repr(candidate.rank),
                "promotion_id": candidate.promotion_id,
            },
        )
