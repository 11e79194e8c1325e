"""Group holds across 5 slots against single reserves, in the same run, in process.

Each round reserves on fresh, free slots (no queue, no contention between calls), CONCURRENCY
calls in flight at a time: OPERATIONS single reserveSlot calls, then OPERATIONS reserveSlots
calls of 5 slots each. Rounds alternate, and the figures are printed with the ratio group/single:
a group takes 5 slot locks, settles 5 slots and writes 5 bookings in one transaction, so the
question is what all-or-nothing costs over 5 separate holds (5.0 would be "as dear as 5 singles").
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from bench.harness import bench_engine, percentile, summary
from slotengine.domain.policy import SlotSpec
from slotengine.service import groups, queries
from slotengine.service.engine import Engine
from slotengine.service.reservations import reserve_slot
from slotengine.service.views import Caller

GROUP_SIZE = 5
CONCURRENCY = 50
ADMIN = Caller("bench-admin", admin=True)


async def _slots(engine: Engine, count: int) -> list[str]:
    starts = datetime.now(UTC) + timedelta(days=2)
    spec = SlotSpec("bench-groups", starts, starts + timedelta(minutes=30), 1, 120)
    made = []
    for _ in range(count):
        made.append((await queries.create_slot(engine, ADMIN, spec)).id)
    return made


async def _closed_loop(calls: list[Callable[[], Awaitable[object]]]) -> tuple[float, list[float]]:
    """Run the calls CONCURRENCY at a time; (calls per second, latencies in ms)."""
    pending = iter(calls)
    latencies: list[float] = []

    async def lane() -> None:
        for call in pending:
            began = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    return len(calls) / (time.perf_counter() - began), latencies


async def run(quick: bool = False) -> None:
    operations = 200 if quick else 600
    rounds = 1 if quick else 3
    async with bench_engine() as (engine, _):
        singles: list[tuple[float, float]] = []
        grouped: list[tuple[float, float]] = []
        for round_no in range(rounds):
            run_id = uuid.uuid4().hex[:6]
            one = await _slots(engine, operations)
            rate, latencies = await _closed_loop(
                [
                    (lambda i=i, s=s, r=run_id: reserve_slot(engine, Caller(f"s-{r}-{i}"), s, "k"))
                    for i, s in enumerate(one)
                ]
            )
            singles.append((rate, percentile(latencies, 99)))
            print(f"round {round_no + 1}: single reserves  {rate:7.0f}/s  " + summary("", latencies).strip())
            five = await _slots(engine, operations * GROUP_SIZE)
            sets = [five[i : i + GROUP_SIZE] for i in range(0, len(five), GROUP_SIZE)]
            rate, latencies = await _closed_loop(
                [
                    (lambda i=i, s=s, r=run_id: groups.reserve_slots(engine, Caller(f"g-{r}-{i}"), s, "k"))
                    for i, s in enumerate(sets)
                ]
            )
            grouped.append((rate, percentile(latencies, 99)))
            print(f"round {round_no + 1}: 5-slot groups   {rate:7.0f}/s  " + summary("", latencies).strip())
        single_rate = sorted(r for r, _ in singles)[len(singles) // 2]
        group_rate = sorted(r for r, _ in grouped)[len(grouped) // 2]
        single_p99 = sorted(p for _, p in singles)[len(singles) // 2]
        group_p99 = sorted(p for _, p in grouped)[len(grouped) // 2]
        # Ratios within a round are steadier than absolute figures on a shared machine.
        rates = sorted(g[0] / s[0] for s, g in zip(singles, grouped, strict=True))
        p99s = sorted(g[1] / s[1] for s, g in zip(singles, grouped, strict=True))
        print(
            f"median of {rounds} rounds, {CONCURRENCY} in flight:"
            f" single {single_rate:.0f}/s p99 {single_p99:.1f} ms;"
            f" 5-slot group {group_rate:.0f}/s ({group_rate * GROUP_SIZE:.0f} slot holds/s)"
            f" p99 {group_p99:.1f} ms"
        )
        print(
            f"group/single, per round: throughput {' '.join(f'{r:.2f}' for r in rates)}"
            f" (median {rates[len(rates) // 2]:.2f}); p99 {' '.join(f'{r:.2f}' for r in p99s)}"
            f" (median {p99s[len(p99s) // 2]:.2f})"
        )
