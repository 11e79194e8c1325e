"""Reads and slot creation: slots with live counts, bookings, queue positions, audit trails.

A read costs a fixed number of round trips whatever its page size: one query for a page of slots
or bookings with their counts and queue positions, one for the audit trails of all of them.
Counts come from PostgreSQL, the system of record, and count only live holds: a hold is dead at
expiresAt whether or not a worker ran. A read takes the slot's lock (to expire, lapse and promote)
only when something on a slot that has not ended is due; an ended slot is read and never locked.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import NotAuthorized
from slotengine.domain.states import BookingState
from slotengine.service import slot_cursor
from slotengine.service.bookings import booking_view
from slotengine.service.engine import Engine
from slotengine.service.ids import parse_id
from slotengine.service.queue_places import queue_places
from slotengine.service.reservations import settle_slot
from slotengine.service.unit_of_work import SYSTEM_ACTOR
from slotengine.service.views import (
    BookingView,
    Caller,
    QueuePositionView,
    SlotView,
    TransitionView,
)
from slotengine.store.database import connection
from slotengine.store.models import Slot

S = BookingState

# With onlyAvailable, one page looks at most this many slots per slot asked for, then hands out a
# cursor to go on from: a listing where every slot is full never scans without bound.
SCAN_PER_SLOT = 4

_SLOT_COLUMNS = (
    "s.id, s.resource, s.starts_at, s.ends_at, s.capacity, s.hold_seconds, s.closed,"
    " s.max_extensions, s.max_hold_seconds, s.fill_policy, s.max_pass_overs, now() AS db_now"
)
# Occupying bookings are exactly those with a unit (a CHECK constraint says so), which lets the
# partial index on (slot_id, unit) answer; waiting ones use the queue's partial index.
# Counts are of units (a booking may take several).
_SLOT_COUNTS = (
    f"(SELECT coalesce(sum(b.units) FILTER (WHERE b.state = '{S.RESERVED}' AND b.expires_at > now()), 0)"
    "   FROM bookings b WHERE b.slot_id = s.id AND b.unit IS NOT NULL) AS held,"
    f" (SELECT coalesce(sum(b.units) FILTER (WHERE b.state = '{S.RESERVED}' AND b.expires_at <= now()), 0)"
    "   FROM bookings b WHERE b.slot_id = s.id AND b.unit IS NOT NULL) AS lapsed,"
    f" (SELECT coalesce(sum(b.units) FILTER (WHERE b.state <> '{S.RESERVED}'), 0)"
    "   FROM bookings b WHERE b.slot_id = s.id AND b.unit IS NOT NULL) AS confirmed,"
    # Kept on the slot's row by every change under its lock: never a walk of the queue.
    " s.waiting AS waiting"
)


@dataclass(frozen=True, slots=True)
class SlotPage:
    items: list[SlotView]
    end_cursor: str | None  # resumes after the last slot this page looked at
    has_next_page: bool


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
        max_extensions=spec.max_extensions,
        max_hold_seconds=spec.max_hold_seconds,
        fill_policy=spec.fill_policy.value,
        max_pass_overs=spec.max_pass_overs,
    )
    await settle_slot(engine, slot.id)  # writes the Redis mirror
    return SlotView(
        id=str(slot.id),
        resource=slot.resource,
        starts_at=slot.starts_at,
        ends_at=slot.ends_at,
        capacity=slot.capacity,
        hold_seconds=slot.hold_seconds,
        closed=slot.closed,
        held=0,
        confirmed=0,
        queue_length=0,
        max_extensions=slot.max_extensions,
        max_hold_seconds=slot.max_hold_seconds,
        fill_policy=spec.fill_policy,
        max_pass_overs=spec.max_pass_overs,
    )


def _slot_view(row: dict[str, Any]) -> SlotView:
    started = policy.queue_has_lapsed(row["starts_at"], row["db_now"])
    # A queue lapses when its slot starts, whether or not anyone wrote that down yet.
    return SlotView.of_row(row, 0 if started else int(row["waiting"]))


def slot_is_due(row: dict[str, Any]) -> bool:
    """Whether the slot has something to expire, lapse or promote that only its lock may write
    (`row` has its times, capacity, `db_now` and the held, lapsed, confirmed and waiting counts)."""
    now = row["db_now"]
    if policy.slot_has_ended(row["ends_at"], now):
        return False  # no hold outlives its slot: nothing left that a read must settle
    waiting = int(row["waiting"])
    if policy.queue_has_lapsed(row["starts_at"], now):
        return waiting > 0 or int(row["lapsed"]) > 0
    free = row["capacity"] - int(row["held"]) - int(row["confirmed"])
    return int(row["lapsed"]) > 0 or (waiting > 0 and free > 0)


async def _settled(engine: Engine, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows again after settling the slots that are due; the same rows when none is."""
    due = [row["id"] for row in rows if slot_is_due(row)]
    if not due:
        return rows
    for slot_id in due:
        await settle_slot(engine, slot_id)
    fresh = await connection().execute_query_dict(
        f"SELECT {_SLOT_COLUMNS}, {_SLOT_COUNTS} FROM slots s WHERE s.id = ANY($1::uuid[])", [due]
    )
    by_id = {row["id"]: row for row in fresh}
    return [by_id.get(row["id"], row) for row in rows]


async def get_slot(engine: Engine, slot_id: str) -> SlotView | None:
    """The slot with its live counts, or None when there is no such slot (ValidationError when the
    id cannot be one)."""
    slot_uuid = parse_id("id", slot_id)
    rows = await connection().execute_query_dict(
        f"SELECT {_SLOT_COLUMNS}, {_SLOT_COUNTS} FROM slots s WHERE s.id = $1", [slot_uuid]
    )
    if not rows:
        return None
    return _slot_view((await _settled(engine, rows))[0])


async def list_slots(
    engine: Engine,
    resource: str | None,
    starts_after: datetime | None,
    starts_before: datetime | None,
    only_available: bool,
    first: int,
    after: str | None = None,
) -> SlotPage:
    """One page of slots in start order, optionally for one resource, a time window, or with a
    free unit; `after` is a cursor an earlier page handed out."""
    policy.validate_slot_filter(resource, starts_after, starts_before)
    conditions: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if resource is not None:
        conditions.append(f"resource = {arg(resource)}")
    if starts_after is not None:
        conditions.append(f"starts_at >= {arg(starts_after)}")
    if starts_before is not None:
        conditions.append(f"starts_at < {arg(starts_before)}")
    if after is not None:
        cursor_starts_at, cursor_id = slot_cursor.decode(after)
        conditions.append(f"(starts_at, id) > ({arg(cursor_starts_at)}, {arg(cursor_id)})")
    if only_available:
        # A slot that started or closed takes no reservation: never worth listing as available.
        conditions.append("NOT closed AND starts_at > now()")
    scan = first * SCAN_PER_SLOT if only_available else first + 1
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = await connection().execute_query_dict(
        f"SELECT {_SLOT_COLUMNS}, {_SLOT_COUNTS} FROM"
        f" (SELECT * FROM slots {where} ORDER BY starts_at, id LIMIT {arg(scan)}) s"
        " ORDER BY s.starts_at, s.id",
        args,
    )
    if not only_available:
        page = await _settled(engine, rows[:first])
        last = page[-1] if page else None
        return SlotPage(
            items=[_slot_view(r) for r in page],
            end_cursor=slot_cursor.encode(last["starts_at"], last["id"]) if last else after,
            has_next_page=len(rows) > first,
        )
    candidates = [r for r in rows if int(r["held"]) + int(r["confirmed"]) < r["capacity"]]
    picked = candidates[:first]
    views = [v for v in map(_slot_view, await _settled(engine, picked)) if v.available > 0]
    # Resume after the last slot looked at: the last one picked when the page filled up,
    # else the end of the scanned window.
    looked_at = picked[-1] if len(picked) == first else (rows[-1] if rows else None)
    more = len(candidates) > first or len(rows) == scan
    return SlotPage(
        items=views,
        end_cursor=slot_cursor.encode(looked_at["starts_at"], looked_at["id"]) if looked_at else after,
        has_next_page=more,
    )


# ---- bookings ------------------------------------------------------------------------------

_BOOKING_QUERY = (
    "SELECT b.id, b.slot_id, b.holder, b.state, b.unit, b.fence, b.queue_seq, b.expires_at,"
    " b.created_at, b.units, b.extra_units, s.starts_at, s.ends_at, s.capacity,"
    " s.version AS slot_version, now() AS db_now,"
    # The slot's counts: whether any booking of the slot is due, not only this one.
    f" {_SLOT_COUNTS}"
    " FROM bookings b JOIN slots s ON s.id = b.slot_id"
)


def booking_view_of(row: dict[str, Any]) -> BookingView:
    """The booking row (with `position`, its slot's `starts_at` and `db_now`) as it stands now."""
    view = booking_view(row, row["position"])
    if view.state is S.RESERVED and row["expires_at"] <= row["db_now"]:
        # Only on an ended slot, which no read settles: the hold is dead all the same.
        return dataclasses.replace(view, state=S.EXPIRED, queue_position=None)
    if view.state is S.PENDING and policy.queue_has_lapsed(row["starts_at"], row["db_now"]):
        return dataclasses.replace(view, state=S.EXPIRED, expires_at=None, queue_position=None)
    return view


async def _bookings(engine: Engine, where: str, args: list[Any]) -> list[dict[str, Any]]:
    """Booking rows with their queue positions, after settling the slots of any that are due."""
    rows = await connection().execute_query_dict(f"{_BOOKING_QUERY} {where}", args)
    due = {row["slot_id"] for row in rows if slot_is_due(row)}
    if due:
        for slot_id in sorted(due):
            await settle_slot(engine, slot_id)
        rows = await connection().execute_query_dict(f"{_BOOKING_QUERY} {where}", args)
    places = await queue_places(engine, rows)
    for row in rows:
        row["position"] = places.get(row["id"])
    return rows


async def get_booking(engine: Engine, caller: Caller, booking_id: str) -> BookingView | None:
    """The booking as of now, or None when it does not exist or is someone else's (ValidationError
    when the id cannot be one)."""
    booking_uuid = parse_id("id", booking_id)
    rows = await _bookings(engine, "WHERE b.id = $1", [booking_uuid])
    if not rows or (rows[0]["holder"] != caller.holder and not caller.admin):
        return None
    return booking_view_of(rows[0])


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
        expires_at=booking.expires_at if booking.state is S.RESERVED else None,
    )


async def my_bookings(engine: Engine, caller: Caller, first: int) -> list[BookingView]:
    """The caller's bookings, newest first, in one query."""
    rows = await _bookings(
        engine, "WHERE b.holder = $1 ORDER BY b.created_at DESC, b.id LIMIT $2", [caller.holder, first]
    )
    return [booking_view_of(row) for row in rows]


async def booking_histories(booking_ids: list[str]) -> list[list[TransitionView]]:
    """Every transition of each booking, oldest first, in one query (a DataLoader's batch)."""
    uuids = [UUID(b) for b in booking_ids]  # ids of bookings already read, never client input
    rows = await connection().execute_query_dict(
        "SELECT booking_id, from_state, to_state, event, actor, reason, at FROM transitions"
        " WHERE booking_id = ANY($1::uuid[]) ORDER BY booking_id, id",
        [uuids],
    )
    by_booking: dict[UUID, list[TransitionView]] = {u: [] for u in uuids}
    for r in rows:
        by_booking[r["booking_id"]].append(
            TransitionView(
                from_state=S(r["from_state"]) if r["from_state"] else None,
                to_state=S(r["to_state"]),
                event=r["event"],
                actor=r["actor"],
                reason=r["reason"],
                at=r["at"],
            )
        )
    return [by_booking[u] for u in uuids]


def as_seen_by(history: list[TransitionView], holder: str, viewer: Caller | None) -> list[TransitionView]:
    """The audit trail as `viewer` may see it: an admin's name shows to holders as "admin"."""
    is_admin = viewer is not None and viewer.admin
    return [
        TransitionView(
            t.from_state,
            t.to_state,
            t.event,
            policy.visible_actor(t.actor, holder, is_admin, SYSTEM_ACTOR),
            t.reason,
            t.at,
        )
        for t in history
    ]
