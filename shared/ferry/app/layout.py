"""Moving a deployment's keys to the cluster-ready layout (docs/redis.md, "Upgrading"): the keys
that changed names and hold more than a moment's state. Run once (`ferry migrate-keys`) against
the single server the deployment used before, with the workers stopped; running it again moves
nothing."""

from __future__ import annotations

from dataclasses import dataclass

from ferry.adapters.bus import Bus
from ferry.adapters.preview_store import PreviewStore
from ferry.adapters.state import _glob_escape
from ferry.core.events import MODELS


@dataclass
class Moved:
    once: int = 0  # publish-once markers
    previews: int = 0  # preview records and team sets
    due: int = 0  # preview-reaper's due times (members)

    def as_dict(self) -> dict[str, int]:
        return {"once": self.once, "previews": self.previews, "due": self.due}


def _old(bus: Bus, *parts: str) -> list[tuple[str, str]]:
    """(key, what follows the old prefix) of every key under <prefix><parts>:."""
    prefix = bus.settings.key(*parts, "")
    found = bus.redis.scan_iter(match=_glob_escape(prefix) + "*", count=1000)
    return sorted((k.decode(), k.decode()[len(prefix) :]) for k in found)


def migrate(bus: Bus, *, dry_run: bool = False) -> Moved:
    moved = Moved()
    r = bus.redis
    # A marker named only its key, not its stream: it stands for every stream, so no effect
    # published before the upgrade is published again.
    for key, rest in _old(bus, "once"):
        if rest.startswith("{"):
            continue  # already in the new layout
        moved.once += 1
        if dry_run:
            continue
        value, ttl = r.get(key), r.pttl(key)
        if value is None:
            continue  # expired meanwhile
        for short in sorted(MODELS):
            r.set(bus.settings.near(bus.stream(short), "once", rest), value, nx=True)
            if ttl > 0:
                r.pexpire(bus.settings.near(bus.stream(short), "once", rest), ttl)
        r.delete(key)
    store = PreviewStore(bus)
    for kind in ("record", "team"):
        for key, rest in _old(bus, "previews", kind):
            moved.previews += 1
            if not dry_run:
                r.renamenx(key, store._key(kind, rest))
    old_due = bus.settings.key("due", "preview-reaper")
    members = r.zrange(old_due, 0, -1, withscores=True)
    moved.due += len(members)
    if members and not dry_run:
        r.zadd(store.due.key, {m: score for m, score in members}, nx=True)
        r.delete(old_due)
    return moved
