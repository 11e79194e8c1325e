"""One database transaction holding a slot's row lock: the only way a slot's bookings change.

Every change to a slot's bookings runs here, so changes to one slot are serialized by
PostgreSQL, the Redis mirror is written in the same order, and a failure drops the mirror
(it is rebuilt from the database on next use) instead of leaving it ahead of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from slotengine.domain import policy
from slotengine.domain.errors import SlotNotFound
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.metrics import TRANSACTION_RETRIES, lateness_fields
from slotengine.redis import scripts
from slotengine.redis.clock import epoch_ms
from slotengine.redis.keys import expiry_lateness_key
from slotengine.service.engine import Engine
from slotengine.service.timers import expire_hold_schedule, settle_slot_schedule

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
# The mirror outlives the slot by a day, then Redis may drop it; it is rebuildable anyway.
_MIRROR_GRACE = timedelta(days=1)

_EXPIRED_BY_TTL = transition(BookingState.RESERVED, Event.EXPIRE, Role.SYSTEM)
_LAPSED_IN_QUEUE = transition(BookingState.PENDING, Event.LAPSE, Role.SYSTEM)
_PROMOTED = transition(BookingState.PENDING, Event.PROMOTE, Role.SYSTEM)


@dataclass(frozen=True, slots=True)
class Change:
    """One booking's transition, announced on the slot's channel after commit."""

    booking_id: str
    from_state: BookingState | None
    to_state: BookingState
    event: str
    # Place in the queue at the moment the booking joined or left it (changes apply in order).
    position: int | None = None
    expires_at: datetime | None = None  # of a hold this change granted


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
    version: int = 0  # the slot's version once this transaction's changes are counted
    # Holds granted in this transaction, each to be expired when due: (booking, fence, expiry).
    holds_granted: list[tuple[UUID, int, datetime]] = field(default_factory=list)
    queue_joined: bool = False
    # Seconds from expiresAt to this transaction's clock, for each hold it found lapsed.
    expiry_lateness: list[float] = field(default_factory=list)
    # Snapshot taken by settle() and kept current by this transaction's own changes.
    taken: list[int] = field(default_factory=list)
    waiting: int = 0

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
        position: int | None = None,
    ) -> None:
        """Write one audit row, in this transaction, for a change already made."""
        await self.conn.execute_query(
            "INSERT INTO transitions (booking_id, from_state, to_state, event, actor, reason, fence)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [booking_id, from_state, to_state, event.value, actor, reason, fence],
        )
        self.changes.append(Change(str(booking_id), from_state, to_state, event.value, position))
        self.mirror_stale = True

    async def queue_position(self, queue_seq: int) -> int:
        """Place in this slot's queue of the waiting booking with `queue_seq` (1 = next)."""
        row = await self.fetch_one(
            "SELECT count(*) AS n FROM bookings WHERE slot_id = $1 AND state = 'PENDING' AND queue_seq <= $2",
            self.slot_id,
            queue_seq,
        )
        assert row is not None
        return int(row["n"])

    async def settle(self) -> None:
        """Expire lapsed holds, lapse a queue whose slot started, offer free units to the queue.

        Also takes the snapshot (taken units, queue length) the rest of the transaction uses.
        """
        # A data-modifying CTE's outer query sees the rows as they were before the UPDATE,
        # hence the lapsed holds are left out of the taken units by hand.
        row = await self.fetch_one(
            "WITH lapsed AS ("
            "  UPDATE bookings SET state = $2, unit = NULL, updated_at = now()"
            "  WHERE slot_id = $1 AND state = 'RESERVED' AND expires_at <= now()"
            "  RETURNING id, fence, EXTRACT(EPOCH FROM clock_timestamp() - expires_at) AS late),"
            " audit AS ("
            "  INSERT INTO transitions (booking_id, from_state, to_state, event, actor, fence)"
            "  SELECT id, 'RESERVED', $2, $3, $4, fence FROM lapsed RETURNING booking_id)"
            " SELECT"
            "  ARRAY(SELECT booking_id FROM audit) AS expired,"
            "  ARRAY(SELECT late FROM lapsed) AS lateness,"
            "  ARRAY(SELECT unit FROM bookings WHERE slot_id = $1 AND unit IS NOT NULL"
            "        AND id NOT IN (SELECT id FROM lapsed)) AS taken,"
            "  (SELECT count(*) FROM bookings WHERE slot_id = $1 AND state = 'PENDING') AS waiting",
            self.slot_id,
            _EXPIRED_BY_TTL,
            Event.EXPIRE.value,
            SYSTEM_ACTOR,
        )
        assert row is not None
        self.taken = list(row["taken"])
        self.waiting = int(row["waiting"])
        self.expiry_lateness = [float(seconds) for seconds in row["lateness"]]
        for booking_id in row["expired"]:
            self.changes.append(Change(str(booking_id), BookingState.RESERVED, _EXPIRED_BY_TTL, "expire"))
        if row["expired"]:
            self.mirror_stale = True
        if policy.queue_has_lapsed(self.starts_at, self.now):
            await self._lapse_queue()
        else:
            await self.promote()

    async def _lapse_queue(self) -> None:
        if not self.waiting:
            return
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
                Change(str(row["booking_id"]), BookingState.PENDING, _LAPSED_IN_QUEUE, "lapse", 1)
            )
        self.waiting = 0
        self.mirror_stale = True

    def unit_released(self, unit: int | None) -> None:
        """Keep the snapshot true after a booking in this transaction gave up its unit."""
        if unit is not None:
            self.taken.remove(unit)

    async def promote(self) -> None:
        """Offer each free unit to the head of the queue, in arrival order."""
        free = policy.free_units(self.capacity, self.taken)
        if not free or not self.waiting:
            return
        heads = await self.fetch(
            "SELECT id FROM bookings WHERE slot_id = $1 AND state = 'PENDING' ORDER BY queue_seq LIMIT $2",
            self.slot_id,
            len(free),
        )
        expires_at = policy.hold_expiry(self.now, self.hold_seconds, self.ends_at)
        for booking_id, unit in policy.promotions(free, [r["id"] for r in heads]):
            row = await self.fetch_one(
                "WITH fence AS (UPDATE slots SET fence = fence + 1 WHERE id = $2 RETURNING fence),"
                " promoted AS ("
                "  UPDATE bookings SET state = $3, unit = $4, expires_at = $5, updated_at = now(),"
                "   fence = (SELECT fence FROM fence)"
                "  WHERE id = $1 AND state = 'PENDING' RETURNING id, fence)"
                " INSERT INTO transitions (booking_id, from_state, to_state, event, actor, fence)"
                " SELECT id, 'PENDING', $3, $6, $7, fence FROM promoted RETURNING fence",
                booking_id,
                self.slot_id,
                _PROMOTED,
                unit,
                expires_at,
                Event.PROMOTE.value,
                SYSTEM_ACTOR,
            )
            assert row is not None  # the slot lock keeps the queue as we read it
            self.taken.append(unit)
            self.waiting -= 1
            self.holds_granted.append((booking_id, int(row["fence"]), expires_at))
            # Each promotion takes the head of the queue as it stands at that moment.
            self.changes.append(
                Change(str(booking_id), BookingState.PENDING, _PROMOTED, "promote", 1, expires_at)
            )
            self.mirror_stale = True

    async def sync_mirror(self) -> None:
        """Write this slot's state, as this transaction sees it, over the Redis mirror."""
        rows = await self.fetch(
            "SELECT id, state, expires_at, queue_seq FROM bookings WHERE slot_id = $1"
            " AND state IN ('RESERVED', 'PENDING', 'CONFIRMED', 'COMPLETED') ORDER BY queue_seq",
            self.slot_id,
        )
        holds: list[Any] = []
        queue: list[Any] = []
        settled = 0
        for row in rows:
            if row["state"] == BookingState.RESERVED:
                holds += [epoch_ms(row["expires_at"]), str(row["id"])]
            elif row["state"] == BookingState.PENDING:
                queue += [row["queue_seq"], str(row["id"])]
            else:
                settled += 1
        await scripts.sync_slot(
            self.engine.redis,
            self.engine.keys(self.slot_key).all(),
            _mirror_args(self.capacity, settled, self.closed, self.ends_at, holds, queue),
        )
        self.mirror_stale = False


def _mirror_args(
    capacity: int, settled: int, closed: bool, ends_at: datetime, holds: list[Any], queue: list[Any]
) -> list[Any]:
    """sync_slot.lua's ARGV: holds and queue are flat (score, booking id) pairs."""
    return [
        capacity,
        settled,
        int(closed),
        epoch_ms(ends_at + _MIRROR_GRACE),
        len(holds) // 2,
        *holds,
        *queue,
    ]


async def mirror_new_slots(engine: Engine, slots: Sequence[tuple[UUID, int, datetime]]) -> None:
    """Write the mirrors of unbooked, open slots given as (id, capacity, ends_at), in one round trip."""
    calls = [
        (engine.keys(str(slot_id)).all(), _mirror_args(capacity, 0, False, ends_at, [], []))
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
            if tx.changes:
                bumped = await tx.fetch_one(
                    "UPDATE slots SET version = version + 1 WHERE id = $1 RETURNING version", slot_id
                )
                assert bumped is not None
                tx.version = int(bumped["version"])
            if tx.mirror_stale:
                await tx.sync_mirror()
    except BaseException:
        if tx is not None:
            # The mirror may now be ahead of what was rolled back; drop it, it is rebuildable.
            await asyncio.shield(_drop_mirror(engine, tx.slot_key))
        raise
    assert tx is not None
    await _after_commit(engine, tx)


class SlotBusy(Exception):
    """Another transaction holds the slot's lock (raised only with skip_locked)."""


# PostgreSQL aborts one side of a conflict with these (serialization_failure,
# deadlock_detected); the same transaction run again normally succeeds.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
TRANSACTION_ATTEMPTS = 5
_BACKOFF_FIRST_SECONDS = 0.01
_BACKOFF_CAP_SECONDS = 0.25

P = ParamSpec("P")
T = TypeVar("T")


def retryable_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE if `exc` (or what it was raised from) is a conflict worth running again."""
    seen: BaseException | None = exc
    while seen is not None:
        sqlstate = getattr(seen, "sqlstate", None)
        if sqlstate in RETRYABLE_SQLSTATES:
            return str(sqlstate)
        seen = seen.__cause__  # Tortoise wraps driver errors with `raise … from exc`
    return None


def retry_conflicts(work: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run `work` (whole slot transactions) again, with jittered backoff, after a conflict abort;
    only a committed attempt sets timers and announces changes, so retries never double them."""

    @functools.wraps(work)
    async def attempts(*args: P.args, **kwargs: P.kwargs) -> T:
        attempt = 1
        while True:
            try:
                return await work(*args, **kwargs)
            except Exception as exc:
                sqlstate = retryable_sqlstate(exc)
                if sqlstate is None or attempt >= TRANSACTION_ATTEMPTS:
                    raise
                TRANSACTION_RETRIES.labels(sqlstate).inc()
                log.warning(
                    "%s aborted by PostgreSQL (%s), attempt %d of %d: running it again",
                    work.__qualname__,
                    sqlstate,
                    attempt,
                    TRANSACTION_ATTEMPTS,
                )
                # Full jitter: the transactions that collided do not collide again in lockstep.
                ceiling = min(_BACKOFF_CAP_SECONDS, _BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(0, ceiling))
                attempt += 1

    return attempts


async def _after_commit(engine: Engine, tx: SlotTransaction) -> None:
    """Log and announce the changes and set the timers, in one round trip to Redis."""
    for change in tx.changes:
        log.info(
            "booking %s %s -> %s (%s)",
            change.booking_id,
            change.from_state or "new",
            change.to_state,
            change.event,
            extra={"slot_id": tx.slot_key, "booking_id": change.booking_id, "event": change.event},
        )
    schedules = [expire_hold_schedule(*hold) for hold in tx.holds_granted]
    if tx.queue_joined:
        schedules.append(settle_slot_schedule(tx.slot_id, tx.starts_at))
    if not schedules and not tx.changes:
        return
    try:
        async with engine.redis.pipeline(transaction=False) as pipe:
            engine.timers.add_to(pipe, schedules)
            if tx.changes:
                pipe.publish(engine.channel(tx.slot_key), _announcement(tx))
            lateness_key = expiry_lateness_key(engine.prefix)
            for name, increment in lateness_fields(tx.expiry_lateness).items():
                pipe.hincrbyfloat(lateness_key, name, increment)
            await pipe.execute()
    except Exception:
        # Committed is committed: lazy expiry and the sweep still end these holds (later), and
        # listeners re-read state when they reconnect.
        log.exception("could not set timers or announce changes of slot %s", tx.slot_key)


async def _drop_mirror(engine: Engine, slot_id: str) -> None:
    try:
        await engine.redis.delete(*engine.keys(slot_id).all())
    except Exception:  # the next use rebuilds it either way
        log.exception("could not drop the Redis mirror of slot %s", slot_id)


def _announcement(tx: SlotTransaction) -> str:
    return json.dumps(
        {
            "slotId": tx.slot_key,
            "version": tx.version,
            "changes": [
                {
                    "bookingId": c.booking_id,
                    "from": c.from_state,
                    "to": c.to_state,
                    "event": c.event,
                    "position": c.position,
                    "expiresAt": c.expires_at.isoformat() if c.expires_at else None,
                }
                for c in tx.changes
            ],
        }
    )
