"""Expiry and settlement as workers run them: fenced, idempotent, decided by PostgreSQL's clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

from slotengine.scheduling.source import DueTimeScheduleSource
from slotengine.service import expiry
from slotengine.service.engine import Engine
from slotengine.service.expiry import ExpiryOutcome
from slotengine.service.reservations import confirm_booking, reserve_slot
from slotengine.service.views import Caller
from tests.deadlines import eventually
from tests.integration.conftest import db_clock_passed, events_of, new_slot, sql


async def fence_of(booking_id: str) -> int:
    return int((await sql("SELECT fence FROM bookings WHERE id = $1", booking_id))[0]["fence"])


async def test_three_concurrent_expiries_of_one_hold_expire_it_once_and_promote_once(
    engine: Engine,
) -> None:
    slot_id = await new_slot(engine, hold_seconds=1)
    held = await reserve_slot(engine, Caller("x-alice"), slot_id, "k")
    waiter = await reserve_slot(engine, Caller("x-bob"), slot_id, "k")
    assert held.expires_at is not None
    await eventually(lambda: db_clock_passed(held.expires_at), bool)  # type: ignore[arg-type]
    fence = await fence_of(held.id)

    outcomes = await asyncio.gather(*(expiry.expire_hold(engine, UUID(held.id), fence) for _ in range(3)))

    assert sorted(outcomes) == sorted([ExpiryOutcome.EXPIRED, ExpiryOutcome.STALE, ExpiryOutcome.STALE])
    assert await events_of(held.id) == ["hold", "expire"]
    assert await events_of(waiter.id) == ["queue", "promote"]


async def test_an_expiry_task_for_a_confirmed_booking_is_stale_and_changes_nothing(
    engine: Engine,
) -> None:
    slot_id = await new_slot(engine, hold_seconds=1)
    alice = Caller("x-confirmed")
    held = await reserve_slot(engine, alice, slot_id, "k")
    await confirm_booking(engine, alice, held.id)
    assert held.expires_at is not None
    await eventually(lambda: db_clock_passed(held.expires_at), bool)  # type: ignore[arg-type]

    outcome = await expiry.expire_hold(engine, UUID(held.id), await fence_of(held.id))

    assert outcome is ExpiryOutcome.STALE
    assert await events_of(held.id) == ["hold", "confirm"]


async def test_a_wrong_fence_is_stale(engine: Engine) -> None:
    slot_id = await new_slot(engine, hold_seconds=1)
    held = await reserve_slot(engine, Caller("x-fence"), slot_id, "k")
    assert held.expires_at is not None
    await eventually(lambda: db_clock_passed(held.expires_at), bool)  # type: ignore[arg-type]

    outcome = await expiry.expire_hold(engine, UUID(held.id), await fence_of(held.id) - 1)

    assert outcome is ExpiryOutcome.STALE
    assert (await sql("SELECT state FROM bookings WHERE id = $1", held.id))[0]["state"] == "RESERVED"


async def test_an_early_expiry_task_changes_nothing_and_rearms_the_timer(engine: Engine) -> None:
    slot_id = await new_slot(engine, hold_seconds=600)
    held = await reserve_slot(engine, Caller("x-early"), slot_id, "k")
    fence = await fence_of(held.id)
    await engine.timers.source.delete_schedule(f"expire:{held.id}:{fence}")

    outcome = await expiry.expire_hold(engine, UUID(held.id), fence)

    assert outcome is ExpiryOutcome.NOT_DUE
    assert await events_of(held.id) == ["hold"]
    assert await engine.redis.zscore(
        due_key(engine, f"expire:{held.id}:{fence}"), f"expire:{held.id}:{fence}"
    )


async def test_granting_a_hold_sets_its_expiry_timer(engine: Engine) -> None:
    slot_id = await new_slot(engine, hold_seconds=300)
    held = await reserve_slot(engine, Caller("x-timer"), slot_id, "k")
    fence = await fence_of(held.id)
    assert held.expires_at is not None

    due_ms = await engine.redis.zscore(
        due_key(engine, f"expire:{held.id}:{fence}"), f"expire:{held.id}:{fence}"
    )

    assert due_ms == int(held.expires_at.timestamp() * 1000)


async def test_the_sweep_expires_lapsed_holds_and_lapses_queues_of_started_slots(
    engine: Engine,
) -> None:
    lapsing_slot = await new_slot(engine, hold_seconds=1)
    starting_slot = await new_slot(engine, hold_seconds=600, starts_in=timedelta(seconds=2))
    lapsed = await reserve_slot(engine, Caller("s-a"), lapsing_slot, "k")
    await reserve_slot(engine, Caller("s-b"), starting_slot, "k")
    stranded = await reserve_slot(engine, Caller("s-c"), starting_slot, "k")
    starts_at = (await sql("SELECT starts_at FROM slots WHERE id = $1", starting_slot))[0]["starts_at"]
    assert lapsed.expires_at is not None
    await eventually(lambda: db_clock_passed(lapsed.expires_at), bool)  # type: ignore[arg-type]
    await eventually(lambda: db_clock_passed(starts_at), bool)

    settled = await expiry.sweep(engine)

    assert settled >= 2
    assert await events_of(lapsed.id) == ["hold", "expire"]
    assert await events_of(stranded.id) == ["queue", "lapse"]
    actors = await sql("SELECT actor FROM transitions WHERE booking_id = $1 ORDER BY id", stranded.id)
    assert actors[-1]["actor"] == "system"
    still_due = await expiry.slots_needing_settlement()
    assert UUID(lapsing_slot) not in still_due and UUID(starting_slot) not in still_due


async def test_a_due_schedule_is_claimed_by_exactly_one_of_many_schedulers(engine: Engine) -> None:
    source: DueTimeScheduleSource = engine.timers.source
    slot_id = await new_slot(engine)
    await engine.timers.settle_slot_at(UUID(slot_id), (await sql("SELECT now() AS n"))[0]["n"])

    claims = await asyncio.gather(*(source.get_schedules() for _ in range(10)))

    mine = [t for batch in claims for t in batch if t.args == [slot_id]]
    assert len(mine) == 1
    await source.post_send(mine[0])
    assert await engine.redis.hget(source.keys_of(mine[0].schedule_id).tasks, mine[0].schedule_id) is None


def due_key(engine: Engine, schedule_id: str) -> str:
    return engine.timers.source.keys_of(schedule_id).due
