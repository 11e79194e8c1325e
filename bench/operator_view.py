"""The operator's view (issue 12): does a slotBookings page deep in a long queue cost what the first
page costs, and what does the fallback (no usable mirror: the places counted in PostgreSQL) cost?

One capacity-1 slot with one holder and 100,000 waiters (10,000 with --quick), queued by one bulk
SQL insert of the rows the engine writes (booking, audit row, idempotency record), after which the
engine's settle_slot rebuilds the slot's Redis mirror. Each sample reads a page of 200 waiters
(`states: [PENDING]`) at the front, the middle and the back of the queue, once with the mirror and
once right after dropping it; and the first page of slotHistory. Service functions are called in
this process (no HTTP): the figures are the engine's own cost. Every page's places are checked.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from bench.harness import bench_engine, percentile
from slotengine.domain.policy import SlotSpec
from slotengine.domain.states import BookingState, Event
from slotengine.service import operator_views, queries, sequence_cursor
from slotengine.service.mirror import drop_mirror
from slotengine.service.reservations import reserve_slot, settle_slot
from slotengine.service.views import Caller
from slotengine.store.database import connection

ADMIN = Caller("bench-admin", admin=True)
PAGE = 200

_BULK_QUEUE = (
    "WITH booking AS ("
    "  INSERT INTO bookings (id, slot_id, holder, state, idempotency_key)"
    "  SELECT gen_random_uuid(), $1, $2 || n, $3, 'k' FROM generate_series(1, $4::integer) AS n"
    "  ORDER BY n RETURNING id, holder, state),"
    " audit AS ("
    # Written behind the engine's back at no version of the slot's (0): not a resumable trail.
    "  INSERT INTO transitions (booking_id, from_state, to_state, event, actor, slot_id, slot_version)"
    "  SELECT id, NULL, state, $5, holder, $1, 0 FROM booking)"
    " INSERT INTO idempotency_keys (holder, key, slot_id, booking_id) SELECT holder, 'k', $1, id FROM booking"
)


async def run(*, quick: bool = False) -> None:
    waiters, samples = (10_000, 5) if quick else (100_000, 9)
    async with bench_engine() as (engine, _):
        starts = datetime.now(UTC) + timedelta(hours=2)
        spec = SlotSpec("bench-operator", starts, starts + timedelta(minutes=30), 1, 3600)
        slot_id = (await queries.create_slot(engine, ADMIN, spec)).id
        await reserve_slot(engine, Caller(f"{slot_id}-holder"), slot_id, "k")
        slot_uuid = uuid.UUID(slot_id)
        await connection().execute_query(
            _BULK_QUEUE,
            [slot_uuid, f"{slot_id}-w", BookingState.PENDING.value, waiters, Event.QUEUE.value],
        )
        await connection().execute_query("UPDATE slots SET waiting = $2 WHERE id = $1", [slot_uuid, waiters])
        await settle_slot(engine, slot_uuid)  # the engine rebuilds its Redis mirror
        seqs = await connection().execute_query_dict(
            "SELECT queue_seq FROM bookings WHERE slot_id = $1 AND state = $2 ORDER BY queue_seq",
            [slot_uuid, BookingState.PENDING.value],
        )
        assert len(seqs) == waiters
        # A page starts after the waiter before it: at the front, the middle and the back.
        starts_at = {"front": 0, "middle": waiters // 2, "back": waiters - PAGE}
        cursors = {
            where: sequence_cursor.encode(operator_views.BOOKINGS_LISTING, seqs[place - 1]["queue_seq"])
            if place
            else None
            for where, place in starts_at.items()
        }
        print(f"  a queue of {waiters:,} (bulk SQL + settle_slot), pages of {PAGE}", flush=True)
        figures: dict[str, list[float]] = {}
        for _ in range(samples):
            for mirrored in (True, False):
                for where, cursor in cursors.items():
                    if not mirrored:
                        await drop_mirror(engine, slot_id)
                    began = time.perf_counter()
                    page = await operator_views.slot_bookings(
                        engine, ADMIN, slot_id, {BookingState.PENDING}, PAGE, cursor
                    )
                    elapsed = (time.perf_counter() - began) * 1000
                    first_place = starts_at[where] + 1
                    assert [b.queue_position for b in page.items] == list(
                        range(first_place, first_place + PAGE)
                    ), where
                    name = f"slotBookings {where:<6} {'mirror' if mirrored else 'counted'}"
                    figures.setdefault(name, []).append(elapsed)
                await settle_slot(engine, slot_uuid)  # the mirror again (a settle rebuilds it)
            began = time.perf_counter()
            await operator_views.slot_history(engine, ADMIN, slot_id, 50)
            figures.setdefault("slotHistory first page of 50", []).append(
                (time.perf_counter() - began) * 1000
            )
        for name, values in figures.items():
            print(f"  {name:<34} p50 {percentile(values, 50):7.2f} ms  max {max(values):7.2f} ms", flush=True)
        for mode in ("mirror", "counted"):
            front = percentile(figures[f"slotBookings front  {mode}"], 50)
            back = percentile(figures[f"slotBookings back   {mode}"], 50)
            print(f"  {mode}: back/front p50 ratio {back / front:5.2f}", flush=True)
