"""Read flood scenario: a legitimate reserve's latency, quiet and while anonymous readers flood `slots`.

Readers run as the resolver runs them (read allowance, then the readers' connection budget, then
one page of 50 slots with counts), from many addresses and with no read allowance, the worst case
for the budget. Prints reserve p99 quiet, during the flood with the budget (the setting's default)
and without it (readers may take the whole pool), and each ratio to the quiet p99 of this run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from datetime import UTC, datetime, timedelta

from bench.harness import bench_engine, percentile, summary
from slotengine.domain.errors import DomainError
from slotengine.domain.policy import SlotSpec
from slotengine.service import queries
from slotengine.service.engine import Engine
from slotengine.service.rate_limit import admitted_read
from slotengine.service.read_gate import ReadGate
from slotengine.service.reservations import reserve_slot
from slotengine.service.views import Caller

SLOTS = 400
READERS = 60
RESERVES = 200
ADMIN = Caller("bench-admin", admin=True)


async def _reserves(engine: Engine, slots: list[str], tag: str) -> list[float]:
    """RESERVES reserves, ten at a time, each on a slot of its own; their latencies in ms."""
    latencies: list[float] = []
    turn = asyncio.Semaphore(10)

    async def one(i: int) -> None:
        async with turn:
            began = time.perf_counter()
            await reserve_slot(engine, Caller(f"{tag}-{i}"), slots[i % len(slots)], f"k-{tag}")
            latencies.append((time.perf_counter() - began) * 1000)

    await asyncio.gather(*(one(i) for i in range(RESERVES)))
    return latencies


async def _flood(engine: Engine, stop: asyncio.Event, answered: list[int]) -> None:
    async def reader(i: int) -> None:
        while not stop.is_set():
            with contextlib.suppress(DomainError):  # Busy: the budget said no; ask again
                async with admitted_read(engine, f"ip:10.1.{i // 256}.{i % 256}"):
                    await queries.list_slots(engine, "bench-read", None, None, False, 50)
                answered[0] += 1

    await asyncio.gather(*(reader(i) for i in range(READERS)))


async def run() -> None:
    async with bench_engine() as (engine, settings):
        engine = dataclasses.replace(engine, read_rate_per_minute=0)
        starts = datetime.now(UTC) + timedelta(hours=1)
        slots = [
            (
                await queries.create_slot(
                    engine,
                    ADMIN,
                    SlotSpec(
                        "bench-read",
                        starts + timedelta(minutes=i),
                        starts + timedelta(minutes=i + 30),
                        1_000,
                        120,
                    ),
                )
            ).id
            for i in range(SLOTS)
        ]
        await _reserves(engine, slots, "warm")
        quiet = await _reserves(engine, slots, "quiet")
        print(summary("reserve, quiet", quiet))
        budgets = (
            ("with the readers' budget", engine.read_gate),
            ("without it", ReadGate(connections=settings.db_pool_size * 10, wait_seconds=60)),
        )
        for label, gate in budgets:
            flooded = dataclasses.replace(engine, read_gate=gate)
            stop, answered = asyncio.Event(), [0]
            flood = asyncio.create_task(_flood(flooded, stop, answered))
            await asyncio.sleep(0.5)  # the flood is under way
            began = time.perf_counter()
            during = await _reserves(flooded, slots, f"flood-{len(label)}")
            elapsed = time.perf_counter() - began
            stop.set()
            await flood
            ratio = percentile(during, 99) / percentile(quiet, 99)
            print(summary(f"reserve, {READERS} readers, {label}", during))
            print(
                f"  reads answered {answered[0] / elapsed:7.0f}/s;"
                f" reserve p99 = {ratio:.2f} x quiet (pool {settings.db_pool_size},"
                f" readers' budget {gate.connections})"
            )
