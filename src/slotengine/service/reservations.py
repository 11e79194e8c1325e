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
    ValidationError,
)
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.redis import scripts
from slotengine.service.bookings import booking_view, load_booking_row, parse_booking_id
from slotengine.service.engine import Engine
from slotengine.service.slot_transaction import SlotTransaction, epoch_ms, slot_transaction
from slotengine.service.views import BookingView, Caller
from slotengine.store.database import connection

log = logging.getLogger(__name__)

_BOOKING_COLUMNS = "id, slot_id, holder, state, unit, fence, queue_seq, expires_at, created_at"


def parse_slot_id(raw: str) -> UUID:
    """A slot id from the API, or ValidationError when it cannot be one."""
    try:
        return UUID(raw)
    except ValueError:
        raise ValidationError("slotId", f"{raw!r} is not a slot id") from None


async def reserve_slot(engine: Engine, caller: Caller, slot_id: str, key: str) -> BookingView:
    """Hold a unit of the slot, or queue for one; the same caller and key replay the answer."""
    policy.validate_idempotency_key(key)
    slot_uuid = parse_slot_id(slot_id)
    for _ in range(3):
        replay = await _replay(engine, caller, slot_uuid, key)
        if replay is not None:
            return replay
        try:
            return await _reserve(engine, caller, slot_uuid, key)
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


async def _reserve(engine: Engine, caller: Caller, slot_id: UUID, key: str) -> BookingView:
    async with slot_transaction(engine, slot_id) as tx:
        # A duplicate of this request that held the lock before us has committed by now.
        taken = await tx.fetch_one(
            "SELECT slot_id, booking_id FROM idempotency_keys WHERE holder = $1 AND key = $2",
            caller.holder,
            key,
        )
        await tx.settle()
        outcome: DomainError | dict[str, Any]
        if taken is not None and taken["slot_id"] != slot_id:
            outcome = IdempotencyKeyReused(key)
        elif taken is not None:
            outcome = await _booking_in(tx, taken["booking_id"])
        else:
            outcome = await _admit(tx, caller, key)
        if isinstance(outcome, dict):
            await tx.conn.execute_query(
                "INSERT INTO idempotency_keys (holder, key, slot_id, booking_id) VALUES ($1, $2, $3, $4)",
                [caller.holder, key, slot_id, outcome["id"]],
            )
            position = None
            if outcome["state"] == BookingState.PENDING:
                position = await tx.queue_position(outcome["queue_seq"])
    if isinstance(outcome, DomainError):
        raise outcome
    return booking_view(outcome, position)


async def _booking_in(tx: SlotTransaction, booking_id: UUID) -> dict[str, Any]:
    row = await tx.fetch_one(f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE id = $1", booking_id)
    assert row is not None
    return row


async def _admit(tx: SlotTransaction, caller: Caller, key: str) -> DomainError | dict[str, Any]:
    live = await tx.fetch_one(
        f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE slot_id = $1 AND holder = $2"
        " AND state IN ('PENDING', 'RESERVED', 'CONFIRMED')",
        tx.slot_id,
        caller.holder,
    )
    if live is not None:
        # One live booking per holder and slot: a second request, new key or not, gets it back.
        return live
    refusal = policy.accepts_reservations(tx.closed, tx.starts_at, tx.now)
    if refusal is not None:
        return SlotClosed(tx.slot_key, refusal)
    counts = await tx.fetch_one(
        "SELECT count(*) FILTER (WHERE unit IS NOT NULL) AS occupied,"
        " count(*) FILTER (WHERE state = 'PENDING') AS waiting"
        " FROM bookings WHERE slot_id = $1",
        tx.slot_id,
    )
    assert counts is not None
    admission = policy.admit(tx.capacity, counts["occupied"], counts["waiting"])
    booking_id = uuid.uuid4()
    if admission is policy.Admission.HOLD:
        state = transition(None, Event.HOLD, Role.HOLDER)
        unit = policy.free_units(tx.capacity, await tx.taken_units())[0]
        granted = await tx.issue_fence()
        expires_at = policy.hold_expiry(tx.now, tx.hold_seconds)
        tx.holds_granted.append((booking_id, granted, expires_at))
        fence: int | None = granted
        event = Event.HOLD
    else:
        state = transition(None, Event.QUEUE, Role.HOLDER)
        unit, fence, expires_at, event = None, None, None, Event.QUEUE
        tx.queue_joined = True
    row = await tx.fetch_one(
        "INSERT INTO bookings (id, slot_id, holder, state, unit, fence, expires_at, idempotency_key)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_BOOKING_COLUMNS}",
        booking_id,
        tx.slot_id,
        caller.holder,
        state,
        unit,
        fence,
        expires_at,
        key,
    )
    assert row is not None
    stale_before = tx.mirror_stale
    await tx.record(booking_id, None, state, event, caller.holder, fence=fence)
    if not stale_before:
        await _mirror_admission(tx, row)
    return row


async def _mirror_admission(tx: SlotTransaction, row: dict[str, Any]) -> None:
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
    if row["state"] == BookingState.RESERVED:
        expected = ["HELD", 0]
    else:
        expected = ["QUEUED", await tx.queue_position(row["queue_seq"])]
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
        tx.mirror_stale = False
        return
    tx.mirror_stale = True


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
    await tx.record(booking_id, state, to_state, event, actor, reason=reason, fence=row["fence"])
    return updated


async def _accessible_booking(caller: Caller, booking_id: str) -> dict[str, Any]:
    """The booking row if the caller may act on it; someone else's reads as not found."""
    row = await load_booking_row(parse_booking_id(booking_id))
    if row is None or (row["holder"] != caller.holder and not caller.admin):
        raise BookingNotFound(booking_id)
    return row


async def settle_slot(engine: Engine, slot_id: UUID) -> None:
    """Expire what has lapsed, promote the queue and rebuild the slot's Redis mirror."""
    async with slot_transaction(engine, slot_id) as tx:
        await tx.settle()
        tx.mirror_stale = True
