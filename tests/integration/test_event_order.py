"""The hub puts a slot's announcements back in version order before its listeners see them."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from slotengine.service.engine import Engine
from slotengine.service.events import GAP_WAIT_SECONDS, EventHub, Message, Resync, SlotAnnouncement


def _announcement(slot_id: str, version: int) -> str:
    return json.dumps({"slotId": slot_id, "version": version, "changes": []})


async def _next(inbox: asyncio.Queue[Message]) -> Message:
    return await asyncio.wait_for(inbox.get(), 5)


async def test_announcements_published_out_of_order_reach_listeners_in_order(engine: Engine) -> None:
    hub = EventHub(engine.redis, engine.channel)
    slot_id = str(uuid.uuid4())
    try:
        async with hub.listen(slot_id) as first, hub.listen(slot_id) as second:
            for version in (1, 3, 4, 2, 5):
                await engine.redis.publish(engine.channel(slot_id), _announcement(slot_id, version))
            for inbox in (first, second):
                got = [await _next(inbox) for _ in range(5)]
                assert all(isinstance(m, SlotAnnouncement) for m in got), got
                assert [m.version for m in got if isinstance(m, SlotAnnouncement)] == [1, 2, 3, 4, 5]
                assert inbox.empty()
    finally:
        await hub.close()


async def test_a_version_that_never_comes_releases_the_rest_after_a_short_wait(engine: Engine) -> None:
    hub = EventHub(engine.redis, engine.channel)
    slot_id = str(uuid.uuid4())
    try:
        async with hub.listen(slot_id) as inbox:
            await engine.redis.publish(engine.channel(slot_id), _announcement(slot_id, 1))
            first = await _next(inbox)
            held_since = time.monotonic()
            for version in (3, 4):  # 2 was lost: its listeners must see the gap and re-read
                await engine.redis.publish(engine.channel(slot_id), _announcement(slot_id, version))
            later = [await _next(inbox), await _next(inbox)]
            waited = time.monotonic() - held_since
        assert isinstance(first, SlotAnnouncement) and first.version == 1
        assert [m.version for m in later if isinstance(m, SlotAnnouncement)] == [3, 4]
        assert not any(isinstance(m, Resync) for m in later)
        assert waited >= GAP_WAIT_SECONDS * 0.9  # held back for the missing one, then given up
    finally:
        await hub.close()
