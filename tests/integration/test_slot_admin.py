"""Closing, resizing and extending on the real PostgreSQL and Redis, raced against reservations and
expiry tasks: nothing over-books, FIFO holds, and an old expiry timer never ends an extended hold."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest
from tortoise.exceptions import IntegrityError

from slotengine.domain.errors import DomainError, ValidationError
from slotengine.service import expiry, extension, reservations, slot_admin
from slotengine.service.engine import Engine
from slotengine.service.expiry import ExpiryOutcome
from slotengine.service.views import BookingView, Caller
from tests.integration.conftest import ADMIN, new_slot, sql


async def test_the_database_refuses_a_capacity_below_a_unit_in_use(engine: Engine) -> None:
    slot_id = await new_slot(engine, capacity=2)
    for name in ("db-a", "db-b"):
        await reservations.reserve_slot(engine, Caller(name), slot_id, "k")
    with pytest.raises(IntegrityError, match="above the capacity"):
        await sql("UPDATE slots SET capacity = 1 WHERE id = $1", UUID(slot_id))
    assert (await sql("SELECT capacity FROM slots WHERE id = $1", UUID(slot_id)))[0]["capacity"] == 2


async def _attempt(call: object) -> object:
    try:
        return await call  # type: ignore[misc]
    except DomainError as refusal:
        return refusal


async def test_resizing_while_people_reserve_never_over_books_and_keeps_the_queue_in_order(
    engine: Engine,
) -> None:
    slot_id = await new_slot(engine, capacity=2)
    calls: list[object] = [
        reservations.reserve_slot(engine, Caller(f"rz-{i}"), slot_id, "k") for i in range(30)
    ]
    for capacity in (5, 1, 3, 2, 6):
        calls.insert(
            len(calls) // 2, slot_admin.update_slot(engine, ADMIN, slot_id, slot_admin.SlotUpdate(capacity))
        )
    outcomes = await asyncio.gather(*(_attempt(c) for c in calls))
    assert all(not isinstance(o, DomainError) or isinstance(o, ValidationError) for o in outcomes), outcomes

    capacity = (await sql("SELECT capacity FROM slots WHERE id = $1", UUID(slot_id)))[0]["capacity"]
    rows = await sql(
        "SELECT state, unit, queue_seq FROM bookings WHERE slot_id = $1 ORDER BY queue_seq", UUID(slot_id)
    )
    units = [r["unit"] for r in rows if r["unit"] is not None]
    assert len(units) == len(set(units)) <= capacity and all(1 <= u <= capacity for u in units)
    # FIFO: everyone holding arrived before everyone still waiting.
    holding = [r["queue_seq"] for r in rows if r["state"] == "RESERVED"]
    waiting = [r["queue_seq"] for r in rows if r["state"] == "PENDING"]
    assert not waiting or max(holding) < min(waiting)
    # A free unit with people waiting would be a promotion missed.
    assert not waiting or len(units) == capacity


async def test_an_old_expiry_timer_racing_the_extension_leaves_the_hold_alone(engine: Engine) -> None:
    slot_id = await new_slot(engine, capacity=1, hold_seconds=60)
    alice = Caller("race-ext-alice")
    held = await reservations.reserve_slot(engine, alice, slot_id, "k")
    old_fence = (await sql("SELECT fence FROM bookings WHERE id = $1", UUID(held.id)))[0]["fence"]

    extended, *timers = await asyncio.gather(
        extension.extend_hold(engine, alice, held.id, 120),
        *(expiry.expire_hold(engine, UUID(held.id), old_fence) for _ in range(3)),
    )
    assert isinstance(extended, BookingView) and extended.state.value == "RESERVED"
    assert held.expires_at is not None and extended.expires_at is not None
    assert extended.expires_at > held.expires_at
    # Before the extension the timer found the hold not due; after it, fenced out.
    assert set(timers) <= {ExpiryOutcome.NOT_DUE, ExpiryOutcome.STALE}
    assert await expiry.expire_hold(engine, UUID(held.id), old_fence) is ExpiryOutcome.STALE
    rows = await sql("SELECT state, fence FROM bookings WHERE id = $1", UUID(held.id))
    assert rows[0]["state"] == "RESERVED" and rows[0]["fence"] > old_fence
