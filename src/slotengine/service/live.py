"""Live views for subscriptions: a snapshot at a known slot version, then the announcements.

Each watcher reads the state once, then applies every announcement in version order locally
(O(1) per listener, no read per listener and announcement). A gap in versions, or a listener
that fell behind, re-reads the snapshot.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import BookingNotFound, SlotNotFound
from slotengine.domain.states import FINAL_STATES, BookingState
from slotengine.service import queries
from slotengine.service.announcements import SlotAnnouncement
from slotengine.service.engine import Engine
from slotengine.service.events import EventHub, Message
from slotengine.service.ids import parse_id
from slotengine.service.queue_places import queue_places
from slotengine.service.state_sql import CONFIRMED, RESERVED, SETTLED_SQL
from slotengine.service.views import BookingView, Caller, QueuePositionView, SlotView
from slotengine.store.database import connection

S = BookingState


async def _one(sql: str, *args: Any) -> dict[str, Any] | None:
    rows = await connection().execute_query_dict(sql, list(args))
    return rows[0] if rows else None


# ---- slot status -------------------------------------------------------------------------


async def _slot_snapshot(slot_id: UUID) -> tuple[SlotView, int] | None:
    row = await _one(
        "SELECT s.id, s.resource, s.starts_at, s.ends_at, s.capacity, s.hold_seconds, s.closed,"
        " s.version,"
        f" (SELECT count(*) FROM bookings b WHERE b.slot_id = s.id AND b.state = {RESERVED}) AS held,"
        " (SELECT count(*) FROM bookings b WHERE b.slot_id = s.id"
        f"   AND b.state IN {SETTLED_SQL}) AS confirmed,"
        " s.waiting"  # kept on the slot's row: never a walk of the queue
        " FROM slots s WHERE s.id = $1",
        slot_id,
    )
    if row is None:
        return None
    view = SlotView.of_row(row, int(row["waiting"]))
    return view, int(row["version"])


def _occupancy_delta(state: BookingState | None) -> tuple[int, int, int]:
    """(held, confirmed, waiting) that one booking in `state` contributes to its slot."""
    if state is S.RESERVED:
        return 1, 0, 0
    if state in (S.CONFIRMED, S.COMPLETED):
        return 0, 1, 0
    if state is S.PENDING:
        return 0, 0, 1
    return 0, 0, 0


def apply_to_slot(view: SlotView, announcement: SlotAnnouncement) -> SlotView:
    """The slot's counts after the changes of one announcement."""
    held, confirmed, waiting = view.held, view.confirmed, view.queue_length
    for change in announcement.changes:
        before = _occupancy_delta(change.from_state)
        after = _occupancy_delta(change.to_state)
        held += after[0] - before[0]
        confirmed += after[1] - before[1]
        waiting += after[2] - before[2]
    return dataclasses.replace(view, held=held, confirmed=confirmed, queue_length=waiting)


async def watch_slot(engine: Engine, hub: EventHub, slot_id: str) -> AsyncIterator[SlotView]:
    """The slot now, then after every committed change to its bookings, in order."""
    # The hub names the channel after the id: any other spelling of it would hear nothing.
    slot_uuid = parse_id("slotId", slot_id)
    slot_id = str(slot_uuid)
    await queries.get_slot(engine, slot_id)  # settles lapsed holds before the first snapshot
    async with hub.listen(slot_id) as inbox:
        snapshot = await _slot_snapshot(slot_uuid)
        if snapshot is None:
            raise SlotNotFound(slot_id)
        view, version = snapshot
        yield view
        while True:
            message = await inbox.get()
            if _in_order(message, version):
                assert isinstance(message, SlotAnnouncement)
                view, version = apply_to_slot(view, message), message.version
                yield view
            elif _needs_resync(message, version):
                fresh = await _slot_snapshot(slot_uuid)
                assert fresh is not None
                if fresh[0] != view:
                    yield fresh[0]
                view, version = fresh


def _in_order(message: Message, version: int) -> bool:
    return isinstance(message, SlotAnnouncement) and message.version == version + 1


def _needs_resync(message: Message, version: int) -> bool:
    """Anything but an old announcement we already counted: a gap, a reorder, a lost backlog."""
    return not (isinstance(message, SlotAnnouncement) and message.version <= version)


# ---- bookings and queue positions ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _BookingState:
    view: BookingView
    version: int
    capacity: int


async def _booking_snapshot(engine: Engine, caller: Caller, booking_id: str) -> _BookingState:
    booking_uuid = parse_id("bookingId", booking_id)
    row = await _one(
        "SELECT b.id, b.slot_id, b.holder, b.state, b.queue_seq, b.expires_at, b.created_at,"
        " s.version, s.version AS slot_version, s.capacity"
        " FROM bookings b JOIN slots s ON s.id = b.slot_id WHERE b.id = $1",
        booking_uuid,
    )
    if row is None or (row["holder"] != caller.holder and not caller.admin):
        raise BookingNotFound(booking_id)
    row["position"] = (await queue_places(engine, [row])).get(row["id"])
    state = S(row["state"])
    view = BookingView(
        id=str(row["id"]),
        slot_id=str(row["slot_id"]),
        holder=row["holder"],
        state=state,
        expires_at=row["expires_at"] if state in (S.RESERVED, S.EXPIRED) else None,
        queue_position=row["position"],
        created_at=row["created_at"],
    )
    return _BookingState(view, int(row["version"]), int(row["capacity"]))


def apply_to_booking(view: BookingView, announcement: SlotAnnouncement) -> BookingView:
    """The booking after one announcement: its own transition, or its queue moving up."""
    position = view.queue_position
    state, expires_at = view.state, view.expires_at
    for change in announcement.changes:
        if change.booking_id == view.id:
            state = change.to_state
            position = change.position if state is S.PENDING else None
            if state is S.RESERVED:
                expires_at = change.expires_at
            elif state is not S.EXPIRED:
                expires_at = None
        elif (
            state is S.PENDING
            and change.from_state is S.PENDING
            and position is not None
            and change.position is not None
            and change.position < position
        ):
            position -= 1
    return dataclasses.replace(view, state=state, queue_position=position, expires_at=expires_at)


async def _follow(
    engine: Engine, hub: EventHub, caller: Caller, booking_id: str
) -> AsyncIterator[_BookingState]:
    """The booking now, then after every announcement of its slot, until it is final."""
    booking_id = str(parse_id("bookingId", booking_id))
    first = await queries.get_booking(engine, caller, booking_id)  # settles lapsed holds
    if first is None:
        raise BookingNotFound(booking_id)
    async with hub.listen(first.slot_id) as inbox:
        current = await _booking_snapshot(engine, caller, booking_id)
        yield current
        while current.view.state not in FINAL_STATES:
            message = await inbox.get()
            if _in_order(message, current.version):
                assert isinstance(message, SlotAnnouncement)
                view = apply_to_booking(current.view, message)
                current = dataclasses.replace(current, view=view, version=message.version)
                yield current
            elif _needs_resync(message, current.version):
                current = await _booking_snapshot(engine, caller, booking_id)
                yield current


async def watch_booking(
    engine: Engine, hub: EventHub, caller: Caller, booking_id: str
) -> AsyncIterator[BookingView]:
    """The booking now, then after each change of its state."""
    last: BookingState | None = None
    async for current in _follow(engine, hub, caller, booking_id):
        if current.view.state is not last:
            last = current.view.state
            yield current.view


async def watch_queue_position(
    engine: Engine, hub: EventHub, caller: Caller, booking_id: str
) -> AsyncIterator[QueuePositionView]:
    """Where the booking stands now, then on every move, then the hold it is offered."""
    last: QueuePositionView | None = None
    async for current in _follow(engine, hub, caller, booking_id):
        view = current.view
        per_place = await hub.shared(
            view.slot_id,
            "seconds-per-place",
            current.version,
            functools.partial(seconds_per_place, UUID(view.slot_id), current.capacity),
        )
        position = view.queue_position
        update = QueuePositionView(
            booking_id=view.id,
            state=view.state,
            position=position,
            ahead=position - 1 if position is not None else None,
            expires_at=view.expires_at if view.state is S.RESERVED else None,
            estimated_wait_seconds=round(position * per_place, 1)
            if position is not None and per_place is not None
            else None,
        )
        if update != last:
            last = update
            yield update
        if view.state is S.CONFIRMED:
            return


async def seconds_per_place(slot_id: UUID, capacity: int) -> float | None:
    """The slot's measured time per queue place (see policy.seconds_per_place)."""
    row = await _one(
        "SELECT avg(EXTRACT(EPOCH FROM l.at - r.at)) AS mean, count(*) AS ended,"
        f" count(*) FILTER (WHERE l.to_state <> {CONFIRMED}) AS released"
        " FROM transitions r JOIN bookings b ON b.id = r.booking_id"
        " JOIN LATERAL (SELECT x.at, x.to_state FROM transitions x"
        f"   WHERE x.booking_id = r.booking_id AND x.id > r.id AND x.from_state = {RESERVED}"
        "   ORDER BY x.id LIMIT 1) l ON true"
        f" WHERE b.slot_id = $1 AND r.to_state = {RESERVED}",
        slot_id,
    )
    if row is None or row["mean"] is None:
        return None
    return policy.seconds_per_place(float(row["mean"]), int(row["ended"]), int(row["released"]), capacity)
