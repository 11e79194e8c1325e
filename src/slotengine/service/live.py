"""Live views for subscriptions: a snapshot at a known slot version, then the announcements.

Each watcher reads the state once, then applies every announcement in version order locally
(O(1) per listener, no read per listener and announcement). Every message carries a cursor (the
slot version it shows). A watcher started `after` a cursor listens first, reads the state, replays
the changes in between from the audit trail (service/replay.py), then applies announcements above
the version it read: no gap, no duplicate. A gap in versions, or a listener that fell behind,
catches up the same way (or re-reads the state, past the replay window).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import BookingNotFound, CursorExpired, SlotNotFound
from slotengine.domain.states import FINAL_STATES, BookingState
from slotengine.service import queries, replay, stream_cursor
from slotengine.service.announcements import SlotAnnouncement, SlotTerms
from slotengine.service.engine import Engine
from slotengine.service.events import EventHub, Message
from slotengine.service.ids import parse_id
from slotengine.service.queue_places import queue_places
from slotengine.service.replay import HoldRecord
from slotengine.service.state_sql import PENDING, RESERVED, SETTLED_SQL
from slotengine.service.views import BookingView, Caller, LiveMessage, QueuePositionView, SlotView
from slotengine.store.database import connection

S = BookingState


async def _one(sql: str, *args: Any) -> dict[str, Any] | None:
    rows = await connection().execute_query_dict(sql, list(args))
    return rows[0] if rows else None


# ---- slot status -------------------------------------------------------------------------


async def _slot_snapshot(slot_id: UUID) -> tuple[SlotView, int] | None:
    row = await _one(
        "SELECT s.id, s.resource, s.starts_at, s.ends_at, s.capacity, s.hold_seconds, s.closed,"
        " s.max_extensions, s.max_hold_seconds, s.fill_policy, s.max_pass_overs, s.version,"
        " (SELECT coalesce(sum(b.units), 0) FROM bookings b WHERE b.slot_id = s.id"
        f"   AND b.state = {RESERVED}) AS held,"
        " (SELECT coalesce(sum(b.units), 0) FROM bookings b WHERE b.slot_id = s.id"
        f"   AND b.state IN {SETTLED_SQL}) AS confirmed,"
        " s.waiting"  # kept on the slot's row: never a walk of the queue
        " FROM slots s WHERE s.id = $1",
        slot_id,
    )
    if row is None:
        return None
    view = SlotView.of_row(row, int(row["waiting"]))
    return view, int(row["version"])


def _occupancy_delta(state: BookingState | None, units: int = 1) -> tuple[int, int, int]:
    """(held units, confirmed units, waiting entries) that one booking of `units` units in `state`
    contributes to its slot."""
    if state is S.RESERVED:
        return units, 0, 0
    if state in (S.CONFIRMED, S.COMPLETED):
        return 0, units, 0
    if state is S.PENDING:
        return 0, 0, 1
    return 0, 0, 0


def apply_to_slot(view: SlotView, announcement: SlotAnnouncement) -> SlotView:
    """The slot's counts after the changes of one announcement."""
    held, confirmed, waiting = view.held, view.confirmed, view.queue_length
    for change in announcement.changes:
        before = _occupancy_delta(change.from_state, change.units)
        after = _occupancy_delta(change.to_state, change.units)
        held += after[0] - before[0]
        confirmed += after[1] - before[1]
        waiting += after[2] - before[2]
    view = dataclasses.replace(view, held=held, confirmed=confirmed, queue_length=waiting)
    return view if announcement.terms is None else _with_terms(view, announcement.terms)


def _with_terms(view: SlotView, terms: SlotTerms) -> SlotView:
    return dataclasses.replace(
        view,
        capacity=terms.capacity,
        hold_seconds=terms.hold_seconds,
        closed=terms.closed,
        max_extensions=terms.max_extensions,
        max_hold_seconds=terms.max_hold_seconds,
        fill_policy=terms.fill_policy,
        max_pass_overs=terms.max_pass_overs,
    )


def unapply_from_slot(view: SlotView, announcements: list[SlotAnnouncement]) -> SlotView:
    """The slot's counts before the changes of `announcements` (apply_to_slot, undone)."""
    held, confirmed, waiting = view.held, view.confirmed, view.queue_length
    for announcement in announcements:
        for change in announcement.changes:
            before = _occupancy_delta(change.from_state, change.units)
            after = _occupancy_delta(change.to_state, change.units)
            held -= after[0] - before[0]
            confirmed -= after[1] - before[1]
            waiting -= after[2] - before[2]
    return dataclasses.replace(view, held=held, confirmed=confirmed, queue_length=waiting)


async def _slot_steps(
    engine: Engine, slot_id: UUID, view: SlotView, version: int, since: int
) -> list[tuple[SlotView, int]]:
    """The slot after each change from version `since` to `version`, where it is `view` now.

    CursorExpired when that is further back than the replay window or the trail keeps."""
    stream_cursor.check_window(since, version, engine.resume_window_versions)
    trail = await replay.read_trail(slot_id, since, version)
    step = unapply_from_slot(view, trail.announcements)
    if trail.terms_before is not None:
        step = _with_terms(step, trail.terms_before)
    steps = []
    for announcement in trail.announcements:
        step = apply_to_slot(step, announcement)
        steps.append((step, announcement.version))
    return steps


async def watch_slot(
    engine: Engine, hub: EventHub, slot_id: str, after: str | None = None
) -> AsyncIterator[LiveMessage[SlotView]]:
    """The slot now (or each change after the cursor `after`), then after every committed change
    to its bookings, in order."""
    # The hub names the channel after the id: any other spelling of it would hear nothing.
    slot_uuid = parse_id("slotId", slot_id)
    slot_id = str(slot_uuid)
    await queries.get_slot(engine, slot_id)  # settles lapsed holds before the first snapshot
    async with hub.listen(slot_id) as inbox:
        snapshot = await _slot_snapshot(slot_uuid)
        if snapshot is None:
            raise SlotNotFound(slot_id)
        view, version = snapshot
        if after is None:
            yield LiveMessage(view, stream_cursor.encode(slot_uuid, version))
        else:
            try:
                since = stream_cursor.decode(after, slot_uuid)
                steps = await _slot_steps(engine, slot_uuid, view, version, since)
            except CursorExpired as expired:
                yield LiveMessage(view, stream_cursor.encode(slot_uuid, version), expired.message)
            else:
                for step, at in steps:
                    yield LiveMessage(step, stream_cursor.encode(slot_uuid, at))
        while True:
            message = await inbox.get()
            if _in_order(message, version):
                assert isinstance(message, SlotAnnouncement)
                view, version = apply_to_slot(view, message), message.version
                yield LiveMessage(view, stream_cursor.encode(slot_uuid, version))
            elif _needs_resync(message, version):
                fresh = await _slot_snapshot(slot_uuid)
                assert fresh is not None
                try:
                    steps = await _slot_steps(engine, slot_uuid, *fresh, since=version)
                except CursorExpired:  # too far behind to replay: jump to the state now
                    steps = [fresh] if fresh[0] != view else []
                for step, at in steps:
                    yield LiveMessage(step, stream_cursor.encode(slot_uuid, at))
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
    record: HoldRecord | None = None  # the slot's hold record at `version`, when replayed
    baseline: bool = False  # the booking as of the client's cursor: compared with, never sent
    cursor_expired: str | None = None  # why the cursor given could not be resumed from

    @property
    def cursor(self) -> str:
        return stream_cursor.encode(UUID(self.view.slot_id), self.version)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    state: _BookingState
    queue_seq: int
    ahead: int | None  # bookings waiting ahead of it now, when asked for (or when it waits)
    hold_expires_at: datetime | None  # the expiry of its hold, if it was ever held


async def _booking_snapshot(
    engine: Engine, caller: Caller, booking_id: str, *, ahead: bool = False
) -> _Snapshot:
    booking_uuid = parse_id("bookingId", booking_id)
    row = await _one(
        "SELECT b.id, b.slot_id, b.holder, b.state, b.expires_at, b.created_at, b.queue_seq,"
        " s.version, s.version AS slot_version, s.capacity,"
        # A waiting booking's place comes from the mirror (queue_places, below); the queue is
        # counted only for one that no longer waits, and only when a replay asks (a resume).
        f" CASE WHEN $2 AND b.state <> {PENDING} THEN (SELECT count(*) FROM bookings p"
        f"   WHERE p.slot_id = b.slot_id AND p.state = {PENDING} AND p.queue_seq < b.queue_seq)"
        " END AS ahead"
        " FROM bookings b JOIN slots s ON s.id = b.slot_id WHERE b.id = $1",
        booking_uuid,
        ahead,
    )
    if row is None or (row["holder"] != caller.holder and not caller.admin):
        raise BookingNotFound(booking_id)
    state = S(row["state"])
    if state is S.PENDING:
        row["ahead"] = (await queue_places(engine, [row]))[row["id"]] - 1
    view = BookingView(
        id=str(row["id"]),
        slot_id=str(row["slot_id"]),
        holder=row["holder"],
        state=state,
        expires_at=row["expires_at"] if state in (S.RESERVED, S.EXPIRED) else None,
        queue_position=row["ahead"] + 1 if state is S.PENDING else None,
        created_at=row["created_at"],
    )
    return _Snapshot(
        _BookingState(view, int(row["version"]), int(row["capacity"])),
        int(row["queue_seq"]),
        None if row["ahead"] is None else int(row["ahead"]),
        row["expires_at"],
    )


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


async def _booking_steps(
    engine: Engine, snapshot: _Snapshot, since: int, *, with_record: bool
) -> list[_BookingState]:
    """The booking as of version `since` (a baseline, when it existed then), then after each change
    of its slot up to the snapshot's version, from the audit trail.

    Announcements carry places in the queue; the trail does not, so a place is counted here: the
    bookings waiting ahead now, plus those ahead that left the queue later (newcomers join behind).
    """
    now = snapshot.state
    ahead_now = snapshot.ahead
    assert ahead_now is not None
    slot_id = UUID(now.view.slot_id)
    stream_cursor.check_window(since, now.version, engine.resume_window_versions)
    trail = await replay.read_trail(slot_id, since, now.version)
    record = await replay.hold_record(slot_id, since) if with_record else None
    me = now.view.id

    def left_ahead(announcement: SlotAnnouncement) -> int:
        return sum(
            change.from_state is S.PENDING
            and change.booking_id != me
            and trail.queue_seqs[change.booking_id] < snapshot.queue_seq
            for change in announcement.changes
        )

    def at(state: BookingState, version: int, later_leavers: int, baseline: bool = False) -> _BookingState:
        view = dataclasses.replace(
            now.view,
            state=state,
            expires_at=snapshot.hold_expires_at if state in (S.RESERVED, S.EXPIRED) else None,
            queue_position=1 + ahead_now + later_leavers if state is S.PENDING else None,
        )
        return _BookingState(view, version, now.capacity, record, baseline)

    leavers = [left_ahead(announcement) for announcement in trail.announcements]
    later = sum(leavers)
    own = [c for a in trail.announcements for c in a.changes if c.booking_id == me]
    state = own[0].from_state if own else now.view.state
    steps = [at(state, since, later, baseline=True)] if state is not None else []
    for announcement, left in zip(trail.announcements, leavers, strict=True):
        later -= left
        for change in announcement.changes:
            if change.booking_id == me:
                state = change.to_state
        if record is not None:
            for seconds, released in trail.holds_ended.get(announcement.version, ()):
                record = record.plus(seconds, released)
        if state is not None:
            steps.append(at(state, announcement.version, later))
    return steps


async def _follow(
    engine: Engine,
    hub: EventHub,
    caller: Caller,
    booking_id: str,
    after: str | None,
    *,
    with_record: bool = False,
) -> AsyncIterator[_BookingState]:
    """The booking now (or as of the cursor `after`, then after each change since), then after
    every announcement of its slot, until it is final."""
    booking_id = str(parse_id("bookingId", booking_id))
    first = await queries.get_booking(engine, caller, booking_id)  # settles lapsed holds
    if first is None:
        raise BookingNotFound(booking_id)
    async with hub.listen(first.slot_id) as inbox:
        snapshot = await _booking_snapshot(engine, caller, booking_id, ahead=after is not None)
        current = snapshot.state
        if after is None:
            yield current
        else:
            try:
                since = stream_cursor.decode(after, UUID(current.view.slot_id))
                steps = await _booking_steps(engine, snapshot, since, with_record=with_record)
            except CursorExpired as expired:
                steps = [dataclasses.replace(current, cursor_expired=expired.message)]
            for step in steps:
                yield step
        while current.view.state not in FINAL_STATES:
            message = await inbox.get()
            if _in_order(message, current.version):
                assert isinstance(message, SlotAnnouncement)
                view = apply_to_booking(current.view, message)
                capacity = message.terms.capacity if message.terms is not None else current.capacity
                current = _BookingState(view, message.version, capacity)
                yield current
            elif _needs_resync(message, current.version):
                snapshot = await _booking_snapshot(engine, caller, booking_id, ahead=True)
                try:
                    steps = await _booking_steps(engine, snapshot, current.version, with_record=with_record)
                    steps = [step for step in steps if not step.baseline]
                except CursorExpired:  # too far behind to replay: jump to the state now
                    steps = [snapshot.state]
                current = snapshot.state
                for step in steps:
                    yield step


async def watch_booking(
    engine: Engine, hub: EventHub, caller: Caller, booking_id: str, after: str | None = None
) -> AsyncIterator[LiveMessage[BookingView]]:
    """The booking now (or each change after the cursor `after`), then after each change of its
    state, or of its hold's expiry (extended)."""
    last: tuple[BookingState, Any] | None = None
    async for current in _follow(engine, hub, caller, booking_id, after):
        seen = (current.view.state, current.view.expires_at)
        if current.baseline:
            last = seen
        elif seen != last:
            last = seen
            yield LiveMessage(current.view, current.cursor, current.cursor_expired)


async def watch_queue_position(
    engine: Engine, hub: EventHub, caller: Caller, booking_id: str, after: str | None = None
) -> AsyncIterator[LiveMessage[QueuePositionView]]:
    """Where the booking stands now (or each move after the cursor `after`), then on every move,
    then the hold it is offered."""
    last: QueuePositionView | None = None
    async for current in _follow(engine, hub, caller, booking_id, after, with_record=True):
        view = current.view
        if current.record is not None:
            # Replayed: the record as it was then. When the earliest hold would have ended, seen
            # from that moment, is not kept: the estimate is the record's alone.
            pace = _QueuePace(current.record.seconds_per_place(current.capacity), None)
        else:
            pace = await hub.shared(
                view.slot_id,
                "queue-pace",
                current.version,
                functools.partial(queue_pace, UUID(view.slot_id), current.capacity),
            )
        position = view.queue_position
        update = QueuePositionView(
            booking_id=view.id,
            state=view.state,
            position=position,
            ahead=position - 1 if position is not None else None,
            expires_at=view.expires_at if view.state is S.RESERVED else None,
            estimated_wait_seconds=policy.estimated_wait_seconds(
                position, pace.per_place, pace.next_release_in
            )
            if position is not None
            else None,
        )
        if current.baseline:
            last = update
        elif update != last:
            last = update
            yield LiveMessage(update, current.cursor, current.cursor_expired)
        if view.state is S.CONFIRMED:
            return


@dataclass(frozen=True, slots=True)
class _QueuePace:
    per_place: float | None  # policy.seconds_per_place
    next_release_in: float | None  # seconds until the earliest live hold ends, when no unit is free


async def queue_pace(slot_id: UUID, capacity: int) -> _QueuePace:
    """How fast the slot's queue moves, for waiters' estimates: its hold record and its holds now.

    A hold lasts from the transition that granted it to the one that ended it: its extensions
    (RESERVED to RESERVED) are part of it, so extended holds lengthen the estimate. And while every
    unit is taken, nobody moves before the earliest live hold ends (policy.estimated_wait_seconds).
    """
    record = await replay.hold_record(slot_id, replay.LATEST)
    row = await _one(
        "SELECT EXTRACT(EPOCH FROM min(expires_at) FILTER (WHERE state = "
        f"{RESERVED} AND expires_at > now()) - now()) AS next_release, coalesce(sum(units), 0) AS occupied"
        " FROM bookings WHERE slot_id = $1 AND unit IS NOT NULL",
        slot_id,
    )
    assert row is not None  # an aggregate: one row, even for a slot with no holds
    full = int(row["occupied"]) >= capacity
    release = row["next_release"]
    return _QueuePace(
        record.seconds_per_place(capacity), float(release) if full and release is not None else None
    )


async def slot_since(engine: Engine, slot_id: UUID, since: int) -> list[tuple[SlotView, int]]:
    """The slot after each change from version `since` on, with its version: what a slotStatus
    subscriber resuming there is replayed."""
    snapshot = await _slot_snapshot(slot_id)
    if snapshot is None:
        raise SlotNotFound(str(slot_id))
    return await _slot_steps(engine, slot_id, *snapshot, since=since)


async def booking_since(
    engine: Engine, caller: Caller, booking_id: str, since: int
) -> list[tuple[BookingView, int]]:
    """The booking as of version `since` (when it existed then), then after each change of its
    slot from there on, with the version: what bookingUpdates and queuePosition resume from."""
    snapshot = await _booking_snapshot(engine, caller, booking_id, ahead=True)
    steps = await _booking_steps(engine, snapshot, since, with_record=False)
    return [(step.view, step.version) for step in steps]
