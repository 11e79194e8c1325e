"""Reserve, confirm, cancel, complete, expire: each one slot transaction, decided by the domain."""

from __future__ import annotations

import functools
import logging
from typing import Any
from uuid import UUID

from slotengine.domain import fill_policy, policy
from slotengine.domain.errors import (
    BookingNotFound,
    DomainError,
    NotAuthorized,
    NotHolder,
    ValidationError,
)
from slotengine.domain.states import BookingState, Event, Role
from slotengine.metrics import RESERVATIONS
from slotengine.service.admission import reserve_batch
from slotengine.service.booking_changes import ChangeRequest, change_batch
from slotengine.service.bookings import (
    booking_view,
    load_booking_row,
)
from slotengine.service.engine import Engine
from slotengine.service.ids import parse_id
from slotengine.service.rate_limit import take_reserve_turn
from slotengine.service.reserve_request import Reservation, ReserveRequest
from slotengine.service.retries import retry_conflicts
from slotengine.service.settlement import settle
from slotengine.service.unit_of_work import slot_transaction
from slotengine.service.views import BookingView, Caller

log = logging.getLogger(__name__)


async def reserve_slot(engine: Engine, caller: Caller, slot_id: str, key: str, units: int = 1) -> BookingView:
    """Hold `units` units of the slot as one booking, or queue for them; the same caller and key
    replay the answer."""
    try:
        booking, replayed = await _reserve_once(engine, caller, slot_id, key, units)
    except DomainError as refusal:
        RESERVATIONS.labels(type(refusal).__name__).inc()
        raise
    if replayed:
        RESERVATIONS.labels("replayed").inc()
    else:
        RESERVATIONS.labels("held" if booking.state is BookingState.RESERVED else "queued").inc()
    return booking


async def _reserve_once(
    engine: Engine, caller: Caller, slot_id: str, key: str, units: int
) -> tuple[BookingView, bool]:
    try:
        policy.validate_idempotency_key(key)
        slot_uuid = parse_id("slotId", slot_id)
        fill_policy.validate_units(units, policy.MAX_CAPACITY)  # the slot's own capacity: in the batch
    except ValidationError:
        await take_reserve_turn(engine, caller.holder)  # counts too, and RateLimited comes first
        raise
    # The turn against the rate limit and the cap on live bookings are taken in the batch.
    # Concurrent reservations of one slot in this process share one transaction.
    reservation: Reservation = await engine.reservations.submit(
        slot_uuid, ReserveRequest(caller.holder, key, units), functools.partial(reserve_batch, engine)
    )
    return booking_view(reservation.row, reservation.position), reservation.replayed


async def _change(engine: Engine, row: dict[str, Any], request: ChangeRequest) -> dict[str, Any]:
    """The booking after `request`, run with the other changes of its slot that arrive meanwhile;
    raise why it may not happen (the batch still commits the others)."""
    changed: dict[str, Any] = await engine.changes.submit(
        row["slot_id"], request, functools.partial(change_batch, engine)
    )
    return changed


async def confirm_booking(engine: Engine, caller: Caller, booking_id: str) -> BookingView:
    """Turn the caller's live hold into a confirmed booking; PostgreSQL's clock decides."""
    row = await _accessible_booking(caller, booking_id)
    if row["holder"] != caller.holder:
        raise NotHolder(booking_id)
    confirmed = await _change(
        engine, row, ChangeRequest(row["id"], Event.CONFIRM, Role.HOLDER, caller.holder)
    )
    return booking_view(confirmed, None)


async def cancel_booking(engine: Engine, caller: Caller, booking_id: str, reason: str | None) -> BookingView:
    """Cancel a waiting, held or confirmed booking; a freed unit goes to the head of the queue."""
    policy.validate_reason(reason)
    row = await _accessible_booking(caller, booking_id)
    role = Role.HOLDER if row["holder"] == caller.holder else Role.ADMIN
    request = ChangeRequest(row["id"], Event.CANCEL, role, caller.holder, reason)
    return booking_view(await _change(engine, row, request), None)


async def complete_booking(engine: Engine, caller: Caller, booking_id: str) -> BookingView:
    """Mark a confirmed booking as served (admins only)."""
    if not caller.admin:
        raise NotAuthorized("only an admin can complete a booking")
    row = await _accessible_booking(caller, booking_id)
    request = ChangeRequest(row["id"], Event.COMPLETE, Role.ADMIN, caller.holder)
    return booking_view(await _change(engine, row, request), None)


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
