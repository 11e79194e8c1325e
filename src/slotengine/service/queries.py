"""Reads and slot creation: slots with live counts, bookings, queue positions, audit trails.

Reads expire lapsed holds lazily: a hold is dead at expiresAt whether or not a worker ran.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import NotAuthorized
from slotengine.domain.states import BookingState
from slotengine.redis import scripts
from slotengine.redis.clock import from_epoch_ms
from slotengine.service.bookings import booking_view, load_booking_row
from slotengine.service.engine import Engine
from slotengine.service.reservations import settle_slot
from slotengine.service.views import (
    BookingView,
    Caller,
    QueuePositionView,
    SlotView,
    TransitionView,
)
from slotengine.store.database import connection
from slotengine.store.models import Slot, Transition


@dataclass(frozen=True, slots=True)
class _Counts:
    held: int
    confirmed: int
    waiting: int


async def create_slot(engine: Engine, caller: Caller, spec: policy.SlotSpec) -> SlotView:
    """Create a slot (admins only) after the domain accepts its shape."""
    if not caller.admin:
        raise NotAuthorized("only an admin can create slots")
    policy.validate_slot(spec)
    slot = await Slot.create(
        id=uuid.uuid4(),
        resource=spec.resource,
        starts_at=spec.starts_at,
        ends_at=spec.ends_at,
        capacity=spec.capacity,
        hold_seconds=spec.hold_seconds,
    )
    await settle_slot(engine, slot.id)  # writes the Redis mirror
    return _slot_view(slot, _Counts(0, 0, 0))


async def _counts(engine: Engine, slot: Slot) -> _Counts:
    """The slot's counts from Redis; settles the slot first if a hold lapsed or Redis forgot it."""
    keys = engine.keys(str(slot.id)).all()
    for attempt in range(2):
        status = await scripts.slot_status(engine.redis, keys, [])
        if status[0] != "MISSING":
            _, confirmed, live, lapsed, waiting, _, now_ms = status
            # Redis' clock (the script's), not this process's: a clock minutes behind would
            # show a started slot's queue for minutes.
            started = policy.queue_has_lapsed(slot.starts_at, from_epoch_ms(now_ms))
            if not lapsed and not (waiting and started):
                return _Counts(held=live, confirmed=confirmed, waiting=waiting)
        elif attempt:
            # Settled yet still not mirrored: the slot ended long enough ago that its mirror
            # expires as soon as it is written.
            return await _database_counts(slot.id)
        await settle_slot(engine, slot.id)
    return _Counts(held=live, confirmed=confirmed, waiting=waiting)


async def _database_counts(slot_id: UUID) -> _Counts:
    rows = await connection().execute_query_dict(
        "SELECT count(*) FILTER (WHERE state = 'RESERVED' AND expires_at > now()) AS held,"
        " count(*) FILTER (WHERE state IN ('CONFIRMED', 'COMPLETED')) AS confirmed,"
        " count(*) FILTER (WHERE state = 'PENDING') AS waiting"
        " FROM bookings WHERE slot_id = $1",
        [slot_id],
    )
    return _Counts(held=rows[0]["held"], confirmed=rows[0]["confirmed"], waiting=rows[0]["waiting"])


def _slot_view(slot: Slot, counts: _Counts) -> SlotView:
    return SlotView(
        id=str(slot.id),
        resource=slot.resource,
        starts_at=slot.starts_at,
        ends_at=slot.ends_at,
        capacity=slot.capacity,
        hold_seconds=slot.hold_seconds,
        closed=slot.closed,
        held=counts.held,
        confirmed=counts.confirmed,
        queue_length=counts.waiting,
    )


async def get_slot(engine: Engine, slot_id: str) -> SlotView | None:
    """The slot with its live counts, or None when there is no such slot."""
    try:
        slot_uuid = UUID(slot_id)
    except ValueError:
        return None
    slot = await Slot.get_or_none(id=slot_uuid)
    if slot is None:
        return None
    return _slot_view(slot, await _counts(engine, slot))


async def list_slots(
    engine: Engine,
    resource: str | None,
    starts_after: datetime | None,
    starts_before: datetime | None,
    only_available: bool,
    first: int,
) -> list[SlotView]:
    """Slots in start order, optionally for one resource, a time window, or with a free unit."""
    policy.validate_slot_filter(resource, starts_after, starts_before)
    query = Slot.all().order_by("starts_at", "id")
    if resource is not None:
        query = query.filter(resource=resource)
    if starts_after is not None:
        query = query.filter(starts_at__gte=starts_after)
    if starts_before is not None:
        query = query.filter(starts_at__lt=starts_before)
    views: list[SlotView] = []
    async for slot in query:
        view = _slot_view(slot, await _counts(engine, slot))
        if only_available and (view.available == 0 or view.closed):
            continue
        views.append(view)
        if len(views) >= first:
            break
    return views


async def get_booking(engine: Engine, caller: Caller, booking_id: str) -> BookingView | None:
    """The booking as of now, or None when it does not exist or is someone else's."""
    try:
        booking_uuid = UUID(booking_id)
    except ValueError:
        return None
    row = await load_booking_row(booking_uuid)
    if row is None or (row["holder"] != caller.holder and not caller.admin):
        return None
    if row["state"] in (BookingState.PENDING, BookingState.RESERVED):
        position = await _position(engine, row["slot_id"], booking_uuid)
        row = await load_booking_row(booking_uuid)
        assert row is not None
        return booking_view(row, position)
    return booking_view(row, None)


async def _position(engine: Engine, slot_id: UUID, booking_id: UUID) -> int | None:
    """Settle the slot if needed, then read the booking's place in the queue from Redis."""
    slot = await Slot.get(id=slot_id)
    await _counts(engine, slot)
    keys = engine.keys(str(slot_id)).all()
    answer = await scripts.queue_position(engine.redis, keys, [str(booking_id)])
    if answer[0] == "MISSING":
        await settle_slot(engine, slot_id)
        answer = await scripts.queue_position(engine.redis, keys, [str(booking_id)])
    return int(answer[0]) or None


async def get_queue_position(engine: Engine, caller: Caller, booking_id: str) -> QueuePositionView | None:
    """Where the booking stands: its place in line while waiting, its hold's expiry once offered."""
    booking = await get_booking(engine, caller, booking_id)
    if booking is None:
        return None
    position = booking.queue_position
    return QueuePositionView(
        booking_id=booking.id,
        state=booking.state,
        position=position,
        ahead=position - 1 if position is not None else None,
        expires_at=booking.expires_at if booking.state is BookingState.RESERVED else None,
    )


async def booking_history(booking_id: str) -> list[TransitionView]:
    """Every transition of the booking, oldest first."""
    rows = await Transition.filter(booking_id=UUID(booking_id)).order_by("id")
    return [
        TransitionView(
            from_state=BookingState(r.from_state) if r.from_state else None,
            to_state=BookingState(r.to_state),
            event=r.event,
            actor=r.actor,
            reason=r.reason,
            at=r.at,
        )
        for r in rows
    ]


async def my_bookings(engine: Engine, caller: Caller, first: int) -> list[BookingView]:
    """The caller's bookings, newest first."""
    rows = await connection().execute_query_dict(
        "SELECT id FROM bookings WHERE holder = $1 ORDER BY created_at DESC LIMIT $2",
        [caller.holder, first],
    )
    views = [await get_booking(engine, caller, str(r["id"])) for r in rows]
    return [v for v in views if v is not None]
