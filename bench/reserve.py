"""Reservation scenario: 200 holders race for one slot, over the GraphQL API in process.

Prints reservations per second and per-request latency for capacity 1 (everyone after the
first queues) and for 200 slots raced at once (no contention on one slot lock)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from bench.harness import bench_engine, summary
from slotengine.domain.policy import SlotSpec
from slotengine.service import queries
from slotengine.service.reservations import reserve_slot
from slotengine.service.views import Caller

HOLDERS = 200
ADMIN = Caller("bench-admin", admin=True)


async def run() -> None:
    async with bench_engine() as (engine, _):
        starts = datetime.now(UTC) + timedelta(hours=1)

        async def slot() -> str:
            spec = SlotSpec("bench", starts, starts + timedelta(minutes=30), 1, 120)
            return (await queries.create_slot(engine, ADMIN, spec)).id

        async def timed(caller: Caller, slot_id: str) -> float:
            began = time.perf_counter()
            await reserve_slot(engine, caller, slot_id, "k")
            return (time.perf_counter() - began) * 1000

        for label, slots in (
            ("one slot", [await slot()] * HOLDERS),
            ("200 slots", [await slot() for _ in range(HOLDERS)]),
        ):
            began = time.perf_counter()
            latencies = await asyncio.gather(*(timed(Caller(f"{label}-{i}"), s) for i, s in enumerate(slots)))
            elapsed = time.perf_counter() - began
            print(f"reserve, {HOLDERS} concurrent, {label}: {HOLDERS / elapsed:7.0f} reservations/s")
            print(summary(f"  latency ({label})", list(latencies)))
