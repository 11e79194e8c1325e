"""Reserve, confirm, cancel, complete, expire: each one slot transaction, decided by the domain."""

from __future__ import annotations

import functools
import logging
from typing import Any
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import (
    BookingNotFound,
    DomainError,
    HoldExpired,
    NotAuthorized,
    NotHolder,
    ValidationError,
)
from slotengine.domain.states import OCCUPYING_STATES, BookingState, Event, Role, transition
from slotengine.metrics import RESERVATIONS
from slotengine.service.admission import reserve_batch
from slotengine.service.bookings import (
    BOOKING_COLUMNS,
    booking_view,
    check_live_booking_cap,
    load_booking_row,
)
from slotengine.service.engine import Engine
from slotengine.service.ids import parse_id
from slotengine.service.rate_limit import take_reserve_turn
from slotengine.service.reserve_request import Reservation, ReserveRequest
from slotengine.service.retries import retry_conflicts
from slotengine.service.settlement import promote, settle
from slotengine.service.unit_of_work import SlotTransaction, slot_transaction
from slotengine.service.views import BookingView, Caller

log = logging.getLogger(__name__)


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
    try:
        policy.validate_idempotency_key(key)
        slot_uuid = parse_id("slotId", slot_id)
    except ValidationError:
        await take_reserve_turn(engine, caller.holder)  # counts too, and RateLimited comes first
        raise
    await check_live_booking_cap(caller.holder, slot_uuid, engine.live_bookings_per_holder)
    # The turn against the rate limit is taken in the batch, one round trip for all of it.
    # Concurrent reservations of one slot in this process share one transaction.
    reservation: Reservation = await engine.reservations.submit(
        slot_uuid, ReserveRequest(caller.holder, key), functools.partial(reserve_batch, engine)
    )
    return booking_view(reservation.row, reservation.position), reservation.replayed


async def _booking_in(tx: SlotTransaction, booking_id: UUID) -> dict[str, Any]:
    row = await tx.fetch_one(f"SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = $1", booking_id)
    assert row is not None
    return row


@retry_conflicts
async def confirm_booking(engine: Engine, caller: Caller, booking_id: str) -> BookingView:
    """Turn the caller's live hold into a confirmed booking; PostgreSQL's clock decides."""
    row = await _accessible_booking(caller, booking_id)
    if row["holder"] != caller.holder:
        raise NotHolder(booking_id)
    async with slot_transaction(engine, row["slot_id"]) as tx:
        await settle(tx)  # a hold past expiresAt is EXPIRED now, and stays so after we answer
        confirmed = await _confirm(tx, caller, row["id"])
    return booking_view(confirmed, None)


async def _confirm(tx: SlotTransaction, caller: Caller, booking_id: UUID) -> dict[str, Any]:
    row = await _booking_in(tx, booking_id)
    state = BookingState(row["state"])
    if state is BookingState.EXPIRED and row["expires_at"] is not None:
        raise HoldExpired(str(booking_id), row["expires_at"])
    to_state = transition(state, Event.CONFIRM, Role.HOLDER)
    updated = await tx.fetch_one(
        f"UPDATE bookings SET state = $2, updated_at = now()"
        f" WHERE id = $1 AND state = $4 AND fence = $3 AND expires_at > now()"
        f" RETURNING {BOOKING_COLUMNS}",
        booking_id,
        to_state,
        row["fence"],
        BookingState.RESERVED,
    )
    if updated is None:
        raise HoldExpired(str(booking_id), row["expires_at"])
    await tx.record(booking_id, state, to_state, Event.CONFIRM, caller.holder, fence=row["fence"])
    return updated


@retry_conflicts
async def cancel_booking(engine: Engine, caller: Caller, booking_id: str, reason: str | None) -> BookingView:
    """Cancel a waiting, held or confirmed booking; a freed unit goes to the head of the queue."""
    policy.validate_reason(reason)
    row = await _accessible_booking(caller, booking_id)
    role = Role.HOLDER if row["holder"] == caller.holder else Role.ADMIN
    async with slot_transaction(engine, row["slot_id"]) as tx:
        await settle(tx)
        cancelled = await _apply(tx, row["id"], Event.CANCEL, role, caller.holder, reason)
        await promote(tx)
    return booking_view(cancelled, None)


@retry_conflicts
async def complete_booking(engine: Engine, caller: Caller, booking_id: str) -> BookingView:
    """Mark a confirmed booking as served (admins only)."""
    if not caller.admin:
        raise NotAuthorized("only an admin can complete a booking")
    row = await _accessible_booking(caller, booking_id)
    async with slot_transaction(engine, row["slot_id"]) as tx:
        await settle(tx)
        completed = await _apply(tx, row["id"], Event.COMPLETE, Role.ADMIN, caller.holder, None)
    return booking_view(completed, None)


async def _apply(
    tx: SlotTransaction,
    booking_id: UUID,
    event: Event,
    role: Role,
    actor: str,
    reason: str | None,
) -> dict[str, Any]:
    """Move the booking by `event`, or raise why it may not (the transaction still commits)."""
    row = await _booking_in(tx, booking_id)
    state = BookingState(row["state"])
    to_state = transition(state, event, role)
    keeps_unit = to_state in OCCUPYING_STATES
    updated = await tx.fetch_one(
        "UPDATE bookings SET state = $2, unit = CASE WHEN $3 THEN unit END, updated_at = now()"
        f" WHERE id = $1 AND state = $4 RETURNING {BOOKING_COLUMNS}",
        booking_id,
        to_state,
        keeps_unit,
        state,
    )
    assert updated is not None  # the slot lock keeps the row as we read it
    if not keeps_unit:
        tx.unit_released(row["unit"])
    if state is BookingState.PENDING:
        # Its place when it left comes from the mirror at commit (see SlotTransaction.finish).
        tx.queue_seqs[str(booking_id)] = int(row["queue_seq"])
        tx.waiting -= 1
    await tx.record(booking_id, state, to_state, event, actor, reason=reason, fence=row["fence"])
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
        await settle(tx)
        tx.mirror_stale = True  # rebuilt from PostgreSQL, whatever Redis holds
