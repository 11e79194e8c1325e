"""Reserve, confirm, cancel, complete, expire: each one slot transaction, decided by the domain."""

from __future__ import annotations

import logging
import uuid
from typing import Any
from uuid import UUID

from tortoise.exceptions import IntegrityError

from slotengine.domain import policy
from slotengine.domain.errors import (
    BookingNotFound,
    DomainError,
    HoldExpired,
    IdempotencyKeyReused,
    InvalidTransition,
    NotAuthorized,
    NotHolder,
    SlotClosed,
)
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.metrics import RESERVATIONS
from slotengine.redis import scripts
from slotengine.redis.clock import epoch_ms
from slotengine.service.bookings import booking_view, check_live_booking_cap, load_booking_row
from slotengine.service.engine import Engine
from slotengine.service.ids import parse_id
from slotengine.service.rate_limit import take_reserve_turn
from slotengine.service.slot_transaction import (
    Change,
    SlotTransaction,
    retry_conflicts,
    slot_transaction,
)
from slotengine.service.views import BookingView, Caller
from slotengine.store.database import connection

log = logging.getLogger(__name__)

_BOOKING_COLUMNS = "id, slot_id, holder, state, unit, fence, queue_seq, expires_at, created_at"


async def reserve_slot(engine: Engine, caller: Caller, slot_id: str, key: str) -> BookingView:
    """Hold a unit of the slot, or queue for one; the same caller and key replay the answer."""
    try:
        booking, replayed = await _reserve_once(engine, caller, slot_id, key)
    except DomainError as refusal:
        RESERVATIONS.labels(type(refusal).__name__).inc()
        raise
    if replayed:
        RESERVATIONS.labels("replayed").inc()
    else:
        RESERVATIONS.labels("held" if booking.state is BookingState.RESERVED else "queued").inc()
    return booking


async def _reserve_once(engine: Engine, caller: Caller, slot_id: str, key: str) -> tuple[BookingView, bool]:
    await take_reserve_turn(engine, caller.holder)
    policy.validate_idempotency_key(key)
    slot_uuid = parse_id("slotId", slot_id)
    for _ in range(3):
        replay = await _replay(engine, caller, slot_uuid, key)
        if replay is not None:
            return replay, True
        await check_live_booking_cap(caller.holder, slot_uuid, engine.live_bookings_per_holder)
        try:
            return await _reserve(engine, caller, slot_uuid, key), False
        except IntegrityError as exc:
            # A concurrent request with the same key on another slot committed first: replay
            # now finds it. Any other integrity error is a bug and must surface.
            if "idempotency_keys_pkey" not in str(exc):
                raise
    raise RuntimeError("idempotency record neither written nor found")  # pragma: no cover


async def _replay(engine: Engine, caller: Caller, slot_id: UUID, key: str) -> BookingView | None:
    rows = await connection().execute_query_dict(
        "SELECT slot_id, booking_id FROM idempotency_keys WHERE holder = $1 AND key = $2",
        [caller.holder, key],
    )
    if not rows:
        return None
    if rows[0]["slot_id"] != slot_id:
        raise IdempotencyKeyReused(key)
    from slotengine.service.queries import get_booking

    booking = await get_booking(engine, caller, str(rows[0]["booking_id"]))
    assert booking is not None
    return booking


@retry_conflicts
async def _reserve(engine: Engine, caller: Caller, slot_id: UUID, key: str) -> BookingView:
    async with slot_transaction(engine, slot_id) as tx:
        await tx.settle()
        # A duplicate of this request that held the lock before us has committed by now.
        known = await tx.fetch(
            f"SELECT 'key' AS found, i.slot_id AS key_slot, {_prefixed('b')}"
            " FROM idempotency_keys i JOIN bookings b ON b.id = i.booking_id"
            " WHERE i.holder = $1 AND i.key = $2"
            f" UNION ALL SELECT 'live', NULL, {_prefixed('b')} FROM bookings b"
            " WHERE b.slot_id = $3 AND b.holder = $1 AND b.state IN ('PENDING', 'RESERVED', 'CONFIRMED')",
            caller.holder,
            key,
            slot_id,
        )
        by_key = next((r for r in known if r["found"] == "key"), None)
        live = next((r for r in known if r["found"] == "live"), None)
        outcome: DomainError | dict[str, Any]
        position: int | None = None
        if by_key is not None and by_key["key_slot"] != slot_id:
            outcome = IdempotencyKeyReused(key)
        elif by_key is not None or live is not None:
            # One live booking per holder and slot: a second request, new key or not, gets it back.
            outcome = by_key or live  # type: ignore[assignment]
            assert isinstance(outcome, dict)
            if by_key is None:
                await tx.conn.execute_query(
                    "INSERT INTO idempotency_keys (holder, key, slot_id, booking_id) VALUES ($1, $2, $3, $4)",
                    [caller.holder, key, slot_id, outcome["id"]],
                )
            if outcome["state"] == BookingState.PENDING:
                position = await tx.queue_position(outcome["queue_seq"])
        else:
            admitted = await _admit(tx, caller, key)
            outcome = admitted if isinstance(admitted, DomainError) else admitted[0]
            position = None if isinstance(admitted, DomainError) else admitted[1]
    if isinstance(outcome, DomainError):
        raise outcome
    return booking_view(outcome, position)


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in _BOOKING_COLUMNS.split(","))


async def _booking_in(tx: SlotTransaction, booking_id: UUID) -> dict[str, Any]:
    row = await tx.fetch_one(f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE id = $1", booking_id)
    assert row is not None
    return row


async def _admit(
    tx: SlotTransaction, caller: Caller, key: str
) -> DomainError | tuple[dict[str, Any], int | None]:
    """Insert the new booking, its first audit row and its idempotency record in one statement."""
    refusal = policy.accepts_reservations(tx.closed, tx.starts_at, tx.now)
    if refusal is not None:
        return SlotClosed(tx.slot_key, refusal)
    admission = policy.admit(tx.capacity, len(tx.taken), tx.waiting)
    holds = admission is policy.Admission.HOLD
    event = Event.HOLD if holds else Event.QUEUE
    state = transition(None, event, Role.HOLDER)
    unit = policy.free_units(tx.capacity, tx.taken)[0] if holds else None
    expires_at = policy.hold_expiry(tx.now, tx.hold_seconds, tx.ends_at) if holds else None
    booking_id = uuid.uuid4()
    row = await tx.fetch_one(
        # Only a hold takes a fence: the UPDATE matches no row when $8 is false.
        "WITH fence AS (UPDATE slots SET fence = fence + 1 WHERE id = $2 AND $8::boolean RETURNING fence),"
        " booking AS ("
        "  INSERT INTO bookings (id, slot_id, holder, state, unit, fence, expires_at, idempotency_key)"
        "  VALUES ($1, $2, $3, $4, $5, (SELECT fence FROM fence), $6, $7)"
        f"  RETURNING {_BOOKING_COLUMNS}),"
        " audit AS ("
        "  INSERT INTO transitions (booking_id, from_state, to_state, event, actor, fence)"
        "  SELECT id, NULL, state, $9, holder, fence FROM booking),"
        " idempotency AS ("
        "  INSERT INTO idempotency_keys (holder, key, slot_id, booking_id)"
        "  SELECT holder, $7, slot_id, id FROM booking)"
        " SELECT * FROM booking",
        booking_id,
        tx.slot_id,
        caller.holder,
        state,
        unit,
        expires_at,
        key,
        holds,
        event.value,
    )
    assert row is not None
    position: int | None = None
    if holds:
        assert unit is not None and expires_at is not None
        tx.taken.append(unit)
        tx.holds_granted.append((booking_id, int(row["fence"]), expires_at))
    else:
        tx.waiting += 1
        position = tx.waiting  # the lock is ours: everyone else waiting arrived earlier
        tx.queue_joined = True
    tx.changes.append(Change(str(booking_id), None, state, event.value, position, expires_at))
    if not tx.mirror_stale:
        await _mirror_admission(tx, row, position)
    return row, position


async def _mirror_admission(tx: SlotTransaction, row: dict[str, Any], position: int | None) -> None:
    """Admit the booking in Redis too; any disagreement with PostgreSQL rebuilds the mirror."""
    answer = await scripts.reserve(
        tx.engine.redis,
        tx.engine.keys(tx.slot_key).all(),
        [
            epoch_ms(tx.now),
            str(row["id"]),
            epoch_ms(row["expires_at"]) if row["expires_at"] else 0,
            row["queue_seq"],
        ],
    )
    expected = ["HELD", 0] if position is None else ["QUEUED", position]
    if answer[0] == "MISSING":
        log.info("slot %s had no Redis mirror: rebuilding it", tx.slot_key)
    elif list(answer) != expected:
        log.warning(
            "Redis mirror of slot %s disagreed (%s, PostgreSQL says %s): rebuilding it",
            tx.slot_key,
            answer,
            expected,
        )
    else:
        return
    tx.mirror_stale = True


@retry_conflicts
async def confirm_booking(engine: Engine, caller: Caller, booking_id: str) -> BookingView:
    """Turn the caller's live hold into a confirmed booking; PostgreSQL's clock decides."""
    row = await _accessible_booking(caller, booking_id)
    if row["holder"] != caller.holder:
        raise NotHolder(booking_id)
    async with slot_transaction(engine, row["slot_id"]) as tx:
        await tx.settle()  # a hold past expiresAt is EXPIRED now, and stays so after we answer
        outcome = await _confirm(tx, caller, row["id"])
    if isinstance(outcome, DomainError):
        raise outcome
    return booking_view(outcome, None)


async def _confirm(tx: SlotTransaction, caller: Caller, booking_id: UUID) -> DomainError | dict[str, Any]:
    row = await _booking_in(tx, booking_id)
    state = BookingState(row["state"])
    if state is BookingState.EXPIRED and row["expires_at"] is not None:
        return HoldExpired(str(booking_id), row["expires_at"])
    try:
        to_state = transition(state, Event.CONFIRM, Role.HOLDER)
    except DomainError as refusal:
        return refusal
    updated = await tx.fetch_one(
        f"UPDATE bookings SET state = $2, updated_at = now()"
        f" WHERE id = $1 AND state = 'RESERVED' AND fence = $3 AND expires_at > now()"
        f" RETURNING {_BOOKING_COLUMNS}",
        booking_id,
        to_state,
        row["fence"],
    )
    if updated is None:
        return HoldExpired(str(booking_id), row["expires_at"])
    await tx.record(booking_id, state, to_state, Event.CONFIRM, caller.holder, fence=row["fence"])
    return updated


@retry_conflicts
async def cancel_booking(engine: Engine, caller: Caller, booking_id: str, reason: str | None) -> BookingView:
    """Cancel a waiting, held or confirmed booking; a freed unit goes to the head of the queue."""
    policy.validate_reason(reason)
    row = await _accessible_booking(caller, booking_id)
    role = Role.HOLDER if row["holder"] == caller.holder else Role.ADMIN
    async with slot_transaction(engine, row["slot_id"]) as tx:
        await tx.settle()
        outcome = await _apply(tx, row["id"], Event.CANCEL, role, caller.holder, reason)
        if not isinstance(outcome, DomainError):
            await tx.promote()
            outcome = await _booking_in(tx, row["id"])
    if isinstance(outcome, DomainError):
        raise outcome
    return booking_view(outcome, None)


@retry_conflicts
async def complete_booking(engine: Engine, caller: Caller, booking_id: str) -> BookingView:
    """Mark a confirmed booking as served (admins only)."""
    if not caller.admin:
        raise NotAuthorized("only an admin can complete a booking")
    row = await _accessible_booking(caller, booking_id)
    async with slot_transaction(engine, row["slot_id"]) as tx:
        await tx.settle()
        outcome = await _apply(tx, row["id"], Event.COMPLETE, Role.ADMIN, caller.holder, None)
    if isinstance(outcome, DomainError):
        raise outcome
    return booking_view(outcome, None)


async def _apply(
    tx: SlotTransaction,
    booking_id: UUID,
    event: Event,
    role: Role,
    actor: str,
    reason: str | None,
) -> DomainError | dict[str, Any]:
    row = await _booking_in(tx, booking_id)
    state = BookingState(row["state"])
    try:
        to_state = transition(state, event, role)
    except (InvalidTransition, NotAuthorized) as refusal:
        return refusal
    keeps_unit = to_state in (BookingState.CONFIRMED, BookingState.COMPLETED)
    updated = await tx.fetch_one(
        "UPDATE bookings SET state = $2, unit = CASE WHEN $3 THEN unit END, updated_at = now()"
        f" WHERE id = $1 AND state = $4 RETURNING {_BOOKING_COLUMNS}",
        booking_id,
        to_state,
        keeps_unit,
        state,
    )
    assert updated is not None  # the slot lock keeps the row as we read it
    if not keeps_unit:
        tx.unit_released(row["unit"])
    position = None
    if state is BookingState.PENDING:
        position = await tx.queue_position(row["queue_seq"]) + 1  # counted after it left
        tx.waiting -= 1
    await tx.record(
        booking_id, state, to_state, event, actor, reason=reason, fence=row["fence"], position=position
    )
    return updated


async def _accessible_booking(caller: Caller, booking_id: str) -> dict[str, Any]:
    """The booking row if the caller may act on it; someone else's reads as not found."""
    row = await load_booking_row(parse_id("bookingId", booking_id))
    if row is None or (row["holder"] != caller.holder and not caller.admin):
        raise BookingNotFound(booking_id)
    return row


@retry_conflicts
async def settle_slot(engine: Engine, slot_id: UUID) -> None:
    """Expire what has lapsed, promote the queue and rebuild the slot's Redis mirror."""
    async with slot_transaction(engine, slot_id) as tx:
        await tx.settle()
        tx.mirror_stale = True
