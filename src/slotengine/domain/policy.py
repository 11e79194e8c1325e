"""Hold and queue rules: who gets a unit, which units are free, when holds and queues lapse."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from slotengine.domain.errors import ExtensionLimitReached, TooManyBookings, ValidationError
from slotengine.domain.fill_policy import (
    DEFAULT_FILL_POLICY,
    DEFAULT_MAX_PASS_OVERS,
    FillPolicy,
    validate_max_pass_overs,
)

T = TypeVar("T")

DEFAULT_CAPACITY = 1
DEFAULT_HOLD_SECONDS = 120
MAX_HOLD_SECONDS = 24 * 3600
MAX_CAPACITY = 10_000
MAX_RESOURCE_LENGTH = 200
MAX_IDEMPOTENCY_KEY_LENGTH = 200
MAX_REASON_LENGTH = 500
DEFAULT_MAX_EXTENSIONS = 1
MAX_EXTENSIONS = 100
# With no maxHoldSeconds of its own, a slot's holds may last this many times its holdSeconds.
HOLD_CAP_FACTOR = 3
# Far from datetime's limits, where the database driver reads timestamps back as PostgreSQL's
# +-infinity (naive datetime.max/min) and a day of arithmetic overflows.
EARLIEST_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9999, 1, 1, tzinfo=UTC)


class Admission(StrEnum):
    HOLD = "HOLD"
    QUEUE = "QUEUE"


@dataclass(frozen=True, slots=True)
class SlotSpec:
    resource: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    hold_seconds: int
    max_extensions: int = DEFAULT_MAX_EXTENSIONS
    max_hold_seconds: int | None = None  # None: HOLD_CAP_FACTOR x hold_seconds
    fill_policy: FillPolicy = DEFAULT_FILL_POLICY
    max_pass_overs: int = DEFAULT_MAX_PASS_OVERS


def validate_slot(spec: SlotSpec) -> None:
    """Raise ValidationError naming the first field of `spec` a slot cannot have."""
    validate_resource(spec.resource)
    validate_instant("startsAt", spec.starts_at)
    validate_instant("endsAt", spec.ends_at)
    if spec.ends_at <= spec.starts_at:
        raise ValidationError("endsAt", "must be after startsAt")
    validate_terms(spec.capacity, spec.hold_seconds)
    validate_extension_terms(spec.hold_seconds, spec.max_extensions, spec.max_hold_seconds)
    validate_max_pass_overs(spec.max_pass_overs)


def validate_instant(field: str, moment: datetime) -> None:
    """Raise ValidationError unless `moment` is an instant with an offset, 1900 to 9999 (UTC)."""
    if moment.utcoffset() is None:
        raise ValidationError(field, "timestamps need a time zone offset")
    if not EARLIEST_INSTANT <= moment <= LATEST_INSTANT:
        raise ValidationError(
            field, f"must be between {EARLIEST_INSTANT.isoformat()} and {LATEST_INSTANT.isoformat()}"
        )


def validate_text(field: str, text: str) -> None:
    """Raise ValidationError unless PostgreSQL can store `text` as it is (no NUL, valid UTF-8)."""
    if "\x00" in text:
        raise ValidationError(field, "must not contain NUL characters")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ValidationError(field, "must be valid Unicode (no lone surrogates)") from None


def validate_resource(resource: str) -> None:
    """Raise ValidationError unless `resource` can name what a slot books."""
    if not resource.strip():
        raise ValidationError("resource", "must not be empty")
    if len(resource) > MAX_RESOURCE_LENGTH:
        raise ValidationError("resource", f"must be at most {MAX_RESOURCE_LENGTH} characters")
    validate_text("resource", resource)


def validate_slot_filter(
    resource: str | None, starts_after: datetime | None, starts_before: datetime | None
) -> None:
    """Raise ValidationError naming the first filter of a slot listing the store cannot compare."""
    if resource is not None:
        validate_text("resource", resource)
    if starts_after is not None:
        validate_instant("startsAfter", starts_after)
    if starts_before is not None:
        validate_instant("startsBefore", starts_before)


def validate_terms(capacity: int, hold_seconds: int) -> None:
    """Raise ValidationError unless a slot may have this many units and holds this long."""
    if not 1 <= capacity <= MAX_CAPACITY:
        raise ValidationError("capacity", f"must be between 1 and {MAX_CAPACITY}")
    if not 1 <= hold_seconds <= MAX_HOLD_SECONDS:
        raise ValidationError("holdSeconds", f"must be between 1 and {MAX_HOLD_SECONDS}")


def validate_extension_terms(hold_seconds: int, max_extensions: int, max_hold_seconds: int | None) -> None:
    """Raise ValidationError unless a slot with holds of `hold_seconds` may have these extension limits."""
    if not 0 <= max_extensions <= MAX_EXTENSIONS:
        raise ValidationError("maxExtensions", f"must be between 0 and {MAX_EXTENSIONS}")
    if (
        max_hold_seconds is not None
        and not hold_seconds <= max_hold_seconds <= HOLD_CAP_FACTOR * MAX_HOLD_SECONDS
    ):
        raise ValidationError(
            "maxHoldSeconds",
            f"must be between holdSeconds ({hold_seconds}) and {HOLD_CAP_FACTOR * MAX_HOLD_SECONDS}",
        )


def hold_cap_seconds(hold_seconds: int, max_hold_seconds: int | None) -> int:
    """How long one hold may last in all, extensions included: the slot's own cap, or the default."""
    return max_hold_seconds if max_hold_seconds is not None else HOLD_CAP_FACTOR * hold_seconds


@dataclass(frozen=True, slots=True)
class HoldExtension:
    """What the extension rule needs to know about a live hold and its slot."""

    now: datetime  # PostgreSQL's clock
    expires_at: datetime  # the hold's current expiry (after now: the hold is live)
    held_since: datetime  # when the hold was granted
    extensions_used: int
    max_extensions: int
    max_hold_seconds: int  # the cap on the whole hold (hold_cap_seconds)
    slot_ends_at: datetime
    slot_closed: bool


def extended_expiry(hold: HoldExtension, seconds: int) -> datetime:
    """The hold's new expiry when it is extended to `seconds` from now, or why it may not be.

    The hold never lasts more than max_hold_seconds from when it was granted nor past its slot's
    end: a request beyond either is cut down to it, and refused only when that leaves nothing to
    add. An extension that would not move the expiry (the hold already has `seconds` left) is a
    ValidationError, so it does not use up one of the hold's extensions.
    """
    if not 1 <= seconds <= MAX_HOLD_SECONDS:
        raise ValidationError("seconds", f"must be between 1 and {MAX_HOLD_SECONDS}")

    def refused(why: str) -> ExtensionLimitReached:
        return ExtensionLimitReached(why, hold.max_extensions, hold.max_hold_seconds)

    if hold.slot_closed:
        raise refused("the slot is closed: its holds may not be extended")
    if hold.extensions_used >= hold.max_extensions:
        raise refused(
            f"this hold may be extended {hold.max_extensions} time(s) and was extended"
            f" {hold.extensions_used} time(s)"
        )
    wanted = hold.now + timedelta(seconds=seconds)
    if wanted <= hold.expires_at:
        left = (hold.expires_at - hold.now).total_seconds()
        raise ValidationError("seconds", f"the hold already has {left:.0f} s left; ask for more")
    cap = hold.held_since + timedelta(seconds=hold.max_hold_seconds)
    if min(cap, hold.slot_ends_at) <= hold.expires_at:
        if hold.slot_ends_at < cap:
            raise refused("the hold already lasts until the slot ends")
        raise refused(f"a hold of this slot lasts at most {hold.max_hold_seconds} s in all")
    return min(wanted, cap, hold.slot_ends_at)


def check_capacity(capacity: int, occupied: int) -> None:
    """Raise ValidationError unless the slot may have `capacity` units with `occupied` of them in use."""
    if not 1 <= capacity <= MAX_CAPACITY:
        raise ValidationError("capacity", f"must be between 1 and {MAX_CAPACITY}")
    if capacity < occupied:
        raise ValidationError(
            "capacity",
            f"{occupied} units are held or confirmed now: the capacity cannot go below {occupied}",
        )


def renumbering(capacity: int, taken: Iterable[int]) -> list[tuple[int, int]]:
    """(from, to) moves that bring every taken unit within 1..capacity, onto the lowest free units.

    A slot shrinking to `capacity` keeps its occupied bookings, but the units above the new
    capacity must move down (the database refuses a unit above its slot's capacity).
    """
    used = sorted(set(taken))
    above = [unit for unit in used if unit > capacity]
    return list(zip(above, free_units(capacity, used), strict=False))


def validate_idempotency_key(key: str) -> None:
    """Raise ValidationError unless `key` is a usable idempotency key."""
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValidationError("idempotencyKey", f"must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    validate_text("idempotencyKey", key)


def validate_reason(reason: str | None) -> None:
    """Raise ValidationError when a cancellation reason is too long, or text PostgreSQL cannot keep."""
    if reason is None:
        return
    if len(reason) > MAX_REASON_LENGTH:
        raise ValidationError("reason", f"must be at most {MAX_REASON_LENGTH} characters")
    validate_text("reason", reason)


def admit(capacity: int, occupied: int, waiting: int, units: int = 1) -> Admission:
    """A newcomer holds only when its `units` are free and nobody waits: FIFO beats speed (under
    either fill policy: a newcomer queues behind everyone waiting, and may pass only from there)."""
    if occupied + units <= capacity and waiting == 0:
        return Admission.HOLD
    return Admission.QUEUE


def free_units(capacity: int, taken: Iterable[int]) -> list[int]:
    """The unit numbers (1..capacity) not taken, lowest first."""
    used = set(taken)
    return [unit for unit in range(1, capacity + 1) if unit not in used]


def hold_expiry(now: datetime, hold_seconds: int, slot_ends_at: datetime | None = None) -> datetime:
    """When a hold given at `now` dies: after its TTL, and never later than its slot's end.

    A hold that outlived its slot could be confirmed for something already over.
    """
    expiry = now + timedelta(seconds=hold_seconds)
    return expiry if slot_ends_at is None else min(expiry, slot_ends_at)


def slot_has_ended(ends_at: datetime, now: datetime) -> bool:
    """An ended slot's bookings can no longer change by time: nothing left to settle."""
    return now >= ends_at


def check_live_booking_cap(live_elsewhere: int, cap: int) -> None:
    """Raise TooManyBookings when a holder already holds or waits for `cap` other slots (0 = no cap)."""
    if cap > 0 and live_elsewhere >= cap:
        raise TooManyBookings(cap)


ADMIN_ACTOR = "admin"


def visible_actor(actor: str, holder: str, viewer_is_admin: bool, system_actor: str) -> str:
    """Who an audit row names to this viewer: admins see names; holders see themselves, the
    system, and any other actor (an admin) only as "admin"."""
    if viewer_is_admin or actor in (holder, system_actor):
        return actor
    return ADMIN_ACTOR


def queue_has_lapsed(starts_at: datetime, now: datetime) -> bool:
    """Waiting for a slot that has already started is pointless: the queue lapses."""
    return now >= starts_at


def accepts_reservations(closed: bool, starts_at: datetime, now: datetime) -> str | None:
    """Why a slot refuses new reservations, or None when it accepts them."""
    if closed:
        return "it is closed"
    if now >= starts_at:
        return "it has already started"
    return None


def promotions(free: Sequence[int], queue_heads: Sequence[T]) -> list[tuple[T, int]]:
    """Pair the heads of the queue, in order, with the free units, lowest first."""
    return list(zip(queue_heads, free, strict=False))


def estimated_wait_seconds(
    position: int, per_place: float | None, next_release_in: float | None
) -> float | None:
    """How long the booking at `position` should expect to wait, on the slot's record.

    `per_place` is seconds_per_place(). `next_release_in` is how long until the slot's earliest live
    hold runs out when every unit is taken (None otherwise): the queue cannot move before a unit
    frees, so an extended hold pushes every waiter's estimate back. None without a record.
    """
    if per_place is None:
        return None
    estimate = position * per_place
    if next_release_in is not None:
        estimate = max(estimate, max(0.0, next_release_in) + (position - 1) * per_place)
    return round(estimate, 1)


def heads_before_group(heads: Sequence[tuple[T, T | None]]) -> tuple[list[T], T | None]:
    """Split the head of a queue, given in order as (booking, its group or None): the single
    bookings a freed unit may go to, in order, up to the first entry of a waiting group (which
    nobody passes), and that group, if one was reached."""
    singles: list[T] = []
    for booking, group in heads:
        if group is not None:
            return singles, group
        singles.append(booking)
    return singles, None


def seconds_per_place(
    mean_hold_seconds: float, ended_holds: int, released_holds: int, capacity: int
) -> float | None:
    """How long the queue takes to move up one place, on a slot's record.

    Holds last `mean_hold_seconds`; of `ended_holds`, `released_holds` gave their unit back
    (expired or cancelled) instead of keeping it (confirmed). With `capacity` units turning over,
    a place frees every mean / (capacity * released share) seconds. None without a record of
    released holds: the queue has never been seen to move.
    """
    if ended_holds <= 0 or released_holds <= 0 or capacity <= 0:
        return None
    return mean_hold_seconds / (capacity * released_holds / ended_holds)
