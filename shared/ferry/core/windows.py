"""Sync windows: is a digest allowed to move now, and when will that change? (pure: takes now)

An allow window opens at each time its cron expression fires (in its timezone) and stays open for
its duration; a deny window likewise closes everything while it lasts. Deny overrides allow. With
no allow window, a digest may move whenever no deny window is open."""

from __future__ import annotations

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


def window_state(windows: list[Window], now: datetime) -> WindowState:
    denies = [(w, end) for w in windows if w.kind == "deny" if (end := open_until(w, now))]
    if denies:
        window, end = max(denies, key=lambda pair: pair[1])
        return WindowState(
            False,
            f"deny window until {_fmt(end, window)}, in {human(end - now)}",
            end,
        )
    allows = [w for w in windows if w.kind == "allow"]
    if not allows:
        return WindowState(True, "no deny window is open", None)
    opened = [(w, end) for w in allows if (end := open_until(w, now))]
    if opened:
        window, end = max(opened, key=lambda pair: pair[1])
        return WindowState(True, f"sync window open until {_fmt(end, window)}", end)
    window, when = min(((w, next_opening(w, now)) for w in allows), key=lambda pair: pair[1])
    return WindowState(
        False, f"sync window opens {_fmt(when, window)}, in {human(when - now)}", when
    )
