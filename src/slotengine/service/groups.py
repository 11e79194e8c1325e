"""Booking groups: reserve several slots all or nothing, confirm, cancel and expire them together.

Every call is one group transaction (service/group_transaction.py): the group's slots locked in
ascending id, each settled, the domain deciding (domain/groups.py), every booking's transition
audited on its slot, one commit, then each slot announced. A group holds every one of its slots
with one expiresAt, or none of them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from tortoise.exceptions import IntegrityError

from slotengine.domain import groups as rules
from slotengine.domain import policy
from slotengine.domain.errors import (
    DomainError,
    GroupNotFound,
    HoldExpired,
    IdempotencyKeyReused,
    NotAuthorized,
    ValidationError,
)
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.metrics import RESERVATIONS
from slotengine.service.announcements import Change
from slotengine.service.bookings import BOOKING_COLUMNS, booking_view
from slotengine.service.engine import Engine
from slotengine.service.group_transaction import GroupTransaction, group_transaction
from slotengine.service.ids import parse_id
from slotengine.service.rate_limit import take_reserve_turn
from slotengine.service.retries import retry_conflicts
from slotengine.service.settlement import promote, promote_booking, settle, settled_already
from slotengine.service.state_sql import CLAIMING_SQL, LIVE_SQL, PENDING, RESERVED
from slotengine.service.timers import expire_group_schedule
from slotengine.service.unit_of_work import SYSTEM_ACTOR
from slotengine.service.views import Caller, GroupView
from slotengine.store.database import connection

_HELD = transition(None, Event.HOLD, Role.HOLDER)
_QUEUED = transition(None, Event.QUEUE, Role.HOLDER)
_PROMOTED = transition(BookingState.PENDING, Event.PROMOTE, Role.SYSTEM)
_LAPSED = transition(BookingState.PENDING, Event.LAPSE, Role.SYSTEM)
_GROUP_COLUMNS = "id, holder, idempotency_key, slot_ids, state, expires_at, created_at"


async def reserve_slots(
    engine: Engine, caller: Caller, slot_ids: Sequence[str], key: str, wait: bool = False
) -> GroupView:
    """Hold a unit of every slot for the caller, with one expiresAt, or none of them; the refusal
    names the slot that could not be held. The same caller and key replay the group."""
    try:
        policy.validate_idempotency_key(key)
        ordered = rules.validate_group_slots([parse_id("slotIds", raw) for raw in slot_ids])
    except ValidationError:
        await take_reserve_turn(engine, caller.holder)  # counts too, and RateLimited comes first
        raise
    await take_reserve_turn(engine, caller.holder)
    await _check_cap(caller.holder, ordered, engine.live_bookings_per_holder)
    try:
        group, replayed = await _reserve_once(engine, caller, ordered, key, wait)
    except DomainError as refusal:
        RESERVATIONS.labels(f"group:{type(refusal).__name__}").inc()
        raise
    RESERVATIONS.labels("group:replayed" if replayed else f"group:{group.state.lower()}").inc()
    return group


async def _check_cap(holder: str, slot_ids: list[UUID], cap: int) -> None:
    """TooManyBookings when the group's slots would take the holder past the live-bookings cap
    (one query outside the locks, like reserveSlot's: concurrent calls may overshoot it)."""
    if cap <= 0:
        return
    rows = await connection().execute_query_dict(
        "SELECT count(*) AS n FROM bookings WHERE holder = $1 AND slot_id <> ALL($2::uuid[])"
        f" AND state IN {CLAIMING_SQL} AND (state <> {RESERVED} OR expires_at > now())",
        [holder, slot_ids],
    )
    rules.check_group_cap(int(rows[0]["n"]), len(slot_ids), cap)


async def _reserve_once(
    engine: Engine, caller: Caller, slot_ids: list[UUID], key: str, wait: bool
) -> tuple[GroupView, bool]:
    for _ in range(3):
        try:
            return await _reserve_group(engine, caller, slot_ids, key, wait)
        except (IntegrityError, asyncpg.UniqueViolationError) as exc:
            # A concurrent call with the same key on other slots committed first: the lookup
            # under the locks now finds it. Any other integrity error is a bug and must surface.
            if "booking_groups_holder_idempotency_key_key" not in str(exc):
                raise
    raise RuntimeError("booking group neither written nor found")  # pragma: no cover


@retry_conflicts
async def _reserve_group(
    engine: Engine, caller: Caller, slot_ids: list[UUID], key: str, wait: bool
) -> tuple[GroupView, bool]:
    async with group_transaction(engine, slot_ids) as group:
        known = await group.fetch(
            f"SELECT {_GROUP_COLUMNS} FROM booking_groups WHERE holder = $1 AND idempotency_key = $2",
            caller.holder,
            key,
        )
        if known:
            if list(known[0]["slot_ids"]) != slot_ids:
                raise IdempotencyKeyReused(key)
            replay = known[0]
        else:
            replay = None
            await _settle_all(group)
            live = {
                row["slot_id"]
                for row in await group.fetch(
                    f"SELECT slot_id FROM bookings WHERE slot_id = ANY($1::uuid[]) AND holder = $2"
                    f" AND state IN {LIVE_SQL}",
                    slot_ids,
                    caller.holder,
                )
            }
            standings = _standings(group, live)
            if rules.admit_group(standings, group.now, wait) is policy.Admission.HOLD:
                expires_at = rules.group_expiry(group.now, standings)
                group_id = await _hold_all(group, caller.holder, key, expires_at)
            else:
                group_id = await _queue_all(group, caller.holder, key)
    if replay is not None:
        view = await load_group(replay["id"])
        assert view is not None
        return view, True
    view = await load_group(group_id)
    assert view is not None
    return view, False


async def _hold_all(group: GroupTransaction, holder: str, key: str, expires_at: datetime) -> UUID:
    """Write the group, one held booking per slot with its fence and audit row, and each slot's
    version, in one statement; then tell each slot's transaction what changed."""
    group_id = uuid.uuid4()
    slot_ids = [tx.slot_id for tx in group.slots]
    booking_ids = [uuid.uuid4() for _ in group.slots]
    units = [policy.free_units(tx.capacity, tx.taken)[0] for tx in group.slots]
    rows = await group.fetch(
        "WITH grp AS ("
        "  INSERT INTO booking_groups (id, holder, idempotency_key, slot_ids, state, expires_at)"
        "  VALUES ($1, $2, $3, $4::uuid[], $5, $6) RETURNING id),"
        " slot AS ("
        "  UPDATE slots s SET fence = s.fence + 1, version = s.version + 1, waiting = w.waiting"
        "  FROM unnest($4::uuid[], $10::int[]) AS w (id, waiting)"
        "  WHERE s.id = w.id RETURNING s.id, s.fence, s.version),"
        " booking AS ("
        "  INSERT INTO bookings"
        "   (id, slot_id, holder, state, unit, fence, expires_at, idempotency_key, group_id)"
        "  SELECT t.id, t.slot_id, $2, $5, t.unit, slot.fence, $6, $3, (SELECT id FROM grp)"
        "  FROM unnest($7::uuid[], $4::uuid[], $8::int[]) AS t (id, slot_id, unit)"
        "  JOIN slot ON slot.id = t.slot_id"
        f"  RETURNING {BOOKING_COLUMNS}),"
        " audit AS ("
        "  INSERT INTO transitions"
        "   (booking_id, from_state, to_state, event, actor, fence, slot_id, slot_version)"
        "  SELECT b.id, NULL, b.state, $9, b.holder, b.fence, b.slot_id, slot.version"
        "  FROM booking b JOIN slot ON slot.id = b.slot_id ORDER BY b.slot_id)"
        " SELECT booking.id, booking.slot_id, slot.version"
        " FROM booking JOIN slot ON slot.id = booking.slot_id",
        group_id,
        holder,
        key,
        slot_ids,
        _HELD.value,
        expires_at,
        booking_ids,
        units,
        Event.HOLD.value,
        [tx.waiting for tx in group.slots],  # settlement may have moved the queue
    )
    versions = {row["slot_id"]: (row["id"], int(row["version"])) for row in rows}
    for tx, unit in zip(group.slots, units, strict=True):
        booking_id, version = versions[tx.slot_id]
        tx.version = version
        tx.version_written = True
        tx.taken.append(unit)
        tx.changes.append(Change(str(booking_id), None, _HELD, Event.HOLD, None, expires_at))
    group.schedules.append(expire_group_schedule(group_id, expires_at))
    return group_id


async def _queue_all(group: GroupTransaction, holder: str, key: str) -> UUID:
    """Join every slot's queue as one waiting group: one PENDING booking per slot, each audited,
    each slot's version and queue length written, in one statement."""
    group_id = uuid.uuid4()
    slot_ids = [tx.slot_id for tx in group.slots]
    rows = await group.fetch(
        "WITH grp AS ("
        "  INSERT INTO booking_groups (id, holder, idempotency_key, slot_ids, state)"
        "  VALUES ($1, $2, $3, $4::uuid[], $5) RETURNING id),"
        " slot AS ("
        "  UPDATE slots s SET version = s.version + 1, waiting = w.waiting"
        "  FROM unnest($4::uuid[], $6::int[]) AS w (id, waiting)"
        "  WHERE s.id = w.id RETURNING s.id, s.version),"
        " booking AS ("
        "  INSERT INTO bookings (id, slot_id, holder, state, idempotency_key, group_id)"
        "  SELECT t.id, t.slot_id, $2, $5, $3, (SELECT id FROM grp)"
        "  FROM unnest($7::uuid[], $4::uuid[]) AS t (id, slot_id)"
        "  RETURNING id, slot_id, state, holder, queue_seq),"
        " audit AS ("
        "  INSERT INTO transitions (booking_id, from_state, to_state, event, actor, slot_id, slot_version)"
        "  SELECT b.id, NULL, b.state, $8, b.holder, b.slot_id, slot.version"
        "  FROM booking b JOIN slot ON slot.id = b.slot_id ORDER BY b.slot_id)"
        " SELECT booking.id, booking.slot_id, booking.queue_seq, slot.version"
        " FROM booking JOIN slot ON slot.id = booking.slot_id",
        group_id,
        holder,
        key,
        slot_ids,
        _QUEUED.value,
        [tx.waiting + 1 for tx in group.slots],
        [uuid.uuid4() for _ in group.slots],
        Event.QUEUE.value,
    )
    by_slot = {row["slot_id"]: row for row in rows}
    for tx in group.slots:
        row = by_slot[tx.slot_id]
        booking_id = str(row["id"])
        tx.version = int(row["version"])
        tx.version_written = True
        tx.waiting += 1
        tx.queue_joined = True  # its lapse at the slot's start is timed like any waiter's
        tx.queue_seqs[booking_id] = int(row["queue_seq"])
        tx.places[booking_id] = tx.waiting
        tx.changes.append(Change(booking_id, None, _QUEUED, Event.QUEUE, tx.waiting))
    return group_id


@retry_conflicts
async def offer_group(engine: Engine, group_id: UUID) -> bool:
    """Offer a waiting group a hold on every one of its slots, with one expiresAt, if it heads every
    queue and every slot has a unit free; else leave it waiting (False). A group one of whose
    entries lapsed (its slot started) can never be whole: its other entries lapse too."""
    rows = await connection().execute_query_dict(
        f"SELECT {_GROUP_COLUMNS} FROM booking_groups WHERE id = $1", [group_id]
    )
    if not rows or rows[0]["state"] != BookingState.PENDING:
        return False
    async with group_transaction(engine, list(rows[0]["slot_ids"])) as group:
        offered = await _offer(group, group_id)
        for tx in group.slots:
            tx.groups_to_offer.discard(group_id)  # looked at just now, under every lock
    return offered


async def _offer(group: GroupTransaction, group_id: UUID) -> bool:
    await _settle_all(group)  # singles ahead of the group take freed units first
    stored, _, members = await _locked_group(group, group_id)
    if stored is not BookingState.PENDING:
        return False
    if any(member["state"] != BookingState.PENDING for member in members):
        await _lapse_rest(group, group_id, members)
        return False
    heads = {
        row["slot_id"]: row["id"]
        for row in await group.fetch(
            "SELECT DISTINCT ON (slot_id) slot_id, id FROM bookings"
            f" WHERE slot_id = ANY($1::uuid[]) AND state = {PENDING} ORDER BY slot_id, queue_seq",
            [tx.slot_id for tx in group.slots],
        )
    }
    at_head = [heads.get(member["slot_id"]) == member["id"] for member in members]
    free = [len(policy.free_units(tx.capacity, tx.taken)) for tx in group.slots]
    if not rules.group_can_be_offered(at_head, free):
        return False
    expires_at = rules.group_expiry(group.now, _standings(group, set()))
    for member in members:
        tx = group.by_id[member["slot_id"]]
        unit = policy.free_units(tx.capacity, tx.taken)[0]
        tx.queue_seqs[str(member["id"])] = int(member["queue_seq"])
        await promote_booking(tx, member["id"], unit, expires_at)  # the group's one timer expires it
    await group.fetch(
        "UPDATE booking_groups SET state = $2, expires_at = $3, updated_at = now() WHERE id = $1"
        " RETURNING id",
        group_id,
        _PROMOTED,
        expires_at,
    )
    group.schedules.append(expire_group_schedule(group_id, expires_at))
    for tx in group.slots:
        await promote(tx)  # units left over go on down each queue
    return True


async def _lapse_rest(group: GroupTransaction, group_id: UUID, members: list[dict[str, Any]]) -> None:
    """One entry of the waiting group lapsed: lapse the others, and let each queue move on."""
    for member in members:
        if member["state"] != BookingState.PENDING:
            continue
        tx = group.by_id[member["slot_id"]]
        await tx.fetch_one(
            "UPDATE bookings SET state = $2, updated_at = now() WHERE id = $1 RETURNING id",
            member["id"],
            _LAPSED,
        )
        tx.queue_seqs[str(member["id"])] = int(member["queue_seq"])
        tx.waiting -= 1
        await tx.record(
            member["id"],
            BookingState.PENDING,
            _LAPSED,
            Event.LAPSE,
            SYSTEM_ACTOR,
            reason="another slot of the group started",
        )
    await _mark(group, group_id, _LAPSED)
    for tx in group.slots:
        await promote(tx)


def _standings(group: GroupTransaction, live: set[UUID]) -> list[rules.SlotStanding]:
    return [
        rules.SlotStanding(
            slot_id=tx.slot_key,
            closed=tx.closed,
            starts_at=tx.starts_at,
            ends_at=tx.ends_at,
            capacity=tx.capacity,
            hold_seconds=tx.hold_seconds,
            occupied=len(tx.taken),
            waiting=tx.waiting,
            holder_has_live_booking=tx.slot_id in live,
        )
        for tx in group.slots
    ]


@retry_conflicts
async def confirm_group(engine: Engine, caller: Caller, group_id: str) -> GroupView:
    """Confirm every hold of the caller's group, or none: a group past its expiresAt is HoldExpired."""
    found = await _accessible_group(caller, group_id)
    if found["holder"] != caller.holder:
        raise NotAuthorized("only the group's holder confirms it")
    async with group_transaction(engine, list(found["slot_ids"])) as group:
        await _settle_all(group)  # holds past expiresAt are EXPIRED now, and stay so after we answer
        stored, expires_at, members = await _locked_group(group, found["id"])
        # A hold that lapsed is HoldExpired (the holder needs to know why), whether a worker
        # already expired the group or this settlement just did.
        lapsed = stored is BookingState.RESERVED and (
            any(m["state"] == BookingState.EXPIRED for m in members)
            or rules.group_state(stored, expires_at, group.now) is BookingState.EXPIRED
        )
        if lapsed:
            await _mark(group, found["id"], BookingState.EXPIRED)
        if lapsed or (stored is BookingState.EXPIRED and expires_at is not None):
            raise HoldExpired(str(members[0]["id"]), expires_at)
        to_state = transition(stored, Event.CONFIRM, Role.HOLDER)
        for member in members:
            tx = group.by_id[member["slot_id"]]
            state = BookingState(member["state"])
            transition(state, Event.CONFIRM, Role.HOLDER)
            updated = await tx.fetch_one(
                "UPDATE bookings SET state = $2, updated_at = now()"
                f" WHERE id = $1 AND state = {RESERVED} AND fence = $3 AND expires_at > now() RETURNING id",
                member["id"],
                to_state,
                member["fence"],
            )
            assert updated is not None  # the locks keep the rows as read; the clock was checked
            await tx.record(
                member["id"], state, to_state, Event.CONFIRM, caller.holder, fence=member["fence"]
            )
        await _mark(group, found["id"], to_state)
    view = await load_group(found["id"])
    assert view is not None
    return view


@retry_conflicts
async def cancel_group(engine: Engine, caller: Caller, group_id: str, reason: str | None) -> GroupView:
    """Cancel every live booking of the group (its holder or an admin); freed units go to the heads
    of the queues."""
    policy.validate_reason(reason)
    found = await _accessible_group(caller, group_id)
    role = Role.HOLDER if found["holder"] == caller.holder else Role.ADMIN
    async with group_transaction(engine, list(found["slot_ids"])) as group:
        await _settle_all(group)
        stored, expires_at, members = await _locked_group(group, found["id"])
        stored = rules.group_state(stored, expires_at, group.now)
        to_state = transition(stored, Event.CANCEL, role)
        for member in members:
            state = BookingState(member["state"])
            if state not in (BookingState.PENDING, BookingState.RESERVED, BookingState.CONFIRMED):
                continue  # a member cancelled alone, or completed: it stays as it is
            tx = group.by_id[member["slot_id"]]
            transition(state, Event.CANCEL, role)
            await tx.fetch_one(
                "UPDATE bookings SET state = $2, unit = NULL, updated_at = now() WHERE id = $1 RETURNING id",
                member["id"],
                to_state,
            )
            tx.unit_released(member["unit"])
            if state is BookingState.PENDING:
                tx.queue_seqs[str(member["id"])] = int(member["queue_seq"])
                tx.waiting -= 1
            await tx.record(
                member["id"],
                state,
                to_state,
                Event.CANCEL,
                caller.holder,
                reason=reason,
                fence=member["fence"],
            )
        await _mark(group, found["id"], to_state)
        for tx in group.slots:
            await promote(tx)
    view = await load_group(found["id"])
    assert view is not None
    return view


@retry_conflicts
async def expire_group(engine: Engine, group_id: UUID) -> bool:
    """Expire the group's holds together once PostgreSQL's clock passed its expiresAt, and offer
    each freed unit to its slot's queue; False when nothing was due (confirmed, cancelled, expired
    already, or early: then the timer is set again)."""
    rows = await connection().execute_query_dict(
        f"SELECT {_GROUP_COLUMNS} FROM booking_groups WHERE id = $1", [group_id]
    )
    if not rows or rows[0]["state"] != BookingState.RESERVED:
        return False
    found = rows[0]
    async with group_transaction(engine, list(found["slot_ids"])) as group:
        stored, expires_at, _ = await _locked_group(group, group_id)
        if stored is not BookingState.RESERVED or expires_at is None:
            return False  # confirmed or cancelled meanwhile
        if rules.group_state(stored, expires_at, group.now) is not BookingState.EXPIRED:
            # Early by PostgreSQL's clock (Redis' clock timed the task): set the timer again.
            group.schedules.append(expire_group_schedule(group_id, expires_at))
            return False
        await _settle_all(group)  # every hold of the group lapsed by the same clock: all expire here
        await _mark(group, group_id, BookingState.EXPIRED)
    return True


async def _settle_all(group: GroupTransaction) -> None:
    """Settle each slot that has something due, in lock order; one statement finds which (the
    common case, nothing due anywhere, costs that statement only)."""
    rows = await group.fetch(
        "SELECT s.id,"
        " ARRAY(SELECT unit FROM booking_units WHERE slot_id = s.id) AS taken,"
        f" EXISTS (SELECT 1 FROM bookings WHERE slot_id = s.id AND state = {RESERVED}"
        "  AND expires_at <= now()) AS hold_due"
        " FROM unnest($1::uuid[]) AS s (id)",
        [tx.slot_id for tx in group.slots],
    )
    snapshot = {row["id"]: row for row in rows}
    for tx in group.slots:
        row = snapshot[tx.slot_id]
        if not settled_already(tx, list(row["taken"]), bool(row["hold_due"])):
            await settle(tx)


async def _locked_group(
    group: GroupTransaction, group_id: UUID
) -> tuple[BookingState, datetime | None, list[dict[str, Any]]]:
    """The group's stored state and expiry, and its bookings in lock order, read under the locks."""
    rows = await group.fetch(
        "SELECT g.state AS group_state, g.expires_at AS group_expires_at,"
        " b.id, b.slot_id, b.state, b.unit, b.fence, b.queue_seq, b.expires_at"
        " FROM booking_groups g JOIN bookings b ON b.group_id = g.id WHERE g.id = $1 ORDER BY b.slot_id",
        group_id,
    )
    return BookingState(rows[0]["group_state"]), rows[0]["group_expires_at"], rows


async def _mark(group: GroupTransaction, group_id: UUID, state: BookingState) -> None:
    await group.fetch(
        "UPDATE booking_groups SET state = $2, updated_at = now() WHERE id = $1 RETURNING id", group_id, state
    )


async def _accessible_group(caller: Caller, group_id: str) -> dict[str, Any]:
    """The group's row if the caller may act on it; someone else's reads as not found."""
    rows = await connection().execute_query_dict(
        f"SELECT {_GROUP_COLUMNS} FROM booking_groups WHERE id = $1", [parse_id("groupId", group_id)]
    )
    if not rows or (rows[0]["holder"] != caller.holder and not caller.admin):
        raise GroupNotFound(group_id)
    return rows[0]


async def load_group(group_id: UUID) -> GroupView | None:
    """The group with its bookings (in slot order) as committed, its state as the clock says."""
    rows = await connection().execute_query_dict(
        f"SELECT g.id AS group_id, g.holder AS group_holder, g.state AS group_state,"
        " g.expires_at AS group_expires_at, g.created_at AS group_created_at, now() AS db_now,"
        f" CASE WHEN b.state = {PENDING} THEN (SELECT count(*) FROM bookings p"
        f"   WHERE p.slot_id = b.slot_id AND p.state = {PENDING} AND p.queue_seq <= b.queue_seq)"
        " END AS position,"
        f" {', '.join('b.' + c.strip() for c in BOOKING_COLUMNS.split(','))}"
        " FROM booking_groups g JOIN bookings b ON b.group_id = g.id WHERE g.id = $1 ORDER BY b.slot_id",
        [group_id],
    )
    if not rows:
        return None
    first = rows[0]
    state = rules.group_state(BookingState(first["group_state"]), first["group_expires_at"], first["db_now"])
    bookings = []
    for row in rows:
        view = booking_view(row, row["position"])
        if view.state is BookingState.RESERVED and state is BookingState.EXPIRED:
            view = dataclasses.replace(view, state=BookingState.EXPIRED)
        bookings.append(view)
    return GroupView(
        id=str(first["group_id"]),
        holder=first["group_holder"],
        state=state,
        expires_at=first["group_expires_at"]
        if state in (BookingState.RESERVED, BookingState.EXPIRED)
        else None,
        bookings=bookings,
        created_at=first["group_created_at"],
    )


async def get_group(engine: Engine, caller: Caller, group_id: str) -> GroupView | None:
    """The caller's group (any, for an admin), or None; a group whose hold lapsed is expired first."""
    found = await _accessible_group_or_none(caller, group_id)
    if found is None:
        return None
    if found["state"] == BookingState.RESERVED and found["expires_at"] <= found["db_now"]:
        await expire_group(engine, found["id"])
    return await load_group(found["id"])


async def _accessible_group_or_none(caller: Caller, group_id: str) -> dict[str, Any] | None:
    rows = await connection().execute_query_dict(
        f"SELECT {_GROUP_COLUMNS}, now() AS db_now FROM booking_groups WHERE id = $1",
        [parse_id("id", group_id)],
    )
    if not rows or (rows[0]["holder"] != caller.holder and not caller.admin):
        return None
    return rows[0]
