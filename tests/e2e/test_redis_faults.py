"""Proof under fire, Redis: Redis killed and restarted empty under load, and its script cache
flushed under load. Redis is a mirror: nothing is lost or over-booked, mirrors are rebuilt from
PostgreSQL, holds whose timers died with Redis still expire, and no request fails once Redis
answers again."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from slotengine.config import Settings
from slotengine.embedded import EmbeddedServer, start_redis
from slotengine.redis import scripts
from slotengine.redis.connection import reconnecting
from slotengine.service.engine import Engine
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, GraphQL, token
from tests.e2e.fire import (
    CANCEL,
    CONFIRM,
    READ_SLOT,
    RESERVE,
    Call,
    Recorder,
    create_slot,
    fresh_database,
    mirror_mismatch,
    over_bookings,
    start_stack,
)

HOLD_SLOTS = 100  # capacity 2 each: 200 holds, and one waiter per slot
HOLD_SECONDS = 10  # outlives the setup and the outage: these holds' timers die with Redis
LOAD_SLOTS = 30
LOAD_CLIENTS = 8
# A hold whose timer was lost ends by its re-armed timer, or else by the sweep (every 2 s):
# expiresAt (or Redis back, if later) to EXPIRED committed and the next in line RESERVED.
EXPIRY_DEADLINE = timedelta(seconds=5)
# Timers are re-armed from PostgreSQL within about a second of Redis' return; a hold lapsing
# later than REARMED_AFTER ends as promptly as if Redis had never gone (the usual target).
REARMED_AFTER = timedelta(seconds=2)
LATENESS_TARGET = timedelta(seconds=1)
OUTAGE_SECONDS = 2.5  # at least; longer than the scheduler's sweep period (2 s)

# Its setup must answer 300 reservations within the holds' 10 s, which it misses in a session
# that measures coverage (even with this test paused), and its re-armed expiries must be on time,
# which another test's load beside it can spoil: `make test` runs it last, in a session of its own.
pytestmark = pytest.mark.alone


@dataclass
class Outage:
    killed: float = 0.0  # time.monotonic()
    back: float = 0.0

    def phase(self, call: Call) -> str:
        if not self.killed or call.ended < self.killed:
            return "before"
        if self.back and call.began > self.back:
            return "after"
        return "outage"


async def _load(
    recorder: Recorder, clients: list[httpx.AsyncClient], slots: list[str], stop: asyncio.Event, n: int
) -> None:
    """Reserve, then confirm, cancel or walk away, over and over, until told to stop."""
    rng = random.Random(n)
    for i in range(1_000_000):
        if stop.is_set():
            return
        http, holder = rng.choice(clients), token(f"load-{n}-{i}")
        booking = await recorder.send(http, "reserve", RESERVE, {"s": rng.choice(slots), "k": "k"}, holder)
        if booking is None or booking.get("__typename") != "Booking":
            continue
        roll = rng.random()
        if booking["state"] == "RESERVED" and roll < 0.5:
            confirmed = await recorder.send(http, "confirm", CONFIRM, {"b": booking["id"]}, holder)
            if confirmed and confirmed.get("state") == "CONFIRMED" and rng.random() < 0.6:
                await recorder.send(rng.choice(clients), "cancel", CANCEL, {"b": booking["id"]}, holder)
        elif roll < 0.8:
            await recorder.send(http, "cancel", CANCEL, {"b": booking["id"]}, holder)
        # else: walk away; the hold lapses, or the queue entry waits for its turn


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[list[EmbeddedServer]]:
    """A Redis server of this test's own; the list holds every incarnation started."""
    servers = [start_redis(tmp_path / "redis-1")]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_redis_killed_and_restarted_empty_under_load_loses_nothing(
    settings: Settings, postgres_server_url: str, own_redis: list[EmbeddedServer], tmp_path: Path
) -> None:
    database_url = await fresh_database(postgres_server_url)
    mine = settings.model_copy(
        update={"database_url": database_url, "redis_url": own_redis[0].url, "redis_prefix": "fire:"}
    )
    redis = Redis.from_url(own_redis[0].url, decode_responses=True, retry=reconnecting())
    db = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    stack = await start_stack(mine, redis, apis=2)
    recorder, outage, stop = Recorder(), Outage(), asyncio.Event()
    clients = [httpx.AsyncClient(base_url=base, timeout=30) for base in stack.apis]
    load: list[asyncio.Task[None]] = []
    try:
        hold_slots = [
            await create_slot(recorder, clients[i % 2], capacity=2, hold_seconds=HOLD_SECONDS)
            for i in range(HOLD_SLOTS)
        ]
        load_slots = [
            await create_slot(recorder, clients[i % 2], capacity=2, hold_seconds=3) for i in range(LOAD_SLOTS)
        ]
        load = [
            asyncio.create_task(_load(recorder, clients, load_slots, stop, n)) for n in range(LOAD_CLIENTS)
        ]

        # 200 holds and 100 waiters, all answered before Redis dies.
        gate = asyncio.Semaphore(16)

        async def reserve(slot_id: str, who: str, n: int) -> dict[str, Any]:
            async with gate:
                variables = {"s": slot_id, "k": "k"}
                answer = await recorder.send(clients[n % 2], "reserve", RESERVE, variables, token(who))
            assert answer is not None and answer["__typename"] == "Booking", recorder.calls[-1]
            return answer

        holds = await asyncio.gather(*(reserve(s, f"hold-{s}-{u}", u) for s in hold_slots for u in (1, 2)))
        waiters = await asyncio.gather(*(reserve(s, f"wait-{s}", n) for n, s in enumerate(hold_slots)))
        assert {h["state"] for h in holds} == {"RESERVED"} and {w["state"] for w in waiters} == {"PENDING"}

        # Redis dies without a word (SIGKILL) while requests are in flight ...
        outage.killed = time.monotonic()
        own_redis[0].process.send_signal(signal.SIGKILL)
        own_redis[0].process.wait()
        # Down for longer than a sweep period, so the scheduler has to send (and fail) at least once.
        await eventually(
            lambda: _now(sum(c.began > outage.killed for c in recorder.calls)),
            lambda n: n >= 20 and time.monotonic() - outage.killed > OUTAGE_SECONDS,
            within=20,
        )
        # ... and an empty one takes its place on the same address.
        port = int(own_redis[0].url.rsplit(":", 1)[1].split("/")[0])
        own_redis.append(start_redis(tmp_path / "redis-2", port=port))
        outage.back = time.monotonic()
        back_at = await db.fetchval("SELECT clock_timestamp()")

        # Every hold of the first 200 ends (its timer died with Redis: the sweep ends it), each
        # waiter is offered the unit, and that second hold (timed in the new Redis) ends too.
        hold_ids, waiter_ids = [h["id"] for h in holds], [w["id"] for w in waiters]
        await eventually(lambda: _count(db, hold_ids, "EXPIRED"), lambda n: n == len(hold_ids), within=60)
        await eventually(lambda: _count(db, waiter_ids, "EXPIRED"), lambda n: n == len(waiter_ids), within=60)
        assert sum(c.began > outage.back for c in recorder.calls) >= 100
        stop.set()
        await asyncio.gather(*load)

        # Requests: any failure only while Redis was down, and then masked.
        phases: dict[str, list[Call]] = {"before": [], "outage": [], "after": []}
        for call in recorder.calls:
            phases[outage.phase(call)].append(call)
        tallies = {phase: dict(recorder.tally(calls)) for phase, calls in phases.items()}
        bad = [c for c in recorder.calls if c.kind not in ("answer", "masked")]
        assert not bad, bad[:5]
        unmasked_outside = [c for p in ("before", "after") for c in phases[p] if c.kind != "answer"]
        assert not unmasked_outside, (tallies, unmasked_outside[:5])

        # PostgreSQL: never over-booked, units distinct.
        assert await over_bookings(db) == []

        # Holds whose timers died: EXPIRED by the deadline, counted from expiresAt or from
        # Redis' return if that came later; the waiter RESERVED (promoted) by the same deadline.
        lost = await db.fetch(
            "SELECT t.at - greatest(b.expires_at, $2::timestamptz) AS late, b.expires_at - $2 AS lapsed"
            " FROM bookings b JOIN transitions t ON t.booking_id = b.id AND t.event = 'expire'"
            " WHERE b.id = ANY($1::uuid[])",
            [uuid.UUID(h) for h in hold_ids],
            back_at,
        )
        promoted = await db.fetch(
            "SELECT t.at - greatest("
            "   (SELECT min(h.expires_at) FROM bookings h WHERE h.slot_id = w.slot_id"
            "    AND h.id = ANY($2::uuid[])), $3::timestamptz) AS late"
            " FROM bookings w JOIN transitions t ON t.booking_id = w.id AND t.event = 'promote'"
            " WHERE w.id = ANY($1::uuid[])",
            [uuid.UUID(w) for w in waiter_ids],
            [uuid.UUID(h) for h in hold_ids],
            back_at,
        )
        retimed = await db.fetch(
            "SELECT t.at - b.expires_at AS late FROM bookings b"
            " JOIN transitions t ON t.booking_id = b.id AND t.event = 'expire' WHERE b.id = ANY($1::uuid[])",
            [uuid.UUID(w) for w in waiter_ids],
        )
        assert len(lost) == len(hold_ids) and len(promoted) == len(waiter_ids) == len(retimed)
        late = {
            name: sorted(r["late"].total_seconds() for r in rows)
            for name, rows in (("expired", lost), ("promoted", promoted), ("re-timed", retimed))
        }
        for name, seconds in late.items():
            assert seconds[-1] <= EXPIRY_DEADLINE.total_seconds(), (name, seconds[-5:])
        rearmed = [r["late"] for r in lost if r["lapsed"] > REARMED_AFTER]
        assert rearmed and max(rearmed) <= LATENESS_TARGET, (len(rearmed), max(rearmed))
        stranded = await db.fetchval(
            "SELECT count(*) FROM bookings WHERE state = 'RESERVED' AND expires_at < now() - $1::interval",
            EXPIRY_DEADLINE,
        )
        assert stranded == 0

        # Every touched slot's mirror, after one read, is PostgreSQL's state rebuilt.
        touched = hold_slots + load_slots
        for n, slot_id in enumerate(touched):
            read = await recorder.send(clients[n % 2], "slot", READ_SLOT, {"s": slot_id}, ADMIN)
            assert read is not None, recorder.calls[-1]
        mismatches = [m for s in touched if (m := await mirror_mismatch(db, redis, "fire:", s))]
        assert mismatches == [], mismatches[:3]

        print(
            f"\nRedis SIGKILLed and restarted empty under load: outage {outage.back - outage.killed:.2f} s;"
            f" requests by phase {tallies}; double bookings 0;"
            f" 200 holds whose timers died: EXPIRED max {late['expired'][-1]:.2f} s /"
            f" median {statistics.median(late['expired']):.2f} s after expiresAt (or Redis' return),"
            f" {len(rearmed)} lapsing over {REARMED_AFTER.seconds} s after it max"
            f" {max(rearmed).total_seconds():.2f} s (timers re-armed);"
            f" 100 waiters promoted by max {late['promoted'][-1]:.2f} s; their holds, timed in the new"
            f" Redis, EXPIRED max {late['re-timed'][-1]:.2f} s late; {len(touched)} mirrors equal PostgreSQL"
        )
    finally:
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)
        for client in clients:
            await client.aclose()
        stack.stop()
        await db.close()
        await redis.aclose()


async def _now(value: int) -> int:
    return value


async def _count(db: asyncpg.Pool, ids: list[str], state: str) -> int:
    found = await db.fetchval(
        "SELECT count(*) FROM bookings WHERE id = ANY($1::uuid[]) AND state = $2",
        [uuid.UUID(i) for i in ids],
        state,
    )
    return int(found)


CREATE_SLOTS = """mutation($input: CreateSlotsInput!) { createSlots(input: $input) {
  __typename ... on SlotBatch { count slots { id } } ... on Error { message } } }"""


def _batch(day: date, resource: str) -> dict[str, Any]:
    return {
        "input": {
            "resource": resource,
            "timeZone": "UTC",
            "firstDate": day.isoformat(),
            "lastDate": day.isoformat(),
            "weekdays": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"],
            "windowStart": "08:00",
            "windowEnd": "18:00",
            "slotMinutes": 12,
            "capacity": 3,
        }
    }


async def test_script_flushes_under_500_concurrent_reserves_fail_no_request(
    gql: GraphQL, engine: Engine
) -> None:
    day = date.today() + timedelta(days=3)
    recorder = Recorder()
    created = await recorder.send(
        gql.http, "createSlots", CREATE_SLOTS, _batch(day, f"flush-{uuid.uuid4().hex[:8]}"), ADMIN
    )
    assert created is not None and created["count"] == 50, recorder.calls
    slots = [s["id"] for s in created["slots"]]
    every = (scripts.apply_changes_script, scripts.sync_slot, scripts.slot_status, scripts.queue_position)
    reloads_before = {s.name: s.reloads for s in every}
    flushes = 0
    done = 0
    gate = asyncio.Semaphore(50)

    async def one(n: int) -> None:
        nonlocal done, flushes
        async with gate:
            holder = token(f"flush-{n}")
            booking = await recorder.send(
                gql.http, "reserve", RESERVE, {"s": slots[n % 50], "k": "k"}, holder
            )
            if n % 10 == 0:  # reads run slot_status (and queue_position for waiters)
                await recorder.send(gql.http, "slot", READ_SLOT, {"s": slots[n % 50]}, ADMIN)
            if n % 100 == 0:  # a batch of new slots mirrors through one pipeline (run_many)
                batch = _batch(day + timedelta(days=1 + n // 100), f"flush-batch-{n}-{uuid.uuid4().hex[:6]}")
                await recorder.send(gql.http, "createSlots", CREATE_SLOTS, batch, ADMIN)
            assert booking is not None
            done += 1
            if done % 100 == 50:
                await engine.redis.script_flush()
                flushes += 1

    await asyncio.gather(*(one(n) for n in range(500)))

    tally = recorder.tally()
    failed = [c for c in recorder.calls if c.kind != "answer"]
    assert failed == [], failed[:5]
    assert {c.typename for c in recorder.calls if c.op == "reserve"} == {"Booking"}
    reloads = {s.name: s.reloads - reloads_before[s.name] for s in every}
    assert flushes == 5 and reloads["apply_changes"] >= flushes and reloads["sync_slot"] >= 1, reloads
    rows = await engine.redis.script_exists(scripts.apply_changes_script.sha)
    assert rows == [True]
    print(
        f"\nSCRIPT FLUSH x{flushes} under 500 concurrent reserves: requests {dict(tally)}, 0 failed;"
        f" NOSCRIPT recoveries {reloads}"
    )
