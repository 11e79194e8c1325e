"""Booking groups' timers, with no worker running: a promotion that meets a waiting group at the
head of a queue with a unit free asks for a look at once; a held group has one expiry timer; both
are set again from PostgreSQL when Redis lost them."""

from __future__ import annotations

from uuid import UUID

from slotengine.domain.states import BookingState
from slotengine.service import expiry, groups
from slotengine.service.engine import Engine
from slotengine.service.reservations import cancel_booking, reserve_slot
from slotengine.service.timers import expire_group_schedule, offer_group_schedule
from slotengine.service.views import Caller
from tests.integration.conftest import new_slot, sql


async def armed(engine: Engine, schedule_id: str) -> bool:
    keys = engine.timers.source.keys_of(schedule_id)
    return await engine.redis.zscore(keys.due, schedule_id) is not None


async def disarm(engine: Engine, schedule_id: str) -> None:
    await engine.timers.source.delete_schedule(schedule_id)


async def test_a_freed_unit_before_a_waiting_group_asks_for_an_offer_and_rearm_restores_its_timers(
    engine: Engine,
) -> None:
    busy, free = await new_slot(engine), await new_slot(engine)
    first = await reserve_slot(engine, Caller("timers-first"), busy, "k")
    waiting = await groups.reserve_slots(engine, Caller("timers-group"), [busy, free], "k", wait=True)
    assert waiting.state is BookingState.PENDING
    group_id = UUID(waiting.id)
    look = offer_group_schedule(group_id, waiting.created_at).schedule_id
    await disarm(engine, look)  # whatever joining asked for: only the promotion counts here

    await cancel_booking(engine, Caller("timers-first"), first.id, None)

    assert await armed(engine, look), "the freed unit's promotion did not ask for a look at the group"
    assert await groups.offer_group(engine, group_id) is True
    rows = await sql("SELECT state, expires_at FROM booking_groups WHERE id = $1", group_id)
    assert rows[0]["state"] == BookingState.RESERVED
    expiring = expire_group_schedule(group_id, rows[0]["expires_at"]).schedule_id
    assert await armed(engine, expiring)

    # Redis forgets them: re-arming from PostgreSQL sets the held group's expiry again, and a
    # look at every waiting group.
    other = await groups.reserve_slots(engine, Caller("timers-other"), [busy], "k", wait=True)
    assert other.state is BookingState.PENDING
    other_look = offer_group_schedule(UUID(other.id), other.created_at).schedule_id
    await disarm(engine, expiring)
    await disarm(engine, other_look)
    await expiry.rearm_timers(engine)
    assert await armed(engine, expiring)
    assert await armed(engine, other_look)
