"""A group that fails half-way leaves nothing behind: not in PostgreSQL, not on any channel, and
the Redis mirrors it had already moved are rebuilt before anyone relies on them.

Since onetrip, reservations of one slot apply their mirror delta after their commit, and
apply_changes.lua answers AHEAD to a delta whose changes a rebuild already read. A group (a
SlotTransaction per slot) still applies its deltas before its one commit, under the slots' locks:
there a mirror at or beyond the new version holds what nobody committed (this test's dead try),
and is rebuilt, which check_mirror_members tells apart from taking it as AHEAD."""

from __future__ import annotations

import asyncio

import pytest

from slotengine.domain.states import BookingState
from slotengine.service import group_transaction, groups
from slotengine.service.announcements import SlotAnnouncement
from slotengine.service.engine import Engine
from slotengine.service.reservations import reserve_slot
from slotengine.service.unit_of_work import SlotTransaction
from slotengine.service.views import Caller
from tests.integration.conftest import new_slot, sql
from tests.integration.test_races import check_mirror


async def check_mirror_members(engine: Engine, slot_id: str) -> None:
    """The mirror holds and queues exactly the bookings PostgreSQL does, at its version: counts
    alone would take the dead try's holds for the committed group's (one hold per slot either way)."""
    keys = engine.keys(slot_id)
    held = {m.decode() if isinstance(m, bytes) else m for m in await engine.redis.zrange(keys.holds, 0, -1)}
    waiting = {
        m.decode() if isinstance(m, bytes) else m for m in await engine.redis.zrange(keys.queue, 0, -1)
    }
    rows = await sql("SELECT id, state FROM bookings WHERE slot_id = $1", slot_id)
    assert held == {str(r["id"]) for r in rows if r["state"] == "RESERVED"}
    assert waiting == {str(r["id"]) for r in rows if r["state"] == "PENDING"}
    version = await sql("SELECT version FROM slots WHERE id = $1", slot_id)
    assert int(await engine.redis.hget(keys.meta, "version")) == version[0]["version"]


class Crash(Exception):
    """Stands for the process dying after the group's writes and mirror deltas, before its commit."""


async def test_a_group_that_fails_before_its_commit_holds_nothing_anywhere(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = [await new_slot(engine) for _ in range(3)]
    versions = await sql("SELECT id, version FROM slots WHERE id = ANY($1::uuid[])", slots)
    heard: list[SlotAnnouncement] = []
    pubsub = engine.redis.pubsub()
    await pubsub.subscribe(*(engine.channel(s) for s in slots))
    finish = SlotTransaction.finish
    finished: list[str] = []

    async def finish_then_crash(tx: SlotTransaction) -> None:
        await finish(tx)  # this slot's mirror has taken the group's hold
        finished.append(tx.slot_key)
        if len(finished) == len(slots):
            raise Crash  # every mirror moved, the commit not yet sent: the process dies here

    async def no_cleanup(engine: Engine, slot_id: str) -> None:
        """A dead process drops no mirror."""

    monkeypatch.setattr(SlotTransaction, "finish", finish_then_crash)
    monkeypatch.setattr(group_transaction, "drop_mirror", no_cleanup)
    with pytest.raises(Crash):
        await groups.reserve_slots(engine, Caller("atomic-ann"), slots, "k")
    monkeypatch.undo()
    assert sorted(finished) == sorted(slots)
    # The mirrors are a version ahead of PostgreSQL, with holds that were never committed.
    for row in versions:
        ahead = await engine.redis.hget(engine.keys(str(row["id"])).meta, "version")
        assert int(ahead) == row["version"] + 1

    assert await sql("SELECT 1 FROM bookings WHERE holder = 'atomic-ann'") == []
    assert await sql("SELECT 1 FROM booking_groups WHERE holder = 'atomic-ann'") == []
    assert await sql("SELECT id, version FROM slots WHERE id = ANY($1::uuid[])", slots) == versions
    # The same group then holds every slot, and the mirrors count what PostgreSQL holds.
    group = await groups.reserve_slots(engine, Caller("atomic-ann"), slots, "k")
    assert group.state is BookingState.RESERVED
    single = await reserve_slot(engine, Caller("atomic-bo"), slots[0], "k")
    assert single.state is BookingState.PENDING
    for slot_id in slots:
        await check_mirror(engine, slot_id)
        await check_mirror_members(engine, slot_id)
    # Listeners heard the committed group only: one hold per slot, nothing from the failed try.
    async with asyncio.timeout(10):
        while len(heard) < len(slots) + 1:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                heard.append(SlotAnnouncement.parse(message["data"]))
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    holds = [c for a in heard for c in a.changes if c.event.value == "hold"]
    assert sorted(c.booking_id for c in holds) == sorted(b.id for b in group.bookings)
