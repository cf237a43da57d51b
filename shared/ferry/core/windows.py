"""Sync windows: is a digest allowed to move now, and when will that change? (pure: takes now)

An allow window opens at each time its cron expression fires (in its timezone) and stays open for
its duration; a deny window likewise closes everything while it lasts. Deny overrides allow. With
no allow window, a digest may move whenever no deny window is open."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from ferry.core.policy import Window


@dataclass(frozen=True)
class WindowState:
    open: bool
    reason: str
    changes_at: datetime | None  # when the answer may change: look again then


def human(delta: timedelta) -> str:
    """A short duration for people: 45s, 12m, 3h20m, 2d4h."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def _local(window: Window, now: datetime) -> datetime:
    return now.astimezone(ZoneInfo(window.timezone))


def _fmt(when: datetime, window: Window) -> str:
    return f"{when:%a %d %b %H:%M} {window.timezone}"


def open_until(window: Window, now: datetime) -> datetime | None:
    """When WINDOW, open at NOW, closes; None if it is not open at NOW."""
    local = _local(window, now)
    minute = local.replace(second=0, microsecond=0)
    if croniter.match(window.cron, minute):
        start = minute
    else:
        start = croniter(window.cron, local).get_prev(datetime)
    end = start + window.duration
    # Compare absolute times: two times in one zone compare by wall clock, which goes wrong in
    # the hour repeated when clocks go back.
    return end if local.astimezone(UTC) < end.astimezone(UTC) else None


def next_opening(window: Window, now: datetime) -> datetime:
    return croniter(window.cron, _local(window, now)).get_next(datetime)


# Openings of each window looked at ahead; past the nearest last one, the caller looks again
# (an allow window every minute under a two-week freeze, say).
_LOOKAHEAD = 4


def _intervals(window: Window, now: datetime) -> tuple[list[tuple[datetime, datetime]], datetime]:
    """WINDOW's occurrence open at NOW (if any) and its next openings, as (start, end) in UTC,
    and the last opening looked at: beyond it, more openings are unknown."""
    out = []
    end = open_until(window, now)
    if end is not None:
        out.append((now, end.astimezone(UTC)))
    openings = croniter(window.cron, _local(window, now))
    start = now
    for _ in range(_LOOKAHEAD):
        start = openings.get_next(datetime)
        out.append((start.astimezone(UTC), (start + window.duration).astimezone(UTC)))
    return out, start.astimezone(UTC)


def _open_at(
    at: datetime,
    allows: list[list[tuple[datetime, datetime]]],
    denies: list[list[tuple[datetime, datetime]]],
) -> bool:
    def inside(spans: list[tuple[datetime, datetime]]) -> bool:
        return any(start <= at < end for start, end in spans)

    if any(inside(spans) for spans in denies):
        return False
    return not allows or any(inside(spans) for spans in allows)


def next_change(windows: list[Window], now: datetime) -> datetime | None:
    """The first instant after NOW at which the windows' answer (may a digest move?) flips, or an
    earlier instant at which to look again; None if there are no windows."""
    if not windows:
        return None
    now = now.astimezone(UTC)
    was = window_state(windows, now, with_change=False).open
    for _ in range(_LOOKAHEAD):
        open_denies = [end for w in windows if w.kind == "deny" if (end := open_until(w, now))]
        if not open_denies:
            break
        # Nothing moves before the longest open deny window ends: look on from there.
        now = max(e.astimezone(UTC) for e in open_denies)
        if window_state(windows, now, with_change=False).open != was:
            return now
    else:
        return now
    spans = {id(w): _intervals(w, now) for w in windows}
    allows = [spans[id(w)][0] for w in windows if w.kind == "allow"]
    denies = [spans[id(w)][0] for w in windows if w.kind == "deny"]
    horizon = min(last for _, last in spans.values())
    points = sorted({p for s, _ in spans.values() for span in s for p in span if now < p})
    for point in points:
        if point > horizon:
            break
        if _open_at(point, allows, denies) != was:
            return point
    return horizon


def window_state(windows: list[Window], now: datetime, *, with_change: bool = True) -> WindowState:
    """Whether a digest may move at NOW, why, and when that answer changes (a deny window that
    opens while an allow window is open counts). Remembered for the last few (windows, now): the
    answer depends on nothing else, and `ferry status` asks it for every cell at one NOW."""
    if not windows:
        return _window_state(windows, now, with_change=with_change)
    return _remembered(tuple(windows), now, with_change)


@functools.lru_cache(maxsize=64)
def _remembered(windows: tuple[Window, ...], now: datetime, with_change: bool) -> WindowState:
    return _window_state(list(windows), now, with_change=with_change)


def _window_state(windows: list[Window], now: datetime, *, with_change: bool) -> WindowState:
    changes_at = next_change(windows, now) if with_change else None
    denies = [(w, end) for w in windows if w.kind == "deny" if (end := open_until(w, now))]
    if denies:
        window, end = max(denies, key=lambda pair: pair[1])
        return WindowState(
            False,
            f"deny window until {_fmt(end, window)}, in {human(end - now)}",
            changes_at,
        )
    allows = [w for w in windows if w.kind == "allow"]
    if not allows:
        return WindowState(True, "no deny window is open", changes_at)
    opened = [(w, end) for w in allows if (end := open_until(w, now))]
    if opened:
        window, end = max(opened, key=lambda pair: pair[1])
        return WindowState(True, f"sync window open until {_fmt(end, window)}", changes_at)
    window, when = min(((w, next_opening(w, now)) for w in allows), key=lambda pair: pair[1])
    return WindowState(
        False, f"sync window opens {_fmt(when, window)}, in {human(when - now)}", changes_at
    )
