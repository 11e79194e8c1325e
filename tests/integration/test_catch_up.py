"""A listener that falls behind catches up from the audit trail: it misses nothing and repeats
nothing, exactly like a listener that kept up (service/live.py, on a real PostgreSQL and Redis).

Its backlog is made small (4) so that 20 changes overflow it: the hub then drops the backlog and
tells it to re-read, and the watcher replays the versions in between instead of jumping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar
from uuid import UUID

import pytest

from slotengine.service import events, live, stream_cursor
from slotengine.service.engine import Engine
from slotengine.service.events import EventHub
from slotengine.service.reservations import cancel_booking, reserve_slot
from slotengine.service.views import Caller, LiveMessage
from tests.integration.conftest import new_slot

T = TypeVar("T")
CHANGES = 20


async def _take(stream: AsyncIterator[T], count: int) -> list[T]:
    return [await asyncio.wait_for(anext(stream), 30) for _ in range(count)]


def _versions(slot_id: str, messages: list[LiveMessage[object]]) -> list[int]:
    return [stream_cursor.decode(m.cursor, UUID(slot_id)) for m in messages]


@pytest.fixture
async def hub(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EventHub]:
    monkeypatch.setattr(events, "LISTENER_BACKLOG", 4)
    hub = EventHub(engine.redis, engine.channel)
    yield hub
    await hub.close()


async def test_a_slot_listener_that_fell_behind_gets_every_version_it_missed(
    engine: Engine, hub: EventHub
) -> None:
    slot_id = await new_slot(engine)
    slow, quick = live.watch_slot(engine, hub, slot_id), live.watch_slot(engine, hub, slot_id)
    try:
        (first,) = await _take(slow, 1)
        await _take(quick, 1)
        following = asyncio.create_task(_take(quick, CHANGES))
        for i in range(CHANGES // 2):
            caller = Caller(f"behind-{slot_id}-{i}")
            booking = await reserve_slot(engine, caller, slot_id, "k")
            await cancel_booking(engine, caller, booking.id, None)
        reference = await following  # every announcement has reached both listeners' queues
        behind = await _take(slow, CHANGES)
    finally:
        await slow.aclose()
        await quick.aclose()

    assert behind == reference
    start = _versions(slot_id, [first])[0]
    assert _versions(slot_id, behind) == list(range(start + 1, start + CHANGES + 1))
    assert [m.view.held for m in behind] == [1, 0] * (CHANGES // 2)


async def test_a_waiter_that_fell_behind_sees_each_move_up_the_queue(engine: Engine, hub: EventHub) -> None:
    slot_id = await new_slot(engine)
    await reserve_slot(engine, Caller(f"holder-{slot_id}"), slot_id, "k")
    ahead = [await reserve_slot(engine, Caller(f"ahead-{slot_id}-{i}"), slot_id, "k") for i in range(CHANGES)]
    me = Caller(f"me-{slot_id}")
    mine = await reserve_slot(engine, me, slot_id, "k")
    slow = live.watch_queue_position(engine, hub, me, mine.id)
    quick = live.watch_queue_position(engine, hub, me, mine.id)
    try:
        (first,) = await _take(slow, 1)
        await _take(quick, 1)
        following = asyncio.create_task(_take(quick, CHANGES))
        for booking in ahead:
            await cancel_booking(engine, Caller(booking.holder), booking.id, None)
        reference = await following
        behind = await _take(slow, CHANGES)
    finally:
        await slow.aclose()
        await quick.aclose()

    assert first.view.position == CHANGES + 1
    assert behind == reference
    assert [m.view.position for m in behind] == list(range(CHANGES, 0, -1))
