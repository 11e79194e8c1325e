"""Extending a live hold: one audited transition that gives the hold a new expiry and a new fence.

The new fence is what keeps the old expiry timer out: when it fires, its fence no longer matches
and it changes nothing (expiry.expire_hold answers STALE); the timer set for the new expiry ends
the hold, if nobody confirms it first.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import BookingNotFound, HoldExpired, NotHolder
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.service.bookings import (
    BOOKING_COLUMNS,
    booking_view,
    check_moves_alone,
    load_booking_row,
)
from slotengine.service.engine import Engine
from slotengine.service.ids import parse_id
from slotengine.service.retries import retry_conflicts
from slotengine.service.settlement import settle
from slotengine.service.state_sql import RESERVED
from slotengine.service.unit_of_work import SlotTransaction, slot_transaction
from slotengine.service.views import BookingView, Caller

_EXTENDED = transition(BookingState.RESERVED, Event.EXTEND, Role.HOLDER)

# The booking, its slot's extension limits, and when its hold was granted (the row of the
# transition that made it RESERVED: its hold or its promotion).
_HOLD_SQL = (
    f"SELECT {', '.join(f'b.{column.strip()}' for column in BOOKING_COLUMNS.split(','))}, b.extensions,"
    " s.max_extensions, s.max_hold_seconds,"
    " (SELECT t.at FROM transitions t WHERE t.booking_id = b.id"
    f"   AND t.to_state = {RESERVED} AND t.from_state IS DISTINCT FROM {RESERVED}"
    "   ORDER BY t.id DESC LIMIT 1) AS held_since"
    " FROM bookings b JOIN slots s ON s.id = b.slot_id WHERE b.id = $1"
)


@retry_conflicts
async def extend_hold(engine: Engine, caller: Caller, booking_id: str, seconds: int | None) -> BookingView:
    """Give the caller's live hold `seconds` from now (default: the slot's holdSeconds), within
    the slot's limits; PostgreSQL's clock decides."""
    row = await load_booking_row(parse_id("bookingId", booking_id))
    if row is None or (row["holder"] != caller.holder and not caller.admin):
        raise BookingNotFound(booking_id)
    if row["holder"] != caller.holder:
        raise NotHolder(booking_id)
    async with slot_transaction(engine, row["slot_id"]) as tx:
        await settle(tx)  # a hold past expiresAt is EXPIRED now: it cannot be extended
        extended = await _extend(tx, caller, row["id"], seconds)
    return booking_view(extended, None)


async def _extend(
    tx: SlotTransaction, caller: Caller, booking_id: UUID, seconds: int | None
) -> dict[str, Any]:
    hold = await tx.fetch_one(_HOLD_SQL, booking_id)
    assert hold is not None
    state = BookingState(hold["state"])
    if state is BookingState.EXPIRED and hold["expires_at"] is not None:
        raise HoldExpired(str(booking_id), hold["expires_at"])
    check_moves_alone(hold, state, Event.EXTEND)
    transition(state, Event.EXTEND, Role.HOLDER)
    expires_at = policy.extended_expiry(
        policy.HoldExtension(
            now=tx.now,
            expires_at=hold["expires_at"],
            # A hold written before its audit row existed cannot be; its creation is the fallback.
            held_since=hold["held_since"] or hold["created_at"],
            extensions_used=int(hold["extensions"]),
            max_extensions=int(hold["max_extensions"]),
            max_hold_seconds=policy.hold_cap_seconds(tx.hold_seconds, hold["max_hold_seconds"]),
            slot_ends_at=tx.ends_at,
            slot_closed=tx.closed,
        ),
        seconds if seconds is not None else tx.hold_seconds,
    )
    # Guarded like confirm: only this hold, still live by PostgreSQL's clock, at its fence. The
    # slot lock and the settle above make it so; the guard says so in the statement too.
    updated = await tx.fetch_one(
        "WITH fence AS (UPDATE slots SET fence = fence + 1 WHERE id = $2 RETURNING fence)"
        " UPDATE bookings SET expires_at = $3, fence = (SELECT fence FROM fence),"
        "  extensions = extensions + 1, updated_at = now()"
        f" WHERE id = $1 AND state = {RESERVED} AND fence = $4 AND expires_at > now()"
        f" RETURNING {BOOKING_COLUMNS}",
        booking_id,
        tx.slot_id,
        expires_at,
        hold["fence"],
    )
    assert updated is not None  # the slot lock keeps the hold as settle() left it: live
    fence = int(updated["fence"])
    await tx.record(
        booking_id,
        state,
        _EXTENDED,
        Event.EXTEND,
        caller.holder,
        fence=fence,
        expires_at=expires_at,
        units=int(updated["units"]),
    )
    # A timer for the new expiry; the old one fires with the old fence and changes nothing.
    tx.holds_granted.append((booking_id, fence, expires_at))
    return updated
