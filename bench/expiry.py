"""Expiry scenario: 250 capacity-1 slots, each with a holder and a waiter, holdSeconds 2.

Every first hold lapses (250), its waiter is promoted and lapses in turn (250 more): 500 holds.
Lateness is read from the audit trail: EXPIRED committed minus expiresAt, and the waiter's
promotion committed minus the lapsed hold's expiresAt. Nobody calls the API meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from bench.harness import bench_engine, summary
from slotengine.domain.policy import SlotSpec
from slotengine.service import queries
from slotengine.service.reservations import reserve_slot
from slotengine.service.views import Caller
from slotengine.store.database import connection

SLOTS = 250
HOLD_SECONDS = 2
ADMIN = Caller("bench-admin", admin=True)


async def run() -> None:
    async with bench_engine(workers=2) as (engine, _):
        starts = datetime.now(UTC) + timedelta(hours=1)
        slot_ids = [
            (
                await queries.create_slot(
                    engine, ADMIN, SlotSpec("bench", starts, starts + timedelta(minutes=30), 1, HOLD_SECONDS)
                )
            ).id
            for _ in range(SLOTS)
        ]
        began = time.monotonic()
        await asyncio.gather(*(reserve_slot(engine, Caller(f"h{i}"), s, "k") for i, s in enumerate(slot_ids)))
        await asyncio.gather(*(reserve_slot(engine, Caller(f"w{i}"), s, "k") for i, s in enumerate(slot_ids)))
        print(f"expiry: {2 * SLOTS} reservations made in {time.monotonic() - began:.2f} s")
        db = connection()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = await db.execute_query_dict("SELECT count(*) AS n FROM transitions WHERE event = 'expire'")
            if rows[0]["n"] >= 2 * SLOTS:
                break
            await asyncio.sleep(0.2)
        expired = await db.execute_query_dict(
            "SELECT EXTRACT(EPOCH FROM t.at - b.expires_at) * 1000 AS late FROM transitions t"
            " JOIN bookings b ON b.id = t.booking_id WHERE t.event = 'expire'"
        )
        promoted = await db.execute_query_dict(
            "SELECT EXTRACT(EPOCH FROM p.at - h.expires_at) * 1000 AS late"
            " FROM transitions p JOIN bookings w ON w.id = p.booking_id"
            " JOIN bookings h ON h.slot_id = w.slot_id AND h.holder LIKE 'h%'"
            " WHERE p.event = 'promote'"
        )
        early = [float(r["late"]) for r in expired if float(r["late"]) < 0]
        print(summary("expiresAt -> EXPIRED committed", [float(r["late"]) for r in expired]))
        print(summary("expiresAt -> next holder RESERVED", [float(r["late"]) for r in promoted]))
        print(f"holds expired early: {len(early)}; holds never expired: {2 * SLOTS - len(expired)}")
