"""What `ferry previews ls|extend|reap` report and ask for, read from preview-reaper's records
(the reaper alone acts on the forge: extend and reap are events it handles)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ferry.adapters.preview_store import PreviewStore, Record
from ferry.core.errors import Rejected
from ferry.core.events import PreviewEvent, now_utc
from ferry.core.policy import Previews
from ferry.core.previews import PreviewStatus, preview_status
from ferry.runtime.resources import connect, open_repo
from ferry.runtime.settings import Settings


class PreviewError(Rejected):
    """A preview that does not exist or cannot take the request; the message says why."""


@dataclass(frozen=True)
class PreviewView:
    key: str
    status: PreviewStatus
    record: Record
    forge_log: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        s = self.status
        return {
            "preview": self.key,
            "state": s.state,
            "reason": s.reason,
            "team": s.team,
            "started_at": _iso(s.period),
            "last_activity": _iso(s.last_activity),
            "expires_at": _iso(s.expires_at),
            "warn_at": _iso(s.warn_at),
            "due": _iso(s.due) if s.state in ("active", "warned") else None,
            "dry_run": any(m.dry_run for m in s.marks),
            "pending": [
                {"action": a.kind, "attempts": a.attempts, "error": a.error}
                for a in self.record.outbox
            ],
            # With the local forge (and in dry run): what the reaper did on the application PR.
            "forge_log": self.forge_log,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _policy(settings: Settings) -> Previews:
    return open_repo(settings).policy().previews


def previews(settings: Settings, *, now: datetime | None = None) -> list[PreviewView]:
    """Every preview the reaper knows, by name."""
    store = PreviewStore(connect(settings))
    policy, now = _policy(settings), now or now_utc()
    return [
        PreviewView(
            key=r.key,
            status=preview_status(policy, r.history(), now),
            record=r,
            forge_log=store.action_log(r.key),
        )
        for r in store.records()
    ]


def parse_key(key: str) -> tuple[str, int]:
    """'shop/web#7' -> ('shop/web', 7)."""
    repo, sep, number = key.rpartition("#")
    if not sep or not number.isdigit() or "/" not in repo:
        raise PreviewError(f"name a preview as OWNER/NAME#PR (e.g. shop/web#7), got {key!r}")
    return repo, int(number)


def request(
    settings: Settings, key: str, kind: Literal["extend", "reap"], **fields: Any
) -> tuple[PreviewEvent, str]:
    """Publish a person's `extend` or `reap` for the live preview KEY; returns the event and what
    the rule makes of it (the new end, or the reaping)."""
    repo, pr = parse_key(key)
    bus = connect(settings)
    record = PreviewStore(bus).load(f"{repo}#{pr}")
    policy, now = _policy(settings), now_utc()
    status = preview_status(policy, record.history(), now) if record else None
    if record is None or status is None or not status.live:
        found = f"{status.state}: {status.reason}" if status else "preview-reaper has no record"
        raise PreviewError(f"{repo}#{pr} is not a live preview ({found})")
    event = PreviewEvent(kind=kind, repo=repo, pr=pr, occurred_at=now, **fields)
    after = preview_status(policy, [*record.history(), event], now)
    bus.publish(event)
    if kind == "reap":
        return event, "reaping now"
    assert after.expires_at is not None and status.period is not None
    capped = (
        f" (capped: max_ttl allows until {(status.period + policy.max_ttl).isoformat()})"
        if after.expires_at == status.period + policy.max_ttl
        else ""
    )
    return event, f"reaped at {after.expires_at.isoformat()}{capped}"
