"""Booking groups: holds across several slots, all or nothing. Pure rules, no I/O.

A group is one booking per slot, held, confirmed, cancelled and expired together. Slots are
always locked in one order (ascending id), so two groups racing for overlapping slots, listed in
any order, never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import SlotClosed, SlotUnavailable, TooManyBookings, ValidationError
from slotengine.domain.states import BookingState, InvalidTransition

MAX_GROUP_SLOTS = 20


class GroupMember(InvalidTransition):
    """A held or waiting booking of a group moves only with its group (confirmGroup, cancelGroup)."""

    def __init__(self, from_state: BookingState, event: str, booking_id: str, group_id: str) -> None:
        super().__init__(from_state, event)
        self.message = (
            f"cannot {event} booking {booking_id} alone: it is part of group {group_id}; {event} the group"
        )
        self.args = (self.message,)


def lock_order(slot_ids: Iterable[UUID]) -> list[UUID]:
    """The order every group transaction locks its slots in: ascending id (PostgreSQL's uuid order
    is the bytes' order, as Python's)."""
    return sorted(slot_ids)


def validate_group_slots(slot_ids: Sequence[UUID]) -> list[UUID]:
    """The group's slots in lock order; ValidationError when there are none, too many or repeats."""
    if not 1 <= len(slot_ids) <= MAX_GROUP_SLOTS:
        raise ValidationError("slotIds", f"must name 1 to {MAX_GROUP_SLOTS} slots")
    if len(set(slot_ids)) != len(slot_ids):
        raise ValidationError("slotIds", "must not name a slot twice")
    return lock_order(slot_ids)


def check_group_cap(live_elsewhere: int, slots: int, cap: int) -> None:
    """TooManyBookings when a holder's claims outside the group plus the group's own pass `cap`."""
    if cap > 0 and live_elsewhere + slots > cap:
        raise TooManyBookings(cap)


@dataclass(frozen=True, slots=True)
class SlotStanding:
    """What a group needs to know about one of its slots, as locked and settled."""

    slot_id: str
    closed: bool
    starts_at: datetime
    ends_at: datetime
    capacity: int
    hold_seconds: int
    occupied: int
    waiting: int
    holder_has_live_booking: bool


def admit_group(standings: Sequence[SlotStanding], now: datetime, wait: bool) -> policy.Admission:
    """HOLD when the group can hold every slot now; QUEUE (wait: true) when it must wait for some.
    Raises why not (the first slot in lock order that refuses): a closed or started slot, a slot
    the holder already holds or waits for, and, without `wait`, a slot it cannot hold now. A group
    follows the singles' rule on every slot: a free unit and nobody waiting (FIFO beats speed)."""
    full: SlotStanding | None = None
    for slot in standings:
        why = policy.accepts_reservations(slot.closed, slot.starts_at, now)
        if why is not None:
            raise SlotClosed(slot.slot_id, why)
        if slot.holder_has_live_booking:
            raise SlotUnavailable(slot.slot_id, "you already hold or wait for it")
        admitted = policy.admit(slot.capacity, slot.occupied, slot.waiting) is policy.Admission.HOLD
        if not admitted and full is None:
            full = slot
    if full is None:
        return policy.Admission.HOLD
    if wait:
        return policy.Admission.QUEUE
    why = "every unit is taken" if full.occupied >= full.capacity else "people are waiting for it"
    raise SlotUnavailable(full.slot_id, why)


def group_can_be_offered(heads: Sequence[bool], free: Sequence[int]) -> bool:
    """A waiting group is offered holds only when, on every one of its slots, its entry heads the
    queue (`heads`) and a unit is free (`free`, units free per slot): all or nothing, in turn."""
    return all(heads) and all(units > 0 for units in free)


def group_expiry(now: datetime, standings: Sequence[SlotStanding]) -> datetime:
    """One expiry for every hold of the group: the earliest any of its slots allows (each slot's
    hold time, and never past a slot's end)."""
    return min(policy.hold_expiry(now, slot.hold_seconds, slot.ends_at) for slot in standings)


def group_state(stored: BookingState, expires_at: datetime | None, now: datetime) -> BookingState:
    """The group's state as the clock says: a held group is EXPIRED at expiresAt, worker or not."""
    if stored is BookingState.RESERVED and expires_at is not None and expires_at <= now:
        return BookingState.EXPIRED
    return stored


def member_moves_alone(state: BookingState) -> bool:
    """Whether a group's booking in `state` may be confirmed or cancelled on its own: only once the
    group is confirmed (a confirmed class of a course may be cancelled alone)."""
    return state not in (BookingState.PENDING, BookingState.RESERVED)
