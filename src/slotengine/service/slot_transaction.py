"""One database transaction holding a slot's row lock: the only way a slot's bookings change.

Every change to a slot's bookings runs here, so changes to one slot are serialized by
PostgreSQL, the Redis mirror is written in the same order, and a failure drops the mirror
(it is rebuilt from the database on next use) instead of leaving it ahead of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from slotengine.domain import policy
from slotengine.domain.errors import SlotNotFound
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.redis import scripts
from slotengine.service.engine import Engine

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
# The mirror outlives the slot by a day, then Redis may drop it; it is rebuildable anyway.
_MIRROR_GRACE = timedelta(days=1)

_EXPIRED_BY_TTL = transition(BookingState.RESERVED, Event.EXPIRE, Role.SYSTEM)
_LAPSED_IN_QUEUE = transition(BookingState.PENDING, Event.LAPSE, Role.SYSTEM)
_PROMOTED = transition(BookingState.PENDING, Event.PROMOTE, Role.SYSTEM)


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Change:
    """One booking's transition, announced on the slot's channel after commit."""

    booking_id: str
    from_state: BookingState | None
    to_state: BookingState
    event: str


@dataclass
class SlotTransaction:
    engine: Engine
    conn: BaseDBAsyncClient
    slot_id: UUID
    capacity: int
    hold_seconds: int
    closed: bool
    starts_at: datetime
    ends_at: datetime
    now: datetime  # PostgreSQL's now(): the one clock that decides
    mirror_stale: bool = False
    changes: list[Change] = field(default_factory=list)
    # Holds granted in this transaction, each to be expired when due: (booking, fence, expiry).
    holds_granted: list[tuple[UUID, int, datetime]] = field(default_factory=list)
    queue_joined: bool = False

    @property
    def slot_key(self) -> str:
        return str(self.slot_id)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return await self.conn.execute_query_dict(sql, list(args))

    async def fetch_one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def record(
        self,
        booking_id: UUID,
        from_state: BookingState | None,
        to_state: BookingState,
        event: Event,
        actor: str,
        *,
        reason: str | None = None,
        fence: int | None = None,
    ) -> None:
        """Write one audit row, in this transaction, for a change already made."""
        await self.conn.execute_query(
            "INSERT INTO transitions (booking_id, from_state, to_state, event, actor, reason, fence)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [booking_id, from_state, to_state, event.value, actor, reason, fence],
        )
        self.changes.append(Change(str(booking_id), from_state, to_state, event.value))
        self.mirror_stale = True

    async def issue_fence(self) -> int:
        """The next fence token of this slot; strictly greater than any issued before."""
        row = await self.fetch_one(
            "UPDATE slots SET fence = fence + 1 WHERE id = $1 RETURNING fence", self.slot_id
        )
        assert row is not None
        return int(row["fence"])

    async def settle(self) -> None:
        """Expire lapsed holds, lapse a queue whose slot started, offer free units to the queue."""
        expired = await self.fetch(
            "WITH lapsed AS ("
            "  UPDATE bookings SET state = $2, unit = NULL, updated_at = now()"
            "  WHERE slot_id = $1 AND state = 'RESERVED' AND expires_at <= now()"
            "  RETURNING id, fence)"
            " INSERT INTO transitions (booking_id, from_state, to_state, event, actor, fence)"
            " SELECT id, 'RESERVED', $2, $3, $4, fence FROM lapsed RETURNING booking_id",
            self.slot_id,
            _EXPIRED_BY_TTL,
            Event.EXPIRE.value,
            SYSTEM_ACTOR,
        )
        for row in expired:
            self.changes.append(
                Change(str(row["booking_id"]), BookingState.RESERVED, _EXPIRED_BY_TTL, "expire")
            )
        if expired:
            self.mirror_stale = True
        if policy.queue_has_lapsed(self.starts_at, self.now):
            await self._lapse_queue()
        else:
            await self.promote()

    async def _lapse_queue(self) -> None:
        lapsed = await self.fetch(
            "WITH lapsed AS ("
            "  UPDATE bookings SET state = $2, updated_at = now()"
            "  WHERE slot_id = $1 AND state = 'PENDING' RETURNING id)"
            " INSERT INTO transitions (booking_id, from_state, to_state, event, actor, reason)"
            " SELECT id, 'PENDING', $2, $3, $4, 'the slot started' FROM lapsed"
            " RETURNING booking_id",
            self.slot_id,
            _LAPSED_IN_QUEUE,
            Event.LAPSE.value,
            SYSTEM_ACTOR,
        )
        for row in lapsed:
            self.changes.append(
                Change(str(row["booking_id"]), BookingState.PENDING, _LAPSED_IN_QUEUE, "lapse")
            )
        if lapsed:
            self.mirror_stale = True

    async def taken_units(self) -> list[int]:
        rows = await self.fetch(
            "SELECT unit FROM bookings WHERE slot_id = $1 AND unit IS NOT NULL", self.slot_id
        )
        return [int(r["unit"]) for r in rows]

    async def promote(self) -> None:
        """Offer each free unit to the head of the queue, in arrival order."""
        free = policy.free_units(self.capacity, await self.taken_units())
        if not free:
            return
        heads = await self.fetch(
            "SELECT id FROM bookings WHERE slot_id = $1 AND state = 'PENDING' ORDER BY queue_seq LIMIT $2",
            self.slot_id,
            len(free),
        )
        expires_at = policy.hold_expiry(self.now, self.hold_seconds)
        for booking_id, unit in policy.promotions(free, [r["id"] for r in heads]):
            fence = await self.issue_fence()
            await self.conn.execute_query(
                "UPDATE bookings SET state = $2, unit = $3, fence = $4, expires_at = $5,"
                " updated_at = now() WHERE id = $1 AND state = 'PENDING'",
                [booking_id, _PROMOTED, unit, fence, expires_at],
            )
            self.holds_granted.append((booking_id, fence, expires_at))
            await self.record(
                booking_id,
                BookingState.PENDING,
                _PROMOTED,
                Event.PROMOTE,
                SYSTEM_ACTOR,
                fence=fence,
            )

    async def queue_position(self, queue_seq: int) -> int:
        row = await self.fetch_one(
            "SELECT count(*) AS n FROM bookings WHERE slot_id = $1 AND state = 'PENDING' AND queue_seq <= $2",
            self.slot_id,
            queue_seq,
        )
        assert row is not None
        return int(row["n"])

    async def sync_mirror(self) -> None:
        """Write this slot's state, as this transaction sees it, over the Redis mirror."""
        waiting = await self.fetch(
            "SELECT id, state, expires_at, queue_seq FROM bookings"
            " WHERE slot_id = $1 AND state IN ('RESERVED', 'PENDING') ORDER BY queue_seq",
            self.slot_id,
        )
        settled = await self.fetch_one(
            "SELECT count(*) AS n FROM bookings WHERE slot_id = $1 AND state IN ('CONFIRMED', 'COMPLETED')",
            self.slot_id,
        )
        assert settled is not None
        holds: list[Any] = []
        queue: list[Any] = []
        for row in waiting:
            if row["state"] == BookingState.RESERVED:
                holds += [epoch_ms(row["expires_at"]), str(row["id"])]
            else:
                queue += [row["queue_seq"], str(row["id"])]
        await scripts.sync_slot(
            self.engine.redis,
            self.engine.keys(self.slot_key).all(),
            [
                self.capacity,
                settled["n"],
                int(self.closed),
                epoch_ms(self.ends_at + _MIRROR_GRACE),
                len(holds) // 2,
                *holds,
                *queue,
            ],
        )
        self.mirror_stale = False


@contextlib.asynccontextmanager
async def slot_transaction(
    engine: Engine, slot_id: UUID, *, skip_locked: bool = False
) -> AsyncIterator[SlotTransaction]:
    """Lock the slot's row for one transaction; commit, then set timers and announce changes.

    With `skip_locked`, a slot another transaction holds raises SlotBusy instead of waiting.
    """
    tx: SlotTransaction | None = None
    try:
        async with in_transaction() as conn:
            rows = await conn.execute_query_dict(
                "SELECT capacity, hold_seconds, closed, starts_at, ends_at, now() AS db_now"
                " FROM slots WHERE id = $1 FOR UPDATE" + (" SKIP LOCKED" if skip_locked else ""),
                [slot_id],
            )
            if not rows and skip_locked:
                raise SlotBusy(str(slot_id))
            if not rows:
                raise SlotNotFound(str(slot_id))
            row = rows[0]
            tx = SlotTransaction(
                engine=engine,
                conn=conn,
                slot_id=slot_id,
                capacity=row["capacity"],
                hold_seconds=row["hold_seconds"],
                closed=row["closed"],
                starts_at=row["starts_at"],
                ends_at=row["ends_at"],
                now=row["db_now"],
            )
            yield tx
            if tx.mirror_stale:
                await tx.sync_mirror()
    except BaseException:
        if tx is not None:
            # The mirror may now be ahead of what was rolled back; drop it, it is rebuildable.
            await asyncio.shield(_drop_mirror(engine, tx.slot_key))
        raise
    assert tx is not None
    await _set_timers(engine, tx)
    if tx.changes:
        await _announce(engine, tx.slot_key, tx.changes)


class SlotBusy(Exception):
    """Another transaction holds the slot's lock (raised only with skip_locked)."""


async def _set_timers(engine: Engine, tx: SlotTransaction) -> None:
    try:
        for booking_id, fence, expires_at in tx.holds_granted:
            await engine.timers.expire_hold_at(booking_id, fence, expires_at)
        if tx.queue_joined:
            await engine.timers.settle_slot_at(tx.slot_id, tx.starts_at)
    except Exception:  # lazy expiry and the sweep still end these holds, only later
        log.exception("could not set timers for slot %s", tx.slot_key)


async def _drop_mirror(engine: Engine, slot_id: str) -> None:
    try:
        await engine.redis.delete(*engine.keys(slot_id).all())
    except Exception:  # the next use rebuilds it either way
        log.exception("could not drop the Redis mirror of slot %s", slot_id)


async def _announce(engine: Engine, slot_id: str, changes: list[Change]) -> None:
    message = json.dumps(
        {
            "slotId": slot_id,
            "changes": [
                {
                    "bookingId": c.booking_id,
                    "from": c.from_state,
                    "to": c.to_state,
                    "event": c.event,
                }
                for c in changes
            ],
        }
    )
    try:
        await engine.redis.publish(engine.channel(slot_id), message)
    except Exception:  # committed is committed; listeners re-read state on reconnect
        log.exception("could not announce changes of slot %s", slot_id)
