"""Preview environments: when a preview expires, when it is warned, and whether its team has room
(pure: a function of the policy's `previews` block, the preview's history and now).

A pull request is a preview while it is open and carries every required label and none of the
excluded ones. Each stretch of time it stays one is a *period*: removing the label (by a person or
by the reaper) ends the period, adding it again starts a new one with a fresh TTL.

Within a period the preview ends at
- `until`, when an event of the period set one (an absolute end), else
- its start + `ttl` (`ttl_from: created`) or its last activity + `ttl` (`ttl_from: last_activity`),
- pushed later by each `extend` (to its `until`, or to the extension's time + `ttl`),
- and never later than the period's start + `max_ttl`;
- or at once when a person asks (`reap`).

The history is the preview's events (`PreviewEvent`) plus the reaper's own marks (`Mark`: warned,
reaped, refused, admitted). Events are read in (time, kind, event id) order, so events with the same
timestamp give the same answer whatever order they arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from ferry.core.events import PreviewEvent
from ferry.core.policy import Previews
from ferry.core.windows import human

State = Literal[
    "pending", "active", "warned", "reaped", "refused", "closed", "unlabeled", "unknown"
]
MarkKind = Literal["admitted", "warned", "reaped", "refused"]
# States in which a preview costs its team a place.
LIVE: frozenset[str] = frozenset({"pending", "active", "warned"})

# Same-timestamp events are applied in this order: the PR exists before it changes, and a close
# comes last. Marks (the reaper's own decisions) come after the events of their instant.
_KIND_ORDER = {
    "opened": 0,
    "labeled": 1,
    "updated": 2,
    "unlabeled": 3,
    "extend": 4,
    "reap": 5,
    "closed": 6,
    "admitted": 10,
    "warned": 11,
    "refused": 12,
    "reaped": 13,
}


@dataclass(frozen=True)
class Mark:
    """A decision the reaper made about one period of a preview (kept beside its events)."""

    kind: MarkKind
    at: datetime
    period: datetime  # the start of the period it belongs to
    reason: str = ""
    for_end: datetime | None = None  # a warning: the end it warned about
    dry_run: bool = False


@dataclass(frozen=True)
class PreviewStatus:
    """What the rule says about one preview at one instant."""

    state: State
    reason: str
    team: str | None = None
    period: datetime | None = None  # when the current (or last) period started
    last_activity: datetime | None = None
    expires_at: datetime | None = None
    warn_at: datetime | None = None
    # What is due now ("warn", "reap") and when to look again (a warning or the expiry).
    action: Literal["warn", "reap"] | None = None
    due: datetime | None = None
    marks: tuple[Mark, ...] = field(default=())

    @property
    def live(self) -> bool:
        return self.state in LIVE


@dataclass
class _Period:
    start: datetime
    team: str | None
    last_activity: datetime
    until: datetime | None = None
    extensions: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    requested: PreviewEvent | None = None  # a person's `reap`
    marks: list[Mark] = field(default_factory=list)
    ended_by: str | None = None  # "closed", "unlabeled", or a terminal mark's kind


def required_labels(policy: Previews) -> set[str]:
    return {policy.label, *policy.required_labels}


def is_preview(policy: Previews, labels: Iterable[str]) -> bool:
    """Does a PR with LABELS ask for a preview under POLICY?"""
    have = set(labels)
    return required_labels(policy) <= have and not (have & set(policy.excluded_labels))


def ordered(history: Iterable[PreviewEvent | Mark]) -> list[PreviewEvent | Mark]:
    """HISTORY in the order the rule reads it, without repeated events (same event id)."""
    seen: set[str] = set()
    events: list[PreviewEvent | Mark] = []
    for item in sorted(history, key=_sort_key):
        if isinstance(item, PreviewEvent):
            if item.event_id in seen:
                continue
            seen.add(item.event_id)
        events.append(item)
    return events


def _sort_key(item: PreviewEvent | Mark) -> tuple[datetime, int, str]:
    if isinstance(item, PreviewEvent):
        # The JSON form breaks ties between two events that share an id (a producer's mistake)
        # the same way whichever arrived first.
        return (item.occurred_at, _KIND_ORDER[item.kind], item.event_id + item.model_dump_json())
    return (item.at, _KIND_ORDER[item.kind], item.period.isoformat())


def _periods(
    policy: Previews, history: Iterable[PreviewEvent | Mark]
) -> tuple[list[_Period], bool]:
    """Replay HISTORY into periods; also whether the PR is open at the end."""
    labels: set[str] = set()
    is_open = False
    team: str | None = None
    periods: list[_Period] = []
    current: _Period | None = None
    for item in ordered(history):
        if isinstance(item, Mark):
            if current is None or item.period != current.start:
                continue  # a mark of an older period (redelivered decision): history only
            current.marks.append(item)
            if item.kind in ("reaped", "refused") and not item.dry_run:
                # The reaper removed the label: no preview until someone adds it again.
                labels.discard(policy.label)
                current.ended_by = item.kind
                current = None
            continue
        event = item
        team = event.team or team
        if event.kind == "opened":
            is_open = True
            labels = set(event.labels)
        elif event.kind == "updated" and event.labels:
            labels = set(event.labels)
        elif event.kind == "labeled":
            labels |= set(event.labels)
        elif event.kind == "unlabeled":
            labels -= set(event.labels)
        elif event.kind == "closed":
            is_open = False
        now_preview = is_open and is_preview(policy, labels)
        if current is not None and not now_preview:
            current.ended_by = "closed" if not is_open else "unlabeled"
            current = None
        elif current is None and now_preview and event.kind not in ("extend", "reap"):
            current = _Period(start=event.occurred_at, team=team, last_activity=event.occurred_at)
            periods.append(current)
            if event.until is not None:
                current.until = event.until
            continue
        if current is None:
            continue
        current.team = team
        if event.kind == "extend":
            current.extensions.append((event.occurred_at, event.until))
            continue
        if event.kind == "reap":
            current.requested = current.requested or event
            continue
        if event.kind in ("opened", "updated", "labeled"):
            current.last_activity = max(current.last_activity, event.occurred_at)
        if event.until is not None:
            current.until = event.until
    return periods, is_open


def expiry(policy: Previews, period: _Period) -> datetime:
    """When PERIOD's preview ends (see the module's docstring)."""
    if period.until is not None:
        end = period.until
    elif policy.ttl_from == "created":
        end = period.start + policy.ttl
    else:
        end = period.last_activity + policy.ttl
    for at, until in period.extensions:
        end = max(end, until if until is not None else at + policy.ttl)
    end = min(end, period.start + policy.max_ttl)
    if period.requested is not None:
        end = min(end, period.requested.occurred_at)
    return end


def preview_status(
    policy: Previews, history: Iterable[PreviewEvent | Mark], now: datetime
) -> PreviewStatus:
    """The state of the preview whose events and marks are HISTORY, at NOW, and what is due."""
    periods, is_open = _periods(policy, history)
    if not periods:
        excluded = set(policy.excluded_labels)
        reason = (
            "not a preview: the pull request is closed"
            if not is_open
            else f"not a preview: needs label(s) {_names(required_labels(policy))}"
            + (f" and none of {_names(excluded)}" if excluded else "")
        )
        return PreviewStatus(state="unknown" if is_open else "closed", reason=reason)
    period = periods[-1]
    end = expiry(policy, period)
    # A person who asked for the reaping needs no warning about it.
    warns = policy.warn_before and period.requested is None
    warn_at = max(period.start, end - policy.warn_before) if warns else None
    base = PreviewStatus(
        state="active",
        reason="",
        team=period.team,
        period=period.start,
        last_activity=period.last_activity,
        expires_at=end,
        warn_at=warn_at,
        marks=tuple(period.marks),
    )
    terminal = [m for m in period.marks if m.kind in ("reaped", "refused")]
    if terminal:
        # A dry-run decision too is reported once and not taken again (the period goes on).
        last = terminal[-1]
        return replace(
            base, state="reaped" if last.kind == "reaped" else "refused", reason=last.reason
        )
    if period.ended_by == "closed":
        return replace(base, state="closed", reason="the pull request was closed")
    if period.ended_by == "unlabeled":
        return replace(base, state="unlabeled", reason="the label was removed on the pull request")
    if not any(m.kind == "admitted" for m in period.marks):
        return replace(base, state="pending", reason="waiting for the team's quota check")
    state = _warned_or_active(period, end)
    if now >= end:
        asked = period.requested
        if asked is not None and asked.occurred_at <= end:
            why = (
                f"reaped by hand by {asked.actor or 'someone'}: {asked.reason or 'no reason given'}"
            )
        else:
            why = f"expired at {end.isoformat()}"
        return replace(base, state=state, reason=why, action="reap", due=end)
    if warn_at is not None and state == "active":
        action: Literal["warn"] | None = "warn" if now >= warn_at else None
        return replace(base, reason=_ends_in(end, now), action=action, due=warn_at)
    return replace(base, state=state, reason=_ends_in(end, now), due=end)


def _warned_or_active(period: _Period, end: datetime) -> State:
    warned = any(m.kind == "warned" and m.for_end == end for m in period.marks)
    return "warned" if warned else "active"


def _ends_in(end: datetime, now: datetime) -> str:
    return f"reaped at {end.isoformat()}, in {human(end - now)}"


def _names(labels: set[str]) -> str:
    return ", ".join(repr(label) for label in sorted(labels))


# --------------------------------------------------------------------------- quota


@dataclass(frozen=True)
class Admission:
    """The quota's answer for a new preview: admit it (perhaps evicting another), or refuse it."""

    admit: bool
    reason: str
    evict: str | None = None  # the key of the preview to reap to make room


def admit(
    policy: Previews, team: str | None, candidate: str, others: Mapping[str, PreviewStatus]
) -> Admission:
    """May CANDIDATE become one of TEAM's previews, given the team's OTHERS (key -> status)?

    Only live previews of the team count. Beyond the quota the newcomer is refused, unless the
    policy's `evict` names which existing preview makes room."""
    quota = policy.quota_per_team
    live = {key: s for key, s in others.items() if key != candidate and s.live}
    who = f"team {team!r}" if team else "previews without a team"
    if quota is None or len(live) < quota:
        return Admission(True, f"{who}: {len(live) + 1} of {quota if quota is not None else 'any'}")
    if policy.evict == "never" or not live:
        return Admission(
            False,
            f"{who} already has {len(live)} preview(s), its quota is {quota}: "
            "close or unlabel one of them, then add the label again",
        )
    if policy.evict == "oldest":
        victim = min(live, key=lambda k: (str(live[k].period), k))
    else:  # least_active
        victim = min(live, key=lambda k: (str(live[k].last_activity), k))
    return Admission(
        True, f"{who} is at its quota of {quota}: evicting {victim} ({policy.evict})", victim
    )
