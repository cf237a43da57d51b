"""`ferry stats`: the four DORA figures per service and environment, from the GitOps history
(every change of a pin on main, and when it landed) and Ferry's state in Redis (when each digest
was built, which digests were rolled back). The exact definitions are in docs/stats.md; the
computation below is pure and takes its inputs as plain values."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ferry.core.errors import Rejected, quote

DEFAULT_SINCE = "30d"
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([mhdw])")
ALL = "*"  # the service name of the rows that pool every service of an environment


class StatsError(Rejected):
    """A mistake in what `ferry stats` was asked: one line that says what to give instead."""


def parse_since(text: str, now: datetime) -> datetime:
    """The start of the window: a duration back from NOW (90m, 12h, 30d, 2w) or a date or time
    (2026-11-01 is midnight UTC; a time without a zone is UTC)."""
    value = text.strip()
    match = _DURATION.fullmatch(value)
    if match:
        seconds = int(match[1]) * _UNITS[match[2]]
        if seconds == 0:
            raise StatsError(f"--since must be longer than zero, got {quote(text)}")
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            raise StatsError(f"--since is too long, got {quote(text)}") from None
    try:
        since = datetime.fromisoformat(value)
    except ValueError:
        raise StatsError(
            "--since must be a duration (90m, 12h, 30d, 2w) or a date "
            f"(2026-11-01, 2026-11-01T09:00:00Z), got {quote(text)}"
        ) from None
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    if since >= now:
        raise StatsError(f"--since {since.isoformat()} is not in the past")
    return since


@dataclass(frozen=True)
class Deployment:
    """One change of what a service pins in an environment, as the figures count it."""

    service: str
    env: str
    digest: str
    at: datetime
    rollback: bool  # it pinned back a digest that ran here before, or Ferry rolled back to it
    built: datetime | None  # when the digest was built (or first reported), if Ferry knows
    restored_at: datetime | None  # a failed deployment: when the rollback that ended it landed

    @property
    def failed(self) -> bool:
        return self.restored_at is not None


def classify(
    service: str,
    env: str,
    changes: Iterable[tuple[str, datetime]],
    rolled_back: Mapping[str, Mapping[str, Any]],
    built: Mapping[str, datetime | None],
) -> list[Deployment]:
    """CHANGES (digest, landed at), oldest first, as deployments. ROLLED_BACK is Ferry's record of
    digests rolled back out of ENV (digest -> {"to": the digest pinned back, ...}); BUILT the
    build time of each digest. A change is a rollback when its digest ran in ENV before, or
    when Ferry rolled the previous digest back to it; the deployment it replaced failed."""
    changes = list(changes)
    seen: set[str] = set()
    rollback: list[bool] = []
    for i, (digest, _) in enumerate(changes):
        previous = changes[i - 1][0] if i else None
        marked = previous is not None and (rolled_back.get(previous) or {}).get("to") == digest
        rollback.append(i > 0 and (digest in seen or marked))
        seen.add(digest)
    out = []
    for i, (digest, at) in enumerate(changes):
        restored = changes[i + 1][1] if i + 1 < len(changes) and rollback[i + 1] else None
        out.append(Deployment(service, env, digest, at, rollback[i], built.get(digest), restored))
    return out


def figures(deployments: Iterable[Deployment], since: datetime, now: datetime) -> dict[str, Any]:
    """The DORA figures of DEPLOYMENTS that landed in [SINCE, NOW] (rollbacks counted apart)."""
    window = [d for d in deployments if since <= d.at <= now]
    deploys = [d for d in window if not d.rollback]
    days = (now - since).total_seconds() / 86400
    failed = [d for d in deploys if d.failed]
    leads = [max(0.0, (d.at - d.built).total_seconds()) for d in deploys if d.built is not None]
    restores = [(d.restored_at - d.at).total_seconds() for d in failed if d.restored_at]
    return {
        "deployments": len(deploys),
        "per_day": round(len(deploys) / days, 4),
        "per_week": round(7 * len(deploys) / days, 4),
        "rollbacks": len(window) - len(deploys),
        "failed": len(failed),
        "change_failure_rate": round(len(failed) / len(deploys), 4) if deploys else None,
        "lead_time": _spread(leads),
        "time_to_restore": _spread(restores),
    }


def _spread(seconds: list[float]) -> dict[str, Any]:
    """Median (the middle value, or the mean of the two middle ones) and p90 (nearest rank: the
    smallest value at least 90% of the values are at or below) in seconds, and how many."""
    if not seconds:
        return {"median_s": None, "p90_s": None, "count": 0}
    ordered = sorted(seconds)
    p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
    return {
        "median_s": round(statistics.median(ordered), 3),
        "p90_s": round(p90, 3),
        "count": len(ordered),
    }


def stats(
    settings: Any,
    *,
    since: datetime,
    now: datetime,
    service: str | None = None,
    env: str | None = None,
) -> dict[str, Any]:
    """The figures for every service and environment on main (or SERVICE, ENV), one row each,
    and a row per environment that pools every service (service "*")."""
    from ferry.adapters.state import CandidateStore, RollbackStore
    from ferry.runtime.resources import connect, open_repo

    repo = open_repo(settings)
    policy = repo.at_main().policy
    envs = policy.env_names()
    if env is not None:
        policy.environment(env)  # unknown: one line naming the environments
        envs = [env]
    services = repo.services()
    if service is not None:
        if service not in services:
            raise StatsError(
                f"no service {quote(service)} on main of the GitOps repository "
                "(`ferry status` lists them)"
            )
        services = [service]
    history = repo.pin_changes(set(services), set(envs))
    bus = connect(settings)
    candidates, rollbacks = CandidateStore(bus), RollbackStore(bus)
    pairs = sorted({(s, c.digest) for (s, _), cs in history.items() for c in cs})
    ranks = dict(zip(pairs, candidates.build_ranks(pairs), strict=True))
    marked = dict(zip(history, rollbacks.all(list(history)), strict=True))
    rows: list[dict[str, Any]] = []
    pooled: dict[str, list[Deployment]] = {}
    for s in services:
        for e in envs:
            changes = history.get((s, e), [])
            built = {
                d: datetime.fromtimestamp(r, UTC) if (r := ranks.get((s, d))) is not None else None
                for d in {c.digest for c in changes}
            }
            marks = marked.get((s, e), {})
            found = classify(s, e, [(c.digest, c.at) for c in changes], marks, built)
            pooled.setdefault(e, []).extend(found)
            rows.append({"service": s, "env": e, **figures(found, since, now)})
    every = [{"service": ALL, "env": e, **figures(pooled[e], since, now)} for e in envs]
    return {
        "since": since.isoformat(),
        "until": now.isoformat(),
        "days": round((now - since).total_seconds() / 86400, 4),
        "rows": rows,
        "all": every if service is None else [],
    }


def duration(seconds: float | None) -> str:
    """90061 as '1d 1h', 3720 as '1h 2m', 75 as '1m 15s'; None as '-'."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    for unit, size, small, small_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if s >= size:
            rest = (s % size) // small_size
            return f"{s // size}{unit}" + (f" {rest}{small}" if rest else "")
    return f"{s}s"
