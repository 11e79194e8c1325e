"""Slots from a weekly pattern: wall-clock times across daylight-saving changes, limits, errors."""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slotengine.domain import recurrence
from slotengine.domain.errors import ValidationError
from slotengine.domain.recurrence import RecurrencePattern, SlotTimes, Weekday, slot_times

WORKDAYS = frozenset({Weekday.MONDAY, Weekday.TUESDAY, Weekday.WEDNESDAY, Weekday.THURSDAY, Weekday.FRIDAY})
EVERY_DAY = frozenset(Weekday)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def pattern(**overrides: Any) -> RecurrencePattern:
    values: dict[str, Any] = {
        "resource": "room-1",
        "time_zone": "Europe/Berlin",
        "first_date": date(2026, 6, 1),
        "last_date": date(2026, 6, 14),
        "weekdays": WORKDAYS,
        "window_start": time(9, 0),
        "window_end": time(17, 0),
        "slot_minutes": 30,
    }
    values.update(overrides)
    return RecurrencePattern(**values)


def one_day(
    day: date, start: time, end: time, minutes: int, zone: str = "Europe/Berlin"
) -> RecurrencePattern:
    return pattern(
        time_zone=zone,
        first_date=day,
        last_date=day,
        weekdays=EVERY_DAY,
        window_start=start,
        window_end=end,
        slot_minutes=minutes,
    )


def local(slots: list[SlotTimes], zone: ZoneInfo) -> list[str]:
    """Each slot's start as the local clock shows it, with its UTC offset."""
    return [s.starts_at.astimezone(zone).isoformat(timespec="minutes") for s in slots]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_weekdays_nine_to_five_every_half_hour_make_sixteen_slots_per_weekday() -> None:
    slots = slot_times(pattern())

    per_day = Counter(s.starts_at.astimezone(BERLIN).date() for s in slots)
    assert len(slots) == 10 * 16
    assert all(day.weekday() < 5 for day in per_day)
    assert set(per_day.values()) == {16}
    first_day = [s.starts_at.astimezone(BERLIN).strftime("%H:%M") for s in slots[:16]]
    assert first_day[0] == "09:00" and first_day[-1] == "16:30"
    assert slots[0] == SlotTimes(utc("2026-06-01T07:00"), utc("2026-06-01T07:30"))


def test_the_step_defaults_to_the_slot_length_and_can_leave_gaps() -> None:
    back_to_back = slot_times(pattern(slot_minutes=60, last_date=date(2026, 6, 1)))
    spaced = slot_times(pattern(slot_minutes=30, every_minutes=45, last_date=date(2026, 6, 1)))

    assert [s.starts_at.astimezone(BERLIN).hour for s in back_to_back] == list(range(9, 17))
    # 09:00 + 10 * 45 min = 16:30, the last start that still ends by 17:00.
    assert len(spaced) == 11
    assert spaced[-1].starts_at.astimezone(BERLIN).strftime("%H:%M") == "16:30"
    assert all(b.starts_at - a.starts_at == timedelta(minutes=45) for a, b in itertools.pairwise(spaced))


def test_berlin_keeps_local_times_across_spring_forward() -> None:
    slots = slot_times(
        pattern(
            first_date=date(2026, 3, 27),
            last_date=date(2026, 3, 30),
            weekdays=EVERY_DAY,
            window_end=time(10, 0),
        )
    )

    assert local(slots, BERLIN) == [
        "2026-03-27T09:00+01:00",
        "2026-03-27T09:30+01:00",
        "2026-03-28T09:00+01:00",
        "2026-03-28T09:30+01:00",
        "2026-03-29T09:00+02:00",
        "2026-03-29T09:30+02:00",
        "2026-03-30T09:00+02:00",
        "2026-03-30T09:30+02:00",
    ]
    assert slots[2].starts_at == utc("2026-03-28T08:00")
    assert slots[4].starts_at == utc("2026-03-29T07:00")


def test_berlin_keeps_local_times_across_fall_back() -> None:
    slots = slot_times(
        pattern(
            first_date=date(2026, 10, 24),
            last_date=date(2026, 10, 26),
            weekdays=EVERY_DAY,
            window_end=time(9, 30),
        )
    )

    assert local(slots, BERLIN) == [
        "2026-10-24T09:00+02:00",
        "2026-10-25T09:00+01:00",
        "2026-10-26T09:00+01:00",
    ]
    assert [s.starts_at for s in slots] == [
        utc("2026-10-24T07:00"),
        utc("2026-10-25T08:00"),
        utc("2026-10-26T08:00"),
    ]


def test_new_york_keeps_local_times_across_both_2026_changes() -> None:
    spring = slot_times(
        pattern(
            time_zone="America/New_York",
            first_date=date(2026, 3, 7),
            last_date=date(2026, 3, 8),
            weekdays=EVERY_DAY,
            window_end=time(9, 30),
        )
    )
    autumn = slot_times(
        pattern(
            time_zone="America/New_York",
            first_date=date(2026, 10, 31),
            last_date=date(2026, 11, 1),
            weekdays=EVERY_DAY,
            window_end=time(9, 30),
        )
    )

    assert local(spring, NEW_YORK) == ["2026-03-07T09:00-05:00", "2026-03-08T09:00-04:00"]
    assert [s.starts_at for s in spring] == [utc("2026-03-07T14:00"), utc("2026-03-08T13:00")]
    assert local(autumn, NEW_YORK) == ["2026-10-31T09:00-04:00", "2026-11-01T09:00-05:00"]
    assert [s.starts_at for s in autumn] == [utc("2026-10-31T13:00"), utc("2026-11-01T14:00")]


def test_starts_in_the_spring_forward_gap_are_skipped() -> None:
    slots = slot_times(one_day(date(2026, 3, 29), time(1, 30), time(3, 30), 30))

    # 02:00 and 02:30 never show on Berlin's clocks that night.
    assert local(slots, BERLIN) == ["2026-03-29T01:30+01:00", "2026-03-29T03:00+02:00"]
    assert slots == [
        SlotTimes(utc("2026-03-29T00:30"), utc("2026-03-29T01:00")),
        SlotTimes(utc("2026-03-29T01:00"), utc("2026-03-29T01:30")),
    ]


def test_a_slot_the_clock_jumps_forward_during_is_skipped() -> None:
    slots = slot_times(one_day(date(2026, 3, 29), time(1, 0), time(4, 0), 45))

    # 01:45-02:30 would run into the gap and overlap 03:15; 02:30 does not exist.
    assert local(slots, BERLIN) == ["2026-03-29T01:00+01:00", "2026-03-29T03:15+02:00"]


def test_new_york_spring_forward_gap_is_skipped() -> None:
    slots = slot_times(one_day(date(2026, 3, 8), time(1, 0), time(4, 0), 60, "America/New_York"))

    assert local(slots, NEW_YORK) == ["2026-03-08T01:00-05:00", "2026-03-08T03:00-04:00"]


def test_the_repeated_hour_of_fall_back_is_generated_once_without_overlap() -> None:
    slots = slot_times(one_day(date(2026, 10, 25), time(1, 30), time(3, 30), 30))

    assert local(slots, BERLIN) == [
        "2026-10-25T01:30+02:00",
        "2026-10-25T02:00+02:00",
        "2026-10-25T02:30+02:00",
        "2026-10-25T03:00+01:00",
    ]
    assert [s.starts_at for s in slots] == [
        utc("2026-10-24T23:30"),
        utc("2026-10-25T00:00"),
        utc("2026-10-25T00:30"),
        utc("2026-10-25T02:00"),
    ]
    assert all(s.ends_at - s.starts_at == timedelta(minutes=30) for s in slots)
    # The 02:30 slot keeps its 30 minutes: it ends as the clock turns back to 02:00.
    assert slots[2].ends_at.astimezone(BERLIN).isoformat(timespec="minutes") == "2026-10-25T02:00+01:00"


def test_new_york_fall_back_makes_no_duplicates() -> None:
    slots = slot_times(one_day(date(2026, 11, 1), time(0, 30), time(2, 30), 30, "America/New_York"))

    assert local(slots, NEW_YORK) == [
        "2026-11-01T00:30-04:00",
        "2026-11-01T01:00-04:00",
        "2026-11-01T01:30-04:00",
        "2026-11-01T02:00-05:00",
    ]
    assert len({s.starts_at for s in slots}) == 4


def test_a_day_the_zone_skipped_gets_no_slots() -> None:
    # Samoa moved across the date line: 2011-12-30 never happened in Apia.
    slots = slot_times(
        pattern(
            time_zone="Pacific/Apia",
            first_date=date(2011, 12, 29),
            last_date=date(2011, 12, 31),
            weekdays=EVERY_DAY,
            window_end=time(10, 0),
            slot_minutes=60,
        )
    )

    assert local(slots, ZoneInfo("Pacific/Apia")) == ["2011-12-29T09:00-10:00", "2011-12-31T09:00+14:00"]


def test_at_most_the_cap_of_slots_per_call() -> None:
    # Every day, 16 slots a day: 125 days make exactly the cap, 126 one day too many.
    at_cap = pattern(
        first_date=date(2026, 1, 1),
        last_date=date(2026, 1, 1) + timedelta(days=124),
        weekdays=EVERY_DAY,
    )
    over = pattern(
        first_date=at_cap.first_date,
        last_date=at_cap.last_date + timedelta(days=1),
        weekdays=EVERY_DAY,
    )

    assert len(slot_times(at_cap)) == recurrence.MAX_SLOTS_PER_CALL
    with pytest.raises(ValidationError) as refused:
        slot_times(over)
    assert refused.value.field == "lastDate"
    assert str(recurrence.MAX_SLOTS_PER_CALL) in refused.value.message


def test_a_range_of_at_most_366_days() -> None:
    year = pattern(
        first_date=date(2028, 1, 1),
        last_date=date(2028, 12, 31),
        weekdays=frozenset({Weekday.MONDAY}),
        window_end=time(9, 30),
    )

    assert len(slot_times(year)) == 52
    with pytest.raises(ValidationError) as refused:
        slot_times(pattern(first_date=date(2028, 1, 1), last_date=date(2029, 1, 1)))
    assert refused.value.field == "lastDate"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"resource": " "}, "resource"),
        ({"resource": "r" * 201}, "resource"),
        ({"time_zone": "Mars/Olympus_Mons"}, "timeZone"),
        ({"time_zone": ""}, "timeZone"),
        ({"time_zone": "Europe"}, "timeZone"),
        ({"time_zone": "../../etc/passwd"}, "timeZone"),
        ({"time_zone": "localtime"}, "timeZone"),
        ({"time_zone": "Factory"}, "timeZone"),
        ({"time_zone": "europe/berlin"}, "timeZone"),
        ({"first_date": date(1899, 12, 31), "last_date": date(1900, 1, 1)}, "firstDate"),
        ({"first_date": date(9998, 12, 31), "last_date": date(9999, 1, 1)}, "lastDate"),
        ({"last_date": date(2026, 5, 31)}, "lastDate"),
        ({"weekdays": frozenset()}, "weekdays"),
        ({"window_start": time(9, 0, tzinfo=UTC)}, "windowStart"),
        ({"window_end": time(17, 0, tzinfo=UTC)}, "windowEnd"),
        ({"window_end": time(9, 0)}, "windowEnd"),
        ({"window_end": time(8, 0)}, "windowEnd"),
        ({"window_start": time(22, 0), "window_end": time(2, 0)}, "windowEnd"),
        ({"slot_minutes": 0}, "slotMinutes"),
        ({"slot_minutes": -30}, "slotMinutes"),
        ({"slot_minutes": 481}, "slotMinutes"),
        ({"every_minutes": 0}, "everyMinutes"),
        ({"every_minutes": -15}, "everyMinutes"),
        ({"every_minutes": 1441}, "everyMinutes"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": 10_001}, "capacity"),
        ({"hold_seconds": 0}, "holdSeconds"),
        ({"hold_seconds": 86_401}, "holdSeconds"),
        ({"first_date": date(2026, 6, 6), "last_date": date(2026, 6, 7)}, "weekdays"),
    ],
)
def test_an_unusable_pattern_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        slot_times(pattern(**overrides))
    assert refused.value.field == field


def test_a_window_inside_the_gap_makes_no_slot_and_says_why() -> None:
    with pytest.raises(ValidationError) as refused:
        slot_times(one_day(date(2026, 3, 29), time(2, 0), time(3, 0), 30))
    assert refused.value.field == "windowStart"
    assert "daylight-saving" in refused.value.message


@functools.cache
def _transition_days(zone_name: str) -> list[date]:
    """Days (2000-2030) whose UTC offset at noon differs from the day before's."""
    zone = ZoneInfo(zone_name)
    days = [date(2000, 1, 1) + timedelta(days=n) for n in range(31 * 365)]
    offsets = [datetime.combine(d, time(12), tzinfo=zone).utcoffset() for d in days]
    pairs = itertools.pairwise(zip(days, offsets, strict=True))
    return [day for (_, before), (day, after) in pairs if before != after]


DST_ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",  # changed at midnight until 2019
    "Australia/Lord_Howe",  # a 30-minute change
    "Antarctica/Troll",  # a 2-hour change
    "Africa/Casablanca",  # changes around Ramadan
    "Europe/Dublin",  # "negative" summer time in the rules
    "Pacific/Chatham",  # a :45 offset
]


@st.composite
def patterns(draw: st.DrawFn) -> RecurrencePattern:
    zone = draw(st.sampled_from(DST_ZONES))
    near_change = st.sampled_from(_transition_days(zone)).map(lambda d: d - timedelta(days=1))
    first = draw(st.one_of(near_change, st.dates(date(2000, 1, 1), date(2040, 12, 31))))
    last = first + timedelta(days=draw(st.integers(0, 9)))
    weekdays = draw(st.frozensets(st.sampled_from(Weekday))) | {Weekday(first.weekday())}
    start = draw(st.integers(0, 24 * 60 - 11))
    end = draw(st.integers(start + 10, 24 * 60 - 1))
    length = draw(st.integers(10, end - start))
    every = draw(st.one_of(st.none(), st.integers(10, 240)))
    return pattern(
        time_zone=zone,
        first_date=first,
        last_date=last,
        weekdays=frozenset(weekdays),
        window_start=time(start // 60, start % 60),
        window_end=time(end // 60, end % 60),
        slot_minutes=length,
        every_minutes=every,
    )


def _no_change_on(day: date, zone: ZoneInfo) -> bool:
    moments = [datetime.combine(day, t, tzinfo=zone) for t in (time.min, time.max)]
    return len({m.replace(fold=f).utcoffset() for m in moments for f in (0, 1)}) == 1


@settings(max_examples=300, deadline=None)
@given(patterns())
def test_every_slot_is_on_the_local_grid_inside_the_window_and_of_real_length(p: RecurrencePattern) -> None:
    zone = ZoneInfo(p.time_zone)
    length = timedelta(minutes=p.slot_minutes)
    step = timedelta(minutes=p.step_minutes)
    try:
        slots = slot_times(p)
    except ValidationError as refused:
        assert refused.field == "windowStart"  # only a window wholly in a daylight-saving gap
        return

    starts = [s.starts_at for s in slots]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    if step >= length:
        assert all(a.ends_at <= b.starts_at for a, b in itertools.pairwise(slots))
    per_day: Counter[date] = Counter()
    for s in slots:
        assert s.starts_at.tzinfo is UTC
        assert s.ends_at - s.starts_at == length
        shown = s.starts_at.astimezone(zone)
        assert shown.fold == 0  # an ambiguous start is its first reading
        wall = shown.replace(tzinfo=None)
        day = wall.date()
        per_day[day] += 1
        assert p.first_date <= day <= p.last_date
        assert Weekday(day.weekday()) in p.weekdays
        opens, closes = datetime.combine(day, p.window_start), datetime.combine(day, p.window_end)
        assert opens <= wall and wall + length <= closes
        assert (wall - opens) % step == timedelta(0)
        # The clock never runs past the slot's nominal end while it lasts (no forward jump inside).
        last = (s.ends_at - timedelta(microseconds=1)).astimezone(zone).replace(tzinfo=None)
        assert last < wall + length
    window = datetime.combine(date.min, p.window_end) - datetime.combine(date.min, p.window_start)
    full_day = (window - length) // step + 1
    day = p.first_date
    while day <= p.last_date:
        if day.weekday() in p.weekdays and _no_change_on(day, zone):
            assert per_day[day] == full_day, day
        day += timedelta(days=1)
