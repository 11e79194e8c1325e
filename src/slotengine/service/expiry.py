"""What workers run: expire a hold when due, settle a slot, sweep for anything missed.

Each is safe to run twice, late or concurrently: the slot lock serializes them, the fence and
PostgreSQL's clock decide whether there is anything left to do.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from uuid import UUID

from slotengine.domain.states import BookingState
from slotengine.service.bookings import load_booking_row
from slotengine.service.engine import Engine
from slotengine.service.slot_transaction import SlotBusy, slot_transaction
from slotengine.store.database import connection

log = logging.getLogger(__name__)

SWEEP_BATCH = 200


class ExpiryOutcome(StrEnum):
    EXPIRED = "expired"  # this run expired the hold
    STALE = "stale"  # the hold was confirmed, cancelled, expired already, or re-fenced
    NOT_DUE = "not-due"  # PostgreSQL's clock says the hold still lives: re-armed


async def expire_hold(engine: Engine, booking_id: UUID, fence: int) -> ExpiryOutcome:
    """Expire the hold `fence` of the booking if it lapsed, and offer the unit to the queue."""
    row = await load_booking_row(booking_id)
    if row is None or row["state"] != BookingState.RESERVED or row["fence"] != fence:
        return ExpiryOutcome.STALE
    async with slot_transaction(engine, row["slot_id"]) as tx:
        await tx.settle()
        if any(c.booking_id == str(booking_id) and c.event == "expire" for c in tx.changes):
            return ExpiryOutcome.EXPIRED
        after = await tx.fetch_one("SELECT state, fence, expires_at FROM bookings WHERE id = $1", booking_id)
    assert after is not None
    if after["state"] == BookingState.RESERVED and after["fence"] == fence:
        # Our clock ran ahead of PostgreSQL's: try again when PostgreSQL agrees it is due.
        await engine.timers.expire_hold_at(booking_id, fence, after["expires_at"])
        return ExpiryOutcome.NOT_DUE
    return ExpiryOutcome.STALE


async def slots_needing_settlement(limit: int = SWEEP_BATCH) -> list[UUID]:
    """Slots with a lapsed hold, or people still waiting after the slot started."""
    rows = await connection().execute_query_dict(
        "SELECT slot_id FROM bookings WHERE state = 'RESERVED' AND expires_at <= now()"
        " UNION"
        " SELECT b.slot_id FROM bookings b JOIN slots s ON s.id = b.slot_id"
        " WHERE b.state = 'PENDING' AND s.starts_at <= now()"
        " LIMIT $1",
        [limit],
    )
    return [r["slot_id"] for r in rows]


async def sweep(engine: Engine) -> int:
    """Settle every slot that needs it and nobody is settling now; returns how many it settled."""
    settled = 0
    for slot_id in await slots_needing_settlement():
        try:
            async with slot_transaction(engine, slot_id, skip_locked=True) as tx:
                await tx.settle()
        except SlotBusy:
            continue  # whoever holds the lock settles it first
        settled += bool(tx.changes)
    if settled:
        log.info("sweep settled %d slots", settled)
    return settled
