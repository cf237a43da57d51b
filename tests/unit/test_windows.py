"""Sync windows (ferry.core.windows): plain datetimes in, open/closed and the next change out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ferry.core.policy import Window
from ferry.core.windows import human, next_opening, open_until, window_state

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SECOND = timedelta(seconds=1)


def allow(cron: str, duration: str, timezone: str = "UTC") -> Window:
    return Window(allow=cron, duration=duration, timezone=timezone)


def deny(cron: str, duration: str, timezone: str = "UTC") -> Window:
    return Window(deny=cron, duration=duration, timezone=timezone)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------- one window


# 2026-11-26 is a Thursday; Berlin is on CET (UTC+1), so 09:00 Berlin is 08:00Z.
NINE_TO_ELEVEN = allow("0 9 * * *", "2h", "Europe/Berlin")


def test_allow_window_opens_at_its_cron_fire_minute() -> None:
    assert open_until(NINE_TO_ELEVEN, utc(2026, 11, 26, 8, 0)) == utc(2026, 11, 26, 10, 0)
    state = window_state([NINE_TO_ELEVEN], utc(2026, 11, 26, 8, 0))
    assert state.open
    assert state.changes_at == utc(2026, 11, 26, 10, 0)
    assert state.reason == "sync window open until Thu 26 Nov 11:00 Europe/Berlin"


def test_allow_window_is_closed_one_second_before_it_fires() -> None:
    before = utc(2026, 11, 26, 8, 0) - SECOND
    assert open_until(NINE_TO_ELEVEN, before) is None
    state = window_state([NINE_TO_ELEVEN], before)
    assert not state.open
    assert state.changes_at == utc(2026, 11, 26, 8, 0)
    assert state.reason == "sync window opens Thu 26 Nov 09:00 Europe/Berlin, in 1s"


def test_allow_window_is_still_open_one_second_before_its_end() -> None:
    last = utc(2026, 11, 26, 10, 0) - SECOND
    assert open_until(NINE_TO_ELEVEN, last) == utc(2026, 11, 26, 10, 0)
    assert window_state([NINE_TO_ELEVEN], last).open


def test_allow_window_is_closed_at_its_end_and_points_at_the_next_day() -> None:
    end = utc(2026, 11, 26, 10, 0)
    assert open_until(NINE_TO_ELEVEN, end) is None
    state = window_state([NINE_TO_ELEVEN], end)
    assert not state.open
    assert state.changes_at == datetime(2026, 11, 27, 9, 0, tzinfo=BERLIN)
    assert state.reason == "sync window opens Fri 27 Nov 09:00 Europe/Berlin, in 22h"


def test_window_times_are_read_in_the_window_timezone() -> None:
    instant = utc(2026, 11, 26, 8, 30)  # 09:30 in Berlin, 03:30 in New York
    berlin = NINE_TO_ELEVEN
    new_york = allow("0 9 * * *", "2h", "America/New_York")
    assert window_state([berlin], instant).open
    state = window_state([new_york], instant)
    assert not state.open
    assert state.changes_at == datetime(2026, 11, 26, 9, 0, tzinfo=NEW_YORK)
    assert state.reason == "sync window opens Thu 26 Nov 09:00 America/New_York, in 5h30m"


def test_now_may_be_given_in_any_timezone() -> None:
    same_instant = datetime(2026, 11, 26, 3, 30, tzinfo=NEW_YORK)  # == 08:30Z
    assert window_state([NINE_TO_ELEVEN], same_instant).open


def test_closed_state_names_the_next_opening_and_how_far_it_is() -> None:
    # The README's window: Monday to Thursday 09:00-15:00 Berlin. Thursday 17:00 -> Monday.
    window = allow("0 9 * * 1-4", "6h", "Europe/Berlin")
    now = datetime(2026, 11, 26, 17, 0, tzinfo=BERLIN)
    state = window_state([window], now)
    assert not state.open
    assert state.changes_at == datetime(2026, 11, 30, 9, 0, tzinfo=BERLIN)
    assert state.reason == "sync window opens Mon 30 Nov 09:00 Europe/Berlin, in 3d16h"
    assert next_opening(window, now) == state.changes_at


def test_closed_state_uses_the_earliest_of_several_allow_windows() -> None:
    late = allow("0 20 * * *", "1h", "UTC")
    early = allow("0 14 * * *", "1h", "UTC")
    state = window_state([late, early], utc(2026, 11, 26, 12, 0))
    assert not state.open
    assert state.changes_at == utc(2026, 11, 26, 14, 0)
    assert "opens Thu 26 Nov 14:00 UTC, in 2h" in state.reason


def test_open_state_reports_the_latest_end_of_overlapping_allow_windows() -> None:
    short = allow("0 9 * * *", "1h")
    long = allow("0 8 * * *", "4h")
    state = window_state([short, long], utc(2026, 11, 26, 9, 30))
    assert state.open
    assert state.changes_at == utc(2026, 11, 26, 12, 0)


# --------------------------------------------------------------------------- deny


def test_deny_window_overrides_allow() -> None:
    business = allow("0 9 * * *", "6h", "Europe/Berlin")
    lunch = deny("0 12 * * *", "1h", "Europe/Berlin")
    now = datetime(2026, 11, 26, 12, 15, tzinfo=BERLIN)
    assert open_until(business, now) is not None and open_until(lunch, now) is not None
    state = window_state([business, lunch], now)
    assert not state.open
    assert state.changes_at == datetime(2026, 11, 26, 13, 0, tzinfo=BERLIN)
    assert state.reason == "deny window until Thu 26 Nov 13:00 Europe/Berlin, in 45m"


def test_no_windows_at_all_means_open() -> None:
    state = window_state([], utc(2026, 11, 26, 12, 0))
    assert state.open and state.changes_at is None


def test_only_deny_windows_means_open_unless_one_is_open() -> None:
    nightly = deny("0 22 * * *", "8h")
    day = window_state([nightly], utc(2026, 11, 26, 12, 0))
    assert day.open and day.reason == "no deny window is open"
    night = window_state([nightly], utc(2026, 11, 27, 3, 0))
    assert not night.open
    assert night.changes_at == utc(2026, 11, 27, 6, 0)
    assert night.reason == "deny window until Fri 27 Nov 06:00 UTC, in 3h"


def test_of_overlapping_deny_windows_the_one_ending_last_is_reported() -> None:
    short = deny("0 10 * * *", "1h")
    long = deny("0 9 * * *", "5h")
    state = window_state([short, long], utc(2026, 11, 26, 10, 30))
    assert not state.open
    assert state.changes_at == utc(2026, 11, 26, 14, 0)


YEAR_END_FREEZE = deny("0 0 20 12 *", "14d", "UTC")


@pytest.mark.parametrize(
    "instant",
    [utc(2026, 12, 20, 0, 0), utc(2026, 12, 31, 12, 0), utc(2027, 1, 2, 23, 59, 59)],
)
def test_year_end_freeze_covers_20_december_to_2_january(instant: datetime) -> None:
    assert open_until(YEAR_END_FREEZE, instant) == utc(2027, 1, 3, 0, 0)
    state = window_state([allow("* * * * *", "1h"), YEAR_END_FREEZE], instant)
    assert not state.open
    assert state.changes_at == utc(2027, 1, 3, 0, 0)


@pytest.mark.parametrize(
    "instant",
    [utc(2026, 12, 19, 23, 59, 59), utc(2027, 1, 3, 0, 0), utc(2027, 1, 4, 0, 0)],
)
def test_year_end_freeze_is_over_outside_it(instant: datetime) -> None:
    assert open_until(YEAR_END_FREEZE, instant) is None
    assert window_state([YEAR_END_FREEZE], instant).open


# --------------------------------------------------------------------------- odd shapes


@given(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)))
def test_window_longer_than_its_period_is_always_open(naive: datetime) -> None:
    hourly_two_hours = allow("0 * * * *", "2h")
    now = naive.replace(tzinfo=UTC)
    end = open_until(hourly_two_hours, now)
    assert end is not None and timedelta(hours=1) < end - now <= timedelta(hours=2)
    assert window_state([hourly_two_hours], now).open


# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25 03:00 CEST -> 02:00 CET
# (01:00Z). Whether `duration` counts wall-clock or elapsed time across the jump is not pinned
# here: only what holds under either reading.
DST_DAYS = [utc(2026, 3, 28, 22, 0), utc(2026, 10, 24, 22, 0)]
NIGHT_WINDOWS = ["0 1 * * *", "30 1 * * *", "0 2 * * *", "30 2 * * *", "0 3 * * *", "*/20 * * * *"]


@pytest.mark.parametrize("start", DST_DAYS, ids=["spring-forward", "fall-back"])
@pytest.mark.parametrize("cron", NIGHT_WINDOWS)
def test_dst_transition_day_in_berlin_does_not_crash(start: datetime, cron: str) -> None:
    windows = [allow(cron, "1h", "Europe/Berlin"), deny(cron, "30m", "Europe/Berlin")]
    for minutes in range(0, 26 * 60, 5):
        now = start + timedelta(minutes=minutes)
        for window in windows:
            open_until(window, now)
            assert next_opening(window, now) > now
        state = window_state(windows, now)
        assert isinstance(state.open, bool) and state.reason


@pytest.mark.parametrize(
    ("day", "offset"),
    [((2026, 3, 29), timedelta(hours=2)), ((2026, 10, 25), timedelta(hours=1))],
    ids=["spring-forward", "fall-back"],
)
def test_business_hours_window_on_a_dst_day_opens_at_local_nine(
    day: tuple[int, int, int], offset: timedelta
) -> None:
    window = allow("0 9 * * *", "6h", "Europe/Berlin")
    nine_local = datetime(*day, 9, 0, tzinfo=BERLIN)
    assert nine_local.utcoffset() == offset  # the transition (at night) is already behind
    assert not window_state([window], nine_local - SECOND).open
    state = window_state([window], nine_local)
    assert state.open and state.changes_at == datetime(*day, 15, 0, tzinfo=BERLIN)
    assert not window_state([window], datetime(*day, 15, 0, tzinfo=BERLIN)).open


def test_window_starting_before_spring_forward_is_open_at_its_start_and_closed_later() -> None:
    window = allow("0 1 * * *", "2h", "Europe/Berlin")
    assert window_state([window], utc(2026, 3, 29, 0, 0)).open  # 01:00 CET
    assert window_state([window], utc(2026, 3, 29, 0, 59)).open  # 01:59 CET
    after = window_state([window], utc(2026, 3, 29, 3, 0))  # 05:00 CEST
    assert not after.open
    assert after.changes_at == datetime(2026, 3, 30, 1, 0, tzinfo=BERLIN)


FALL_BACK_REPEATED_HOUR = utc(2026, 10, 25, 1, 15)  # 02:15 CET, the second 02:15 that night


def test_deny_window_that_ended_before_fall_back_does_not_reclose_in_the_repeated_hour() -> None:
    # 01:00 CEST (23:00Z) + 90m ends at 02:30 CEST == 00:30Z, by wall clock and by elapsed time.
    window = deny("0 1 * * *", "90m", "Europe/Berlin")
    assert open_until(window, utc(2026, 10, 25, 0, 45)) is None  # correctly over at 00:45Z
    state = window_state([window], FALL_BACK_REPEATED_HOUR)
    # Was (wall-clock comparison, fold ignored): closed, "deny window until Sun 25 Oct 02:30
    # Europe/Berlin, in 0s", changes_at 00:30Z, 45 minutes before now.
    assert open_until(window, FALL_BACK_REPEATED_HOUR) is None
    assert state.open


def test_allow_window_that_ended_before_fall_back_does_not_reopen_in_the_repeated_hour() -> None:
    window = allow("0 1 * * *", "90m", "Europe/Berlin")
    state = window_state([window], FALL_BACK_REPEATED_HOUR)
    assert not state.open
    assert state.changes_at == datetime(2026, 10, 26, 1, 0, tzinfo=BERLIN)


# --------------------------------------------------------------------------- properties

CRONS = ["0 9 * * 1-4", "0 0 20 12 *", "0 * * * *", "*/15 * * * *", "30 1 * * *", "0 22 * * 5"]
DURATIONS = ["1m", "15m", "90m", "2h", "6h", "1d", "14d"]


def windows_in(zones: list[str]) -> st.SearchStrategy[list[Window]]:
    window = st.builds(
        lambda kind, cron, duration, zone: Window(**{kind: cron}, duration=duration, timezone=zone),
        st.sampled_from(["allow", "deny"]),
        st.sampled_from(CRONS),
        st.sampled_from(DURATIONS),
        st.sampled_from(zones),
    )
    return st.lists(window, max_size=4)


INSTANTS = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
ALL_ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
ZONES_WITHOUT_DST = ["UTC", "Asia/Kolkata", "Asia/Tokyo"]


@settings(max_examples=300)
@given(windows_in(ALL_ZONES), INSTANTS)
def test_window_state_is_never_open_while_a_deny_window_is_open(
    windows: list[Window], now: datetime
) -> None:
    state = window_state(windows, now)
    if any(open_until(w, now) is not None for w in windows if w.kind == "deny"):
        assert not state.open


@settings(max_examples=300)
@given(windows_in(ZONES_WITHOUT_DST), INSTANTS)
def test_closed_state_changes_at_is_after_now_in_zones_without_dst(
    windows: list[Window], now: datetime
) -> None:
    state = window_state(windows, now)
    if not state.open and state.changes_at is not None:
        assert state.changes_at > now


@settings(max_examples=300)
@given(windows_in(ALL_ZONES), INSTANTS)
@example([deny("30 1 * * *", "1h", "Europe/Berlin")], FALL_BACK_REPEATED_HOUR)
def test_closed_state_changes_at_is_after_now(windows: list[Window], now: datetime) -> None:
    state = window_state(windows, now)
    if not state.open and state.changes_at is not None:
        assert state.changes_at > now


# --------------------------------------------------------------------------- human


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=45), "45s"),
        (timedelta(minutes=12, seconds=59), "12m"),
        (timedelta(hours=3, minutes=20), "3h20m"),
        (timedelta(hours=3), "3h"),
        (timedelta(days=2, hours=4, minutes=30), "2d4h"),
        (timedelta(days=2), "2d"),
        (timedelta(0), "0s"),
        (timedelta(seconds=-90), "0s"),
    ],
)
def test_human_duration(delta: timedelta, text: str) -> None:
    assert human(delta) == text
