"""Queue length (issue 14): is a reserve, and a cancel that promotes, as cheap behind 100,000
waiters as behind 10?

Two capacity-1 slots, one holder each, one with 10 waiters and one with 100,000 (10,000 with
--quick). Each sample, on each slot in turn: a newcomer reserves (timed: joins the queue), then
the current holder's hold is cancelled (timed: the cancel commits the head's promotion in the
same transaction), so the queue keeps its length. Service functions are called in this process
(no HTTP), so the figures are the engine's own cost. Figures: p50s and the ratio big/small.

Building the big queue: first through the engine's own reserve_slot, in concurrent batches, for
up to a time budget; whatever is left then goes in by one bulk SQL insert of the same rows the
engine writes (booking PENDING, its audit row, its idempotency record), after which the engine's
own settle_slot rebuilds the slot's Redis mirror from PostgreSQL. The output says how many each
way took.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench.harness import bench_engine, percentile
from slotengine.domain.policy import SlotSpec
from slotengine.domain.states import BookingState, Event
from slotengine.service import queries
from slotengine.service.engine import Engine
from slotengine.service.reservations import cancel_booking, reserve_slot, settle_slot
from slotengine.service.views import Caller
from slotengine.store.database import connection

ADMIN = Caller("bench-admin", admin=True)
SMALL = 10
BATCH = 200

_BULK_QUEUE = (
    "WITH booking AS ("
    "  INSERT INTO bookings (id, slot_id, holder, state, idempotency_key)"
    "  SELECT gen_random_uuid(), $1, $2 || n, $3, 'k' FROM generate_series($4::integer, $5::integer) AS n"
    "  ORDER BY n RETURNING id, holder, state),"
    " audit AS ("
    # Written behind the engine's back at no version of the slot's (0): not a resumable trail.
    "  INSERT INTO transitions (booking_id, from_state, to_state, event, actor, slot_id, slot_version)"
    "  SELECT id, NULL, state, $6, holder, $1, 0 FROM booking)"
    " INSERT INTO idempotency_keys (holder, key, slot_id, booking_id) SELECT holder, 'k', $1, id FROM booking"
)


async def _slot(engine: Engine) -> str:
    starts = datetime.now(UTC) + timedelta(hours=2)
    spec = SlotSpec("bench-queue", starts, starts + timedelta(minutes=30), 1, 3600)
    slot_id = (await queries.create_slot(engine, ADMIN, spec)).id
    await reserve_slot(engine, Caller(f"{slot_id}-first"), slot_id, "k")
    return slot_id


async def _fill(engine: Engine, slot_id: str, waiters: int, budget: float) -> tuple[int, float]:
    """Queue `waiters` on the slot: (how many through reserve_slot, seconds that took)."""
    began = time.perf_counter()
    done = 0
    while done < waiters and time.perf_counter() - began < budget:
        batch = min(BATCH, waiters - done)
        await asyncio.gather(
            *(reserve_slot(engine, Caller(f"{slot_id}-w{done + i}"), slot_id, "k") for i in range(batch))
        )
        done += batch
    through_service, seconds = done, time.perf_counter() - began
    if done < waiters:
        await connection().execute_query(
            _BULK_QUEUE,
            [
                uuid.UUID(slot_id),
                f"{slot_id}-w",
                BookingState.PENDING.value,
                done,
                waiters - 1,
                Event.QUEUE.value,
            ],
        )
        await settle_slot(engine, uuid.UUID(slot_id))  # the engine rebuilds its Redis mirror
    return through_service, seconds


async def _holder(slot_id: str) -> str:
    rows = await connection().execute_query_dict(
        "SELECT id FROM bookings WHERE slot_id = $1 AND state = $2", [slot_id, BookingState.RESERVED.value]
    )
    assert len(rows) == 1, rows
    return str(rows[0]["id"])


async def _queue_length(slot_id: str) -> int:
    rows = await connection().execute_query_dict(
        "SELECT count(*) AS n FROM bookings WHERE slot_id = $1 AND state = $2",
        [slot_id, BookingState.PENDING.value],
    )
    return int(rows[0]["n"])


async def run(*, quick: bool = False) -> None:
    big, samples, budget = (10_000, 10, 20.0) if quick else (100_000, 15, 30.0)
    async with bench_engine() as (engine, _):
        slots = {SMALL: await _slot(engine), big: await _slot(engine)}
        for waiters, slot_id in slots.items():
            through_service, seconds = await _fill(engine, slot_id, waiters, budget)
            rate = through_service / seconds if seconds else 0.0
            print(
                f"  queue of {waiters:>7,}: {through_service:,} through reserve_slot ({rate:.0f}/s,"
                f" batches of {BATCH}), {waiters - through_service:,} by bulk SQL + settle_slot",
                flush=True,
            )
        reserve_ms: dict[int, list[float]] = {n: [] for n in slots}
        promote_ms: dict[int, list[float]] = {n: [] for n in slots}
        for sample in range(samples):
            for waiters, slot_id in slots.items():
                began = time.perf_counter()
                booking = await reserve_slot(engine, Caller(f"{slot_id}-new{sample}"), slot_id, "k")
                reserve_ms[waiters].append((time.perf_counter() - began) * 1000)
                assert booking.state is BookingState.PENDING and booking.queue_position == waiters + 1, (
                    booking
                )
                holder = await _holder(slot_id)
                began = time.perf_counter()
                await cancel_booking(engine, ADMIN, holder, None)
                promote_ms[waiters].append((time.perf_counter() - began) * 1000)
                assert await _holder(slot_id) != holder  # the head of the queue holds now
        for waiters, slot_id in slots.items():
            assert await _queue_length(slot_id) == waiters
        for name, figures in (
            ("reserve (joins the queue)", reserve_ms),
            ("cancel -> head promoted", promote_ms),
        ):
            small, large = percentile(figures[SMALL], 50), percentile(figures[big], 50)
            print(
                f"  {name:<28} p50 with {SMALL} waiters {small:8.1f} ms, with {big:,} {large:8.1f} ms:"
                f" ratio {large / small:6.2f} (target <= 1.2)",
                flush=True,
            )
