"""Ferry's state in Redis: a projection of the streams (evidence, people's words, candidates,
promotions, due times), rebuilt by replaying them. The one module that knows these keys; it loads
and stores the plain values of `ferry.core.evidence` and `ferry.core.decision`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from ferry.adapters.bus import Bus
from ferry.adapters.due import DueTimes
from ferry.core.decision import PromotionView
from ferry.core.deployments import Deployment
from ferry.core.evidence import ANY_CHECK, Candidate, Evidence, Word

__all__ = [
    "ANY_CHECK",
    "CandidateStore",
    "DeployStore",
    "DueStore",
    "EvidenceStore",
    "HoldStore",
    "LiveStore",
    "PromotionStore",
    "SignalStore",
    "Subject",
]


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
        self.bus.write().hset(self._key(service, digest, env), check or ANY_CHECK, value)

    def get(self, service: str, digest: str, env: str) -> Evidence:
        raw = self.bus.redis.hgetall(self._key(service, digest, env))
        checks, urls = {}, {}
        for name, value in raw.items():
            data = json.loads(value)
            checks[name.decode()] = data["status"]
            if data.get("url"):
                urls[name.decode()] = data["url"]
        return Evidence(checks=checks, urls=urls)


# Set the candidate and bump its fence in one step: every choice gets a higher fence.
_CHOOSE = """
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'digest', ARGV[1], 'rank', ARGV[2], 'promotion_id', ARGV[3])
return fence
"""


class CandidateStore:
    """Build times per digest, and the candidate chosen per (service, environment) with its
    fence. Written by gate-evaluator under its per-(service, environment) lock; pr-writer reads
    only the fence, to leave alone a command that a later choice replaced."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @cached_property
    def _choose(self) -> Any:  # registered when first used: most decisions choose nothing
        return self.bus.redis.register_script(_CHOOSE)

    def record_build(
        self, service: str, digest: str, rank: float, author: str | None = None
    ) -> None:
        # The first report of a build wins: a replayed or repeated build event changes nothing.
        write = self.bus.write()
        write.set(self.bus.settings.key("built", service, digest), repr(rank), nx=True)
        if author:
            write.set(self.bus.settings.key("author", service, digest), author, nx=True)

    def author(self, service: str, digest: str) -> str | None:
        value = self.bus.redis.get(self.bus.settings.key("author", service, digest))
        return value.decode() if value is not None else None

    def build_rank(self, service: str, digest: str) -> float | None:
        value = self.bus.redis.get(self.bus.settings.key("built", service, digest))
        return float(value) if value is not None else None

    def build_ranks(self, pairs: list[tuple[str, str]]) -> list[float | None]:
        """build_rank of each (service, digest) of PAIRS, in one round trip."""
        with self.bus.redis.pipeline(transaction=False) as pipe:
            for service, digest in pairs:
                pipe.get(self.bus.settings.key("built", service, digest))
            values = pipe.execute() if pairs else []
        return [float(v) if v is not None else None for v in values]

    def _key(self, service: str, env: str) -> str:
        return self.bus.settings.key("candidate", service, env)

    def get(self, service: str, env: str) -> Candidate | None:
        raw = self.bus.redis.hgetall(self._key(service, env))
        if b"digest" not in raw:
            return None
        return Candidate(
            digest=raw[b"digest"].decode(),
            rank=float(raw[b"rank"]),
            promotion_id=raw[b"promotion_id"].decode(),
            fence=int(raw.get(b"fence", 0)),
        )

    def choose(self, service: str, env: str, digest: str, rank: float, pid: str) -> int:
        """Make DIGEST the candidate for (SERVICE, ENV); returns its fence."""
        return int(self._choose(keys=[self._key(service, env)], args=[digest, repr(rank), pid]))

    def fence(self, service: str, env: str) -> int:
        value = self.bus.redis.hget(self._key(service, env), "fence")
        return int(value) if value is not None else 0


class SignalStore:
    """People's words (approvals and rejections) about a digest for an environment: each actor's
    latest word, with when it was given (the latest word of each actor wins: approving after
    rejecting withdraws the rejection, and the other way round)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _key(self, service: str, env: str, digest: str) -> str:
        return self.bus.settings.key("words", service, env, digest)

    def record(self, word: Word, service: str) -> None:
        key = self._key(service, word.env, word.digest)
        # A word given earlier than the standing one (a replay, a late delivery) does not win.
        old = self.bus.redis.hget(key, word.actor)
        if old is not None and word.at is not None:
            at = json.loads(old).get("at")
            if at is not None and datetime.fromisoformat(at) > word.at:
                return
        self.bus.redis.hset(key, word.actor, _word_value(word))

    def replace_via(
        self, via: str, service: str, env: str, digest: str, words: tuple[Word, ...]
    ) -> None:
        """WORDS are now all the standing words that came VIA this channel (the reviews on the
        forge, read whole): a word of that channel not among them is withdrawn; a later word of
        another channel by the same actor stays."""
        key = self._key(service, env, digest)
        raw = self.bus.redis.hgetall(key)
        new = {w.actor: w for w in words}
        with self.bus.redis.pipeline(transaction=True) as pipe:
            for actor, value in raw.items():
                data = json.loads(value)
                name = actor.decode()
                if data.get("via", "cli") == via and name not in new:
                    pipe.hdel(key, name)
                elif name in new and data.get("via", "cli") != via and data.get("at"):
                    at = new[name].at
                    if at is not None and datetime.fromisoformat(data["at"]) > at:
                        del new[name]  # said later through the other channel: that stands
            for word in new.values():
                pipe.hset(key, word.actor, _word_value(word))
            pipe.execute()

    def get(self, service: str, env: str, digest: str) -> tuple[Word, ...]:
        raw = self.bus.redis.hgetall(self._key(service, env, digest))
        words = []
        for actor, value in raw.items():
            data = json.loads(value)
            at = datetime.fromisoformat(data["at"]) if data.get("at") else None
            via = data.get("via", "cli")
            words.append(
                Word(data["kind"], actor.decode(), digest, env, data.get("reason", ""), at, via)
            )
        return tuple(sorted(words, key=lambda w: w.actor))


def _glob_escape(text: str) -> str:
    """TEXT matched literally in a Redis glob pattern (a stream prefix may hold * or [)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _word_value(word: Word) -> str:
    value = {"kind": word.kind, "reason": word.reason, "via": word.via}
    if word.at is not None:
        value["at"] = word.at.isoformat()
    return json.dumps(value)


class LiveStore:
    """When each digest went live in each environment (the merge of its promotion)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def mark(
        self, service: str, env: str, digest: str, when: datetime, *, pipe: Any = None
    ) -> None:
        """DIGEST went live in ENV at WHEN (the first time told wins). PIPE: queue it there."""
        key = self.bus.settings.key("live", service, env)
        (pipe or self.bus.redis).hsetnx(key, digest, when.isoformat())

    def since(self, service: str, env: str, digest: str) -> datetime | None:
        value = self.bus.redis.hget(self.bus.settings.key("live", service, env), digest)
        return datetime.fromisoformat(value.decode()) if value is not None else None


class DeployStore:
    """What Argo CD last reported about the application of each (service, environment), one
    hash each (ferry.core.deployments.Deployment); gate-evaluator keeps it, the snapshot reads
    it for environments whose `live_when` waits for Argo CD."""

    _TIMES = ("at", "synced_since", "healthy_since")

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _key(self, service: str, env: str) -> str:
        return self.bus.settings.key("deployed", service, env)

    def get(self, service: str, env: str) -> Deployment | None:
        raw = self.bus.redis.hgetall(self._key(service, env))
        if not raw:
            return None
        f = {k.decode(): v.decode() for k, v in raw.items()}
        times = {k: datetime.fromisoformat(f[k]) if f.get(k) else None for k in self._TIMES}
        at = times.pop("at")
        assert at is not None
        return Deployment(f["digest"], f["app"], f["sync"], f["health"], at, **times)

    def put(self, service: str, env: str, deployed: Deployment) -> None:
        fields = {
            "digest": deployed.digest,
            "app": deployed.app,
            "sync": deployed.sync,
            "health": deployed.health,
            **{k: t.isoformat() if (t := getattr(deployed, k)) else "" for k in self._TIMES},
        }
        self.bus.redis.hset(self._key(service, env), mapping=fields)


class PromotionStore:
    """What each promotion id stands for and how far it got (requested, open, merged, closed),
    as gate-evaluator heard it; a merge made by a person (`ferry pr merge`) is reported on
    ferry:changes from it like one made by pr-writer."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _key(self, promotion_id: str) -> str:
        return self.bus.settings.key("promotion", promotion_id)

    def remember(self, promotion_id: str, **fields: Any) -> None:
        mapping = {k: str(v) for k, v in fields.items() if v is not None}
        if mapping:
            self.bus.redis.hset(self._key(promotion_id), mapping=mapping)

    def forget(self, promotion_id: str) -> None:
        """A failed promotion may be asked for again: it starts from nothing."""
        self.bus.redis.hdel(
            self._key(promotion_id), "state", "pr", "gates_sent", "opened_with", "auto_merge"
        )

    def ask_again(self, promotion_id: str) -> int:
        """A person asked for this promotion again: it starts from nothing, under a new attempt
        (its pull request gets a key of its own); returns the attempt."""
        key = self._key(promotion_id)
        with self.bus.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(key, "state", "pr", "gates_sent", "opened_with", "auto_merge", "merge_commit")
            pipe.hincrby(key, "attempt", 1)
            return int(pipe.execute()[1])

    def attempt(self, promotion_id: str) -> int:
        value = self.bus.redis.hget(self._key(promotion_id), "attempt")
        return int(value) if value is not None else 0

    def get(self, promotion_id: str) -> dict[str, str] | None:
        raw = self.bus.redis.hgetall(self._key(promotion_id))
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    def unfinished(self) -> list[tuple[str, dict[str, str]]]:
        """Every promotion still requested or open, with its record (for the reconcile pass)."""
        prefix = self.bus.settings.key("promotion", "")
        pattern = _glob_escape(prefix) + "*"
        out = []
        for key in self.bus.redis.scan_iter(match=pattern, count=500):
            pid = key.decode()[len(prefix) :]
            record = self.get(pid)
            if record and record.get("state") in ("requested", "open") and "service" in record:
                out.append((pid, record))
        return sorted(out)

    def view(self, promotion_id: str) -> PromotionView | None:
        record = self.get(promotion_id)
        if record is None or record.get("state") not in ("requested", "open", "merged", "closed"):
            return None
        return PromotionView(
            promotion_id=promotion_id,
            digest=record["digest"],
            state=record["state"],  # type: ignore[arg-type]
            pr=int(record["pr"]) if record.get("pr") else None,
            gates_sent=record.get("gates_sent", ""),
            auto_merge=record.get("auto_merge") == "1",
            merge_commit=record.get("merge_commit") or None,
        )


class HoldStore:
    """Holds per environment: who stopped promotions into it (for one service, or "*" for
    every service), when and why. Key: <prefix>hold:<env>, a hash scope -> JSON."""

    EVERY = "*"

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _key(self, env: str) -> str:
        return self.bus.settings.key("hold", env)

    def hold(self, env: str, service: str | None, actor: str, reason: str, at: datetime) -> None:
        value = json.dumps({"actor": actor, "reason": reason, "at": at.isoformat()})
        self.bus.redis.hset(self._key(env), service or self.EVERY, value)

    def release(self, env: str, service: str | None) -> bool:
        return bool(self.bus.redis.hdel(self._key(env), service or self.EVERY))

    def get(self, env: str, service: str) -> str | None:
        """Why SERVICE may not move into ENV now ("held by alice: freeze"), or None. The whole
        hash is read (a few holds at most): a batched read of every cell (`ferry status`) reads
        it once per environment, not twice per service."""
        held = self.bus.redis.hgetall(self._key(env))
        raw = (held.get(service.encode()), held.get(self.EVERY.encode()))
        for scope, value in zip((service, None), raw, strict=True):
            if value is not None:
                data = json.loads(value)
                what = "" if scope else " (every service)"
                why = f": {data['reason']}" if data.get("reason") else ""
                return f"held{what} by {data['actor']} since {data['at'][:16]}Z{why}"
        return None

    def all(self) -> dict[str, dict[str, dict[str, str]]]:
        """env -> scope -> {actor, reason, at}, for every hold."""
        out: dict[str, dict[str, dict[str, str]]] = {}
        for key in self.bus.redis.scan_iter(match=self._key("*")):
            env = key.decode().rsplit(":", 1)[1]
            raw = self.bus.redis.hgetall(key)
            out[env] = {k.decode(): json.loads(v) for k, v in raw.items()}
        return out


@dataclass(frozen=True)
class Subject:
    """What a due time is about: one (service, source -> target)."""

    service: str
    source: str
    target: str

    def member(self) -> str:
        return f"{self.service}|{self.source}|{self.target}"

    @classmethod
    def parse(cls, member: str) -> Subject:
        service, source, target = member.split("|")
        return cls(service, source, target)


class DueStore:
    """When each waiting decision may change (a soak ends, a window opens, an approval expires):
    gate-evaluator's due times (ferry.adapters.due), one member per subject, so that it wakes
    for the earliest one and a restart or a replica change loses none."""

    def __init__(self, bus: Bus) -> None:
        self.times = DueTimes(bus, "gate-evaluator")

    def set(self, subject: Subject, when: datetime | None, *, pipe: Any = None) -> None:
        """Look at SUBJECT again at WHEN (None: nothing is due for it). PIPE: queue it there."""
        self.times.set(subject.member(), when, pipe=pipe)

    def next_due(self) -> float | None:
        return self.times.next_due()

    def get(self, subject: Subject) -> float | None:
        return self.times.when(subject.member())

    def all(self) -> list[Subject]:
        return [Subject.parse(m) for m in self.times.members()]


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

    def all(self, pairs: list[tuple[str, str]]) -> list[dict[str, dict[str, str | None]]]:
        """For each (service, env) of PAIRS, every digest rolled back out of it (and not asked
        for again since), in one round trip."""
        with self.bus.redis.pipeline(transaction=False) as pipe:
            for service, env in pairs:
                pipe.hgetall(self._key(service, env))
            found = pipe.execute() if pairs else []
        return [{k.decode(): json.loads(v) for k, v in raw.items()} for raw in found]

    def is_rolled_back(self, service: str, env: str, digest: str) -> bool:
        return bool(self.bus.redis.hexists(self._key(service, env), digest))

    def forget(self, service: str, env: str, digest: str) -> None:
        """A person asked for DIGEST in ENV again: it is no longer held back."""
        self.bus.redis.hdel(self._key(service, env), digest)
