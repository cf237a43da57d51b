"""Ferry's state in Redis: a projection of the streams (evidence per digest and environment),
rebuilt by replaying them. The one module that knows these keys."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from ferry.adapters.bus import Bus

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

    def record_build(
        self, service: str, digest: str, rank: float, author: str | None = None
    ) -> None:
        # The first report of a build wins: a replayed or repeated build event changes nothing.
        self.bus.redis.set(self.bus.settings.key("built", service, digest), repr(rank), nx=True)
        if author:
            self.bus.redis.set(self.bus.settings.key("author", service, digest), author, nx=True)

    def author(self, service: str, digest: str) -> str | None:
        value = self.bus.redis.get(self.bus.settings.key("author", service, digest))
        return value.decode() if value is not None else None

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


class SignalStore:
    """Approvals and rejections of a digest for an environment, by actor (the latest word of
    each actor wins: approving after rejecting withdraws the rejection, and the other way round)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _key(self, kind: str, service: str, env: str, digest: str) -> str:
        return self.bus.settings.key(kind, service, env, digest)

    def record(
        self, kind: str, service: str, env: str, digest: str, actor: str, reason: str
    ) -> None:
        mine, other = (
            ("approvals", "rejections") if kind == "approval" else ("rejections", "approvals")
        )
        with self.bus.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(mine, service, env, digest), actor, reason)
            pipe.hdel(self._key(other, service, env, digest), actor)
            pipe.execute()

    def get(self, kind: str, service: str, env: str, digest: str) -> dict[str, str]:
        raw = self.bus.redis.hgetall(self._key(kind, service, env, digest))
        return {k.decode(): v.decode() for k, v in raw.items()}


class LiveStore:
    """When each digest went live in each environment (the merge of its promotion)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def mark(self, service: str, env: str, digest: str, when: datetime) -> None:
        key = self.bus.settings.key("live", service, env)
        self.bus.redis.hsetnx(key, digest, when.isoformat())

    def since(self, service: str, env: str, digest: str) -> datetime | None:
        value = self.bus.redis.hget(self.bus.settings.key("live", service, env), digest)
        return datetime.fromisoformat(value.decode()) if value is not None else None


@dataclass(frozen=True)
class Waiting:
    service: str
    digest: str
    source: str
    target: str
    gates: str = ""  # the gates' statuses when last decided, to audit changes only


class WaitingStore:
    """Promotions held only by gates that time or people will open (soak, windows, approvals):
    gate-evaluator looks at them again on every tick."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.key = bus.settings.key("waiting")

    def add(self, promotion_id: str, waiting: Waiting) -> None:
        self.bus.redis.hset(self.key, promotion_id, json.dumps(waiting.__dict__))

    def remove(self, promotion_id: str) -> None:
        self.bus.redis.hdel(self.key, promotion_id)

    def get(self, promotion_id: str) -> Waiting | None:
        raw = self.bus.redis.hget(self.key, promotion_id)
        return Waiting(**json.loads(raw)) if raw is not None else None

    def all(self) -> dict[str, Waiting]:
        raw = self.bus.redis.hgetall(self.key)
        return {k.decode(): Waiting(**json.loads(v)) for k, v in raw.items()}


class PromotionStore:
    """What each promotion id stands for, so that a merge made by a person (`ferry pr merge`)
    can be reported on ferry:changes like one made by pr-writer."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def remember(self, promotion_id: str, **fields: str) -> None:
        self.bus.redis.hset(self.bus.settings.key("promotion", promotion_id), mapping=fields)

    def get(self, promotion_id: str) -> dict[str, str] | None:
        raw = self.bus.redis.hgetall(self.bus.settings.key("promotion", promotion_id))
        return {k.decode(): v.decode() for k, v in raw.items()} or None


class RollbackStore:
    """Digests rolled back out of an environment: gate-evaluator must not promote such a digest
    there again on its own (a person may, with `ferry promote`, or a newer build replaces it).

    Key: <prefix>rolledback:<service>:<env>, a hash digest -> JSON {to, actor, reason, at,
    promotion_id}."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _key(self, service: str, env: str) -> str:
        return self.bus.settings.key("rolledback", service, env)

    def mark(self, service: str, env: str, digest: str, **info: str | None) -> None:
        self.bus.redis.hset(self._key(service, env), digest, json.dumps(info, sort_keys=True))

    def get(self, service: str, env: str, digest: str) -> dict[str, str | None] | None:
        raw = self.bus.redis.hget(self._key(service, env), digest)
        return json.loads(raw) if raw is not None else None

    def is_rolled_back(self, service: str, env: str, digest: str) -> bool:
        return bool(self.bus.redis.hexists(self._key(service, env), digest))

    def forget(self, service: str, env: str, digest: str) -> None:
        """A person asked for DIGEST in ENV again: it is no longer held back."""
        self.bus.redis.hdel(self._key(service, env), digest)
