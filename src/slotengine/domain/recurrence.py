"""Slots from a weekly pattern, laid out on the wall clock of a named time zone.

A pattern says "on these weekdays between these dates, from 09:00 to 17:00 local time, a
30-minute slot every 30 minutes". Start times follow the local clock, so 09:00 stays 09:00 on
both sides of a daylight-saving change while its UTC instant moves by the change. Every slot
lasts exactly its length in real elapsed time. Where the clock jumps:

- Spring forward (a gap, e.g. 02:00-03:00 does not exist): a start inside the gap is skipped,
  and so is a slot the jump happens during (it would end later on the clock than its nominal
  end and could overlap the next slot). A slot ending exactly where the gap begins is kept.
- Fall back (an hour read twice): an ambiguous start is generated once, at its first reading
  (fold=0), so there are no duplicates; the second reading of that hour gets no slots. A slot
  running across the change keeps its real length, so its end reads earlier on the local clock
  than its nominal end (02:30 + 30 min ends at 02:00 of the second pass).

Windows cannot cross midnight: a window is one local day's span, start before end.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import IntEnum
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from slotengine.domain import policy
from slotengine.domain.errors import ValidationError
from slotengine.domain.fill_policy import (
    DEFAULT_FILL_POLICY,
    DEFAULT_MAX_PASS_OVERS,
    FillPolicy,
    validate_max_pass_overs,
)

MAX_SLOTS_PER_CALL = 2_000
MAX_DAYS = 366
MINUTES_PER_DAY = 24 * 60
# Far enough from datetime's limits that a day plus a slot never overflows.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(9998, 12, 31)
_TICK = timedelta(microseconds=1)


class Weekday(IntEnum):
    """Days of the week, numbered as `date.weekday()` numbers them."""

    MONDAY = 0
    TUESDAY = 1
    WEDNESDAY = 2
    THURSDAY = 3
    FRIDAY = 4
    SATURDAY = 5
    SUNDAY = 6


@dataclass(frozen=True, slots=True)
class RecurrencePattern:
    """Slots on `weekdays` from `first_date` to `last_date` (inclusive), in a daily local window."""

    resource: str
    time_zone: str
    first_date: date
    last_date: date
    weekdays: frozenset[Weekday]
    window_start: time
    window_end: time
    slot_minutes: int
    every_minutes: int | None = None  # None: back to back, every slot_minutes
    capacity: int = policy.DEFAULT_CAPACITY
    hold_seconds: int = policy.DEFAULT_HOLD_SECONDS
    max_extensions: int = policy.DEFAULT_MAX_EXTENSIONS
    max_hold_seconds: int | None = None
    fill_policy: FillPolicy = DEFAULT_FILL_POLICY
    max_pass_overs: int = DEFAULT_MAX_PASS_OVERS

    @property
    def step_minutes(self) -> int:
        return self.slot_minutes if self.every_minutes is None else self.every_minutes


class SlotTimes(NamedTuple):
    """One generated slot, as UTC instants."""

    starts_at: datetime
    ends_at: datetime


def slot_times(pattern: RecurrencePattern) -> list[SlotTimes]:
    """The pattern's slots in start order; ValidationError when the pattern is unusable."""
    zone = validate_pattern(pattern)
    length = timedelta(minutes=pattern.slot_minutes)
    step = timedelta(minutes=pattern.step_minutes)
    slots: list[SlotTimes] = []
    for day in _chosen_days(pattern):
        wall = datetime.combine(day, pattern.window_start)
        window_end = datetime.combine(day, pattern.window_end)
        while wall + length <= window_end:
            starts_at = _instant(wall, zone)
            if starts_at is not None and not _clock_jumps_forward(starts_at, wall, length, zone):
                slots.append(SlotTimes(starts_at, starts_at + length))
                if len(slots) > MAX_SLOTS_PER_CALL:
                    raise ValidationError(
                        "lastDate",
                        f"the pattern makes more than {MAX_SLOTS_PER_CALL} slots; "
                        "create them in several calls over shorter date ranges",
                    )
            wall += step
    if not slots:
        raise _no_slots(pattern)
    return slots


def validate_pattern(pattern: RecurrencePattern) -> ZoneInfo:
    """Raise ValidationError naming the first field the pattern cannot have; else its zone."""
    policy.validate_resource(pattern.resource)
    zone = time_zone(pattern.time_zone)
    if pattern.first_date < EARLIEST_DATE:
        raise ValidationError("firstDate", f"must be on or after {EARLIEST_DATE.isoformat()}")
    if pattern.last_date > LATEST_DATE:
        raise ValidationError("lastDate", f"must be on or before {LATEST_DATE.isoformat()}")
    if pattern.last_date < pattern.first_date:
        raise ValidationError("lastDate", "must be on or after firstDate")
    if (pattern.last_date - pattern.first_date).days + 1 > MAX_DAYS:
        raise ValidationError("lastDate", f"the dates may span at most {MAX_DAYS} days")
    if not pattern.weekdays:
        raise ValidationError("weekdays", "choose at least one weekday")
    for name, wall in (("windowStart", pattern.window_start), ("windowEnd", pattern.window_end)):
        if wall.tzinfo is not None:
            raise ValidationError(name, "is a local wall-clock time without an offset; timeZone places it")
    if pattern.window_end <= pattern.window_start:
        raise ValidationError("windowEnd", "must be after windowStart (a window cannot cross midnight)")
    if not 1 <= pattern.slot_minutes <= MINUTES_PER_DAY:
        raise ValidationError("slotMinutes", f"must be between 1 and {MINUTES_PER_DAY}")
    if timedelta(minutes=pattern.slot_minutes) > _span(pattern.window_start, pattern.window_end):
        raise ValidationError("slotMinutes", "is longer than the daily window")
    if pattern.every_minutes is not None and not 1 <= pattern.every_minutes <= MINUTES_PER_DAY:
        raise ValidationError("everyMinutes", f"must be between 1 and {MINUTES_PER_DAY}")
    policy.validate_terms(pattern.capacity, pattern.hold_seconds)
    policy.validate_extension_terms(pattern.hold_seconds, pattern.max_extensions, pattern.max_hold_seconds)
    validate_max_pass_overs(pattern.max_pass_overs)
    return zone


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`, or ValidationError when there is none."""
    # zoneinfo would also open files that are no zone's name, such as a path into the zone tree.
    if name not in _zone_names():
        raise ValidationError(
            "timeZone", f"{name[:64]!r} is not an IANA time zone name such as 'Europe/Berlin'"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError("timeZone", f"{name!r} cannot be loaded") from None


@functools.cache
def _zone_names() -> frozenset[str]:
    # Some systems list the host's own zone as "localtime"; "Factory" means "zone unknown".
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def _span(start: time, end: time) -> timedelta:
    day = date.min
    return datetime.combine(day, end) - datetime.combine(day, start)


def _chosen_days(pattern: RecurrencePattern) -> Iterator[date]:
    day = pattern.first_date
    while day <= pattern.last_date:
        if day.weekday() in pattern.weekdays:
            yield day
        day += timedelta(days=1)


def _instant(wall: datetime, zone: tzinfo) -> datetime | None:
    """The UTC instant the local clock first reads `wall`, or None if it never does (a gap)."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall.replace(fold=0):
        return None
    return instant


def _clock_jumps_forward(starts_at: datetime, wall: datetime, length: timedelta, zone: tzinfo) -> bool:
    """Whether the clock skips ahead while the slot runs (its last moment reads past its end)."""
    last_moment = (starts_at + length - _TICK).astimezone(zone).replace(tzinfo=None)
    return last_moment > wall + length - _TICK


def _no_slots(pattern: RecurrencePattern) -> ValidationError:
    if next(_chosen_days(pattern), None) is None:
        return ValidationError("weekdays", "none of the chosen weekdays falls between firstDate and lastDate")
    return ValidationError("windowStart", "every slot falls in a daylight-saving gap of the time zone")
