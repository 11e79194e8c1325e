"""What workers run: expire a hold when due, settle a slot, sweep for anything missed.

Each is safe to run twice, late or concurrently: the slot lock serializes them, the fence and
PostgreSQL's clock decide whether there is anything left to do.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from uuid import UUID

from slotengine.domain.states import BookingState, Event
from slotengine.service.bookings import load_booking_row
from slotengine.service.engine import Engine
from slotengine.service.retries import retry_conflicts
from slotengine.service.settlement import settle
from slotengine.service.state_sql import PENDING, RESERVED
from slotengine.service.timers import (
    expire_group_schedule,
    expire_hold_schedule,
    offer_group_schedule,
    settle_slot_schedule,
)
from slotengine.service.unit_of_work import SlotBusy, slot_transaction
from slotengine.store.database import connection

log = logging.getLogger(__name__)

SWEEP_BATCH = 200
REARM_BATCH = 1_000


class ExpiryOutcome(StrEnum):
    EXPIRED = "expired"  # this run expired the hold
    STALE = "stale"  # the hold was confirmed, cancelled, expired already, or re-fenced
    NOT_DUE = "not-due"  # PostgreSQL's clock says the hold still lives: re-armed


@retry_conflicts
async def expire_hold(engine: Engine, booking_id: UUID, fence: int) -> ExpiryOutcome:
    """Expire the hold `fence` of the booking if it lapsed, and offer the unit to the queue."""
    row = await load_booking_row(booking_id)
    if row is None or row["state"] != BookingState.RESERVED or row["fence"] != fence:
        return ExpiryOutcome.STALE
    async with slot_transaction(engine, row["slot_id"]) as tx:
        await settle(tx)
        if any(c.booking_id == str(booking_id) and c.event is Event.EXPIRE for c in tx.changes):
            return ExpiryOutcome.EXPIRED
        after = await tx.fetch_one("SELECT state, fence, expires_at FROM bookings WHERE id = $1", booking_id)
    assert after is not None
    if after["state"] == BookingState.RESERVED and after["fence"] == fence:
        # The timer fired before PostgreSQL's clock reached expiresAt (Redis' clock, which times
        # it, runs ahead): re-arm for the time PostgreSQL says is left, counted on Redis' clock,
        # so an offset between the two clocks costs one early run, never a loop of them.
        remaining = after["expires_at"] - tx.now
        await engine.timers.expire_hold_after(booking_id, fence, after["expires_at"], remaining)
        return ExpiryOutcome.NOT_DUE
    return ExpiryOutcome.STALE


async def slots_needing_settlement(limit: int = SWEEP_BATCH) -> list[UUID]:
    """Slots with a lapsed hold, or people still waiting after the slot started."""
    rows = await connection().execute_query_dict(
        f"SELECT slot_id FROM bookings WHERE state = {RESERVED} AND expires_at <= now()"
        " UNION"
        " SELECT b.slot_id FROM bookings b JOIN slots s ON s.id = b.slot_id"
        f" WHERE b.state = {PENDING} AND s.starts_at <= now()"
        " LIMIT $1",
        [limit],
    )
    return [r["slot_id"] for r in rows]


@retry_conflicts
async def _settle_unless_busy(engine: Engine, slot_id: UUID) -> bool:
    async with slot_transaction(engine, slot_id, skip_locked=True) as tx:
        await settle(tx)
    return bool(tx.changes)


async def sweep(engine: Engine) -> int:
    """Settle every slot that needs it and nobody is settling now; returns how many it settled."""
    settled = 0
    for slot_id in await slots_needing_settlement():
        try:
            settled += await _settle_unless_busy(engine, slot_id)
        except SlotBusy:
            continue  # whoever holds the lock settles it first
    if settled:
        log.info("sweep settled %d slots", settled)
    return settled


async def rearm_timers(engine: Engine) -> int:
    """Set again from PostgreSQL every timer a live booking needs; returns how many."""
    # Run when Redis lost its data (restart without persistence, flush): the holds' expiry and
    # the queues' lapse timers went with it. Setting a timer twice is harmless (same id).
    holds = await connection().execute_query_dict(
        f"SELECT id, fence, expires_at FROM bookings WHERE state = {RESERVED}"
    )
    queues = await connection().execute_query_dict(
        "SELECT DISTINCT s.id, s.starts_at FROM slots s JOIN bookings b ON b.slot_id = s.id"
        f" WHERE b.state = {PENDING}"
    )
    # Booking groups: each held group's one expiry timer, and a look at each waiting group (the
    # promotion that asked for it may have been lost with Redis).
    group_rows = await connection().execute_query_dict(
        "SELECT id, state, expires_at, now() AS db_now FROM booking_groups"
        f" WHERE state = {RESERVED} OR state = {PENDING}"
    )
    schedules = [expire_hold_schedule(r["id"], int(r["fence"]), r["expires_at"]) for r in holds]
    schedules += [settle_slot_schedule(r["id"], r["starts_at"]) for r in queues]
    schedules += [
        expire_group_schedule(r["id"], r["expires_at"])
        if r["state"] == BookingState.RESERVED
        else offer_group_schedule(r["id"], r["db_now"])  # due at once
        for r in group_rows
    ]
    for start in range(0, len(schedules), REARM_BATCH):
        await engine.timers.add_all(schedules[start : start + REARM_BATCH])
    log.info("re-armed %d timers from PostgreSQL", len(schedules))
    return len(schedules)
