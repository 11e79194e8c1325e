"""Deltas reach a slot's mirror after their commit, so two may land out of order: the mirror takes
each at exactly its version, a later one waits for the earlier, and a rebuild never goes back."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from slotengine.redis import scripts
from slotengine.service.engine import Engine
from slotengine.service.mirror import MirrorOp, apply_args, apply_to_mirror, mirror_new_slots


async def _new_mirror(engine: Engine) -> uuid.UUID:
    slot_id = uuid.uuid4()
    await mirror_new_slots(engine, [(slot_id, 2, datetime.now(UTC) + timedelta(hours=1))])
    return slot_id


async def test_a_delta_ahead_of_its_turn_is_behind_until_the_earlier_one_lands(engine: Engine) -> None:
    slot_id = await _new_mirror(engine)
    keys = engine.keys(str(slot_id))
    second = apply_args(1, 2, [MirrorOp("queue+", "b", 2)])

    early = await scripts.apply_changes(engine.redis, keys.all(), second)
    assert early.status == "BEHIND"
    assert await engine.redis.zcard(keys.queue) == 0  # nothing written out of turn

    # The later change waits for the earlier one, which lands meanwhile.
    waiting = asyncio.create_task(apply_to_mirror(engine, slot_id, 1, 2, [MirrorOp("queue+", "b", 2)]))
    first = await apply_to_mirror(engine, slot_id, 0, 1, [MirrorOp("queue+", "a", 1)])
    assert first.applied
    assert (await waiting).applied
    assert await engine.redis.zrange(keys.queue, 0, -1) == ["a", "b"]
    assert await engine.redis.hget(keys.meta, "version") == "2"


async def test_a_delta_a_rebuild_already_holds_is_ahead_and_a_rebuild_never_goes_back(engine: Engine) -> None:
    slot_id = await _new_mirror(engine)
    keys = engine.keys(str(slot_id))
    assert (await apply_to_mirror(engine, slot_id, 0, 1, [MirrorOp("hold+", "a", 10**13)])).applied
    assert (await apply_to_mirror(engine, slot_id, 1, 2, [MirrorOp("hold+", "b", 10**13)])).applied

    late = await scripts.apply_changes(
        engine.redis, keys.all(), apply_args(0, 1, [MirrorOp("hold+", "a", 1)])
    )
    assert late.status == "AHEAD"
    # A rebuild read at version 1 (before the second change) must not take the mirror back.
    written = await scripts.sync_slot(engine.redis, keys.all(), [2, 0, 0, 10**13, 1, 0])
    assert written == -1
    assert await engine.redis.zcard(keys.holds) == 2
    assert await engine.redis.hget(keys.meta, "version") == "2"
