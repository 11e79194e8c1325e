"""The Redis mirror of a slot: changed by deltas, rebuilt from PostgreSQL only when missing or wrong."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient

from slotengine.domain.states import OCCUPYING_STATES, BookingState
from slotengine.redis import scripts
from slotengine.redis.clock import epoch_ms
from slotengine.service.announcements import Change
from slotengine.service.engine import Engine
from slotengine.service.state_sql import MIRRORED_SQL

log = logging.getLogger(__name__)

# The mirror outlives the slot by a day, then Redis may drop it; it is rebuildable anyway.
MIRROR_GRACE = timedelta(days=1)


async def rebuild_mirror(
    engine: Engine,
    conn: BaseDBAsyncClient,
    slot_id: UUID,
    capacity: int,
    closed: bool,
    ends_at: datetime,
    version: int,
) -> int:
    """Write the slot's state, as `conn`'s transaction sees it, over its Redis mirror.

    Returns the length of the queue it found (the one place that counts it)."""
    rows = await conn.execute_query_dict(
        "SELECT id, state, expires_at, queue_seq, units FROM bookings WHERE slot_id = $1"
        f" AND state IN {MIRRORED_SQL} ORDER BY queue_seq",
        [slot_id],
    )
    holds: list[Any] = []
    queue: list[Any] = []
    settled = 0
    for row in rows:
        if row["state"] == BookingState.RESERVED:
            for member in hold_members(str(row["id"]), int(row["units"])):
                holds += [epoch_ms(row["expires_at"]), member]
        elif row["state"] == BookingState.PENDING:
            queue += [row["queue_seq"], str(row["id"])]
        else:
            settled += int(row["units"])
    await scripts.sync_slot(
        engine.redis,
        engine.keys(str(slot_id)).all(),
        _mirror_args(capacity, settled, closed, ends_at, version, holds, queue),
    )
    return len(queue) // 2


def _mirror_args(
    capacity: int,
    settled: int,
    closed: bool,
    ends_at: datetime,
    version: int,
    holds: list[Any],
    queue: list[Any],
) -> list[Any]:
    """sync_slot.lua's ARGV: holds and queue are flat (score, booking id) pairs."""
    return [
        capacity,
        settled,
        int(closed),
        epoch_ms(ends_at + MIRROR_GRACE),
        version,
        len(holds) // 2,
        *holds,
        *queue,
    ]


async def mirror_new_slots(engine: Engine, slots: Sequence[tuple[UUID, int, datetime]]) -> None:
    """Write the mirrors of unbooked, open slots given as (id, capacity, ends_at), in one round trip."""
    calls = [
        (engine.keys(str(slot_id)).all(), _mirror_args(capacity, 0, False, ends_at, 0, [], []))
        for slot_id, capacity, ends_at in slots
    ]
    await scripts.sync_slot.run_many(engine.redis, calls)


async def drop_mirrors(engine: Engine, slot_ids: Sequence[UUID]) -> None:
    """Forget the mirrors of these slots (they are rebuilt from the database on next use)."""
    try:
        async with engine.redis.pipeline(transaction=False) as pipe:
            for slot_id in slot_ids:
                # One DEL per slot: a slot's keys share a cluster hash slot, different slots do not.
                pipe.delete(*engine.keys(str(slot_id)).all())
            await pipe.execute()
    except Exception:  # the next use rebuilds them either way
        log.exception("could not drop the Redis mirrors of %d slots", len(slot_ids))


async def drop_mirror(engine: Engine, slot_id: str) -> None:
    """Forget one slot's mirror (it may be ahead of a transaction that rolled back)."""
    try:
        await engine.redis.delete(*engine.keys(slot_id).all())
    except Exception:  # the next use rebuilds it either way
        log.exception("could not drop the Redis mirror of slot %s", slot_id)


# Occupying states other than a hold: the mirror counts them as one number, "confirmed".
_SETTLED_STATES = OCCUPYING_STATES - {BookingState.RESERVED}


@dataclass(frozen=True, slots=True)
class MirrorOp:
    """One apply_changes.lua operation (see its header)."""

    name: str
    booking_id: str = "0"
    number: int = 0

    def args(self) -> list[Any]:
        return [self.name, self.booking_id, self.number]


def hold_members(booking_id: str, units: int) -> list[str]:
    """The members a hold of `units` units has in the mirror's holds set, one per unit, so that the
    set counts units (its first is the booking id, as for a one-unit hold)."""
    return [booking_id] + [f"{booking_id}:{n}" for n in range(2, units + 1)]


def mirror_ops(changes: Sequence[Change], queue_seqs: dict[str, int]) -> list[MirrorOp]:
    """The mirror operations that make Redis follow `changes`, in order.

    `queue_seqs` gives the arrival sequence of each booking that joins the queue.
    """
    ops: list[MirrorOp] = []
    for change in changes:
        before, after = change.from_state, change.to_state
        if before is BookingState.RESERVED:
            ops += [MirrorOp("hold-", member) for member in hold_members(change.booking_id, change.units)]
        elif before is BookingState.PENDING:
            ops.append(MirrorOp("queue-", change.booking_id))
        if after is BookingState.RESERVED:
            assert change.expires_at is not None
            expiry = epoch_ms(change.expires_at)
            members = hold_members(change.booking_id, change.units)
            ops += [MirrorOp("hold+", member, expiry) for member in members]
        elif after is BookingState.PENDING:
            ops.append(MirrorOp("queue+", change.booking_id, queue_seqs[change.booking_id]))
        settled = (after in _SETTLED_STATES) - (before in _SETTLED_STATES)
        if settled:
            ops.append(MirrorOp("settled", number=settled * change.units))
    return ops


def apply_args(before: int, after: int, ops: Sequence[MirrorOp]) -> list[Any]:
    """apply_changes.lua's ARGV: apply `ops` if the mirror is at version `before`; it is at `after` then."""
    args: list[Any] = [before, after]
    for op in ops:
        args += op.args()
    return args


# Changes reach the mirror after their commit, so an earlier transaction's may land a moment after
# a later one's is sent: the later one waits this long for it (a round trip or two, normally)
# before the mirror is taken as lost and rebuilt.
BEHIND_WAIT_SECONDS = 0.2


async def apply_to_mirror(
    engine: Engine, slot_id: UUID, before: int, after: int, ops: Sequence[MirrorOp]
) -> scripts.ChangesApplied:
    """Apply `ops` to the slot's mirror once it is at version `before`; it is at `after` then."""
    keys, args = engine.keys(str(slot_id)).all(), apply_args(before, after, ops)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BEHIND_WAIT_SECONDS
    pause = 0.001
    while True:
        answer = await scripts.apply_changes(engine.redis, keys, args)
        if not answer.behind or loop.time() >= deadline:
            return answer
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)
