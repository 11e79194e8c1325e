"""Proof under fire, clocks: API, worker and scheduler processes whose clocks are minutes off
(libfaketime) change nothing. PostgreSQL's clock decides every transition; Redis' clock times the
timers; no process's own clock decides anything."""

from __future__ import annotations

import glob
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from redis.asyncio import Redis

from slotengine.config import Settings
from slotengine.redis.keys import task_stream
from slotengine.service.timers import EXPIRE_HOLD_TASK
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, token
from tests.e2e.fire import (
    CONFIRM,
    READ_SLOT,
    RESERVE,
    Recorder,
    create_slot,
    fresh_database,
    start_stack,
)
from tests.processes import kill_tree
from workers.scheduler import heartbeat_key

# Debian's libfaketime (`make install` puts it there): the processes it is preloaded into see
# their clocks shifted; PostgreSQL and Redis, started without it, keep the true time.
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
SKEW = timedelta(minutes=5)
# The target for expiresAt -> EXPIRED committed -> next in line RESERVED.
LATENESS_TARGET = timedelta(seconds=1)
HOLDS = 8
HOLD_SECONDS = 2

pytestmark = pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime missing: run `make install`")


def skewed(offset: timedelta) -> dict[str, str]:
    assert LIBFAKETIME is not None
    minutes = int(offset.total_seconds() // 60)
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"{minutes:+d}m"}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def expire_tasks(redis: Redis, prefix: str) -> Counter[tuple[str, int]]:
    """How many expire_hold tasks were sent, per (booking, fence): one per run of the task."""
    sent: Counter[tuple[str, int]] = Counter()
    for _, fields in await redis.xrange(task_stream(prefix)):
        message = json.loads(fields["data"])
        if message["task_name"] == EXPIRE_HOLD_TASK:
            sent[(message["args"][0], int(message["args"][1]))] += 1
    return sent


@pytest.mark.parametrize(
    ("api", "worker", "scheduler"),
    [(SKEW, -SKEW, SKEW), (-SKEW, SKEW, -SKEW)],
    ids=["api+5m,worker-5m,scheduler+5m", "api-5m,worker+5m,scheduler-5m"],
)
async def test_skewed_processes_expire_holds_on_postgresql_time(
    settings: Settings,
    postgres_server_url: str,
    redis: Redis,
    api: timedelta,
    worker: timedelta,
    scheduler: timedelta,
) -> None:
    database_url = await fresh_database(postgres_server_url)
    prefix = f"skew-{uuid.uuid4().hex[:8]}:"
    mine = settings.model_copy(update={"database_url": database_url, "redis_prefix": prefix})
    db = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    stack = await start_stack(
        mine, redis, api_env=skewed(api), worker_env=skewed(worker), scheduler_env=skewed(scheduler)
    )
    recorder = Recorder()
    try:
        # The skew took: every process has libfaketime loaded, and clocks we can read are off.
        for process in stack.processes:
            family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            for member in family:
                assert any("libfaketime" in m.path for m in member.memory_maps()), member.cmdline()
        async with httpx.AsyncClient(base_url=stack.apis[0], timeout=30) as http:
            served_at = parsedate_to_datetime((await http.get("/healthz")).headers["date"])
            assert abs(served_at - datetime.now(UTC) - api) < timedelta(seconds=30)
            beat = float(await redis.get(heartbeat_key(prefix)) or 0)
            assert abs(beat - time.time() - scheduler.total_seconds()) < 30

            # Holds given by a skewed API end at PostgreSQL's expiresAt, by skewed workers and a
            # skewed scheduler, with no API call in between; the waiter gets the unit in time.
            slots = [
                await create_slot(recorder, http, capacity=1, hold_seconds=HOLD_SECONDS) for _ in range(HOLDS)
            ]
            holds: list[dict[str, Any]] = []
            waiters: list[dict[str, Any]] = []
            for n, slot_id in enumerate(slots):
                for role, group in (("hold", holds), ("wait", waiters)):
                    answer = await recorder.send(
                        http, "reserve", RESERVE, {"s": slot_id, "k": "k"}, token(f"skew-{role}-{n}")
                    )
                    assert answer is not None and answer["__typename"] == "Booking", recorder.calls[-1]
                    group.append(answer)
            db_now = await db.fetchval("SELECT now()")
            for hold in holds:
                expires_at = datetime.fromisoformat(hold["expiresAt"])
                # PostgreSQL's clock set it, not the API's five minutes off.
                assert timedelta(0) < expires_at - db_now <= timedelta(seconds=HOLD_SECONDS)

            ids = [b["id"] for b in holds + waiters]
            await eventually(lambda: _expired(db, ids), lambda n: n == len(ids), within=30)
            late = await db.fetch(
                "SELECT b.id::text, t.event, t.at - b.expires_at AS after_expiry,"
                " t.at - (SELECT max(e.at) FROM transitions e JOIN bookings h ON h.id = e.booking_id"
                "         WHERE h.slot_id = b.slot_id AND e.event = 'expire' AND e.at <= t.at) AS after_free"
                " FROM bookings b JOIN transitions t ON t.booking_id = b.id"
                " WHERE b.id = ANY($1::uuid[]) AND t.event IN ('expire', 'promote')",
                [uuid.UUID(i) for i in ids],
            )
            expiries = [r["after_expiry"] for r in late if r["event"] == "expire"]
            promotions = [r["after_free"] for r in late if r["event"] == "promote"]
            assert len(expiries) == 2 * HOLDS and len(promotions) == HOLDS
            assert all(timedelta(0) <= e <= LATENESS_TARGET for e in expiries), sorted(expiries)[-3:]
            assert all(timedelta(0) <= p <= LATENESS_TARGET for p in promotions), sorted(promotions)[-3:]

            # No hot loop: each hold's timer ran once, twice at most (an early run re-arms once).
            sent = await expire_tasks(redis, prefix)
            runs = [sent[key] for key in sent if key[0] in ids]
            assert len(runs) == 2 * HOLDS and max(runs) <= 2, sent

            # Confirm before expiry works; after expiry it is HoldExpired, by PostgreSQL's clock.
            slot_id = await create_slot(recorder, http, capacity=2, hold_seconds=HOLD_SECONDS)
            keeper, late_one = token("skew-keeper"), token("skew-late")
            kept = await recorder.send(http, "reserve", RESERVE, {"s": slot_id, "k": "k"}, keeper)
            lapsing = await recorder.send(http, "reserve", RESERVE, {"s": slot_id, "k": "k"}, late_one)
            assert kept is not None and lapsing is not None
            confirmed = await recorder.send(http, "confirm", CONFIRM, {"b": kept["id"]}, keeper)
            assert confirmed is not None and confirmed["state"] == "CONFIRMED", confirmed
            lapse = datetime.fromisoformat(lapsing["expiresAt"])
            await eventually(lambda: db.fetchval("SELECT now() > $1::timestamptz", lapse), bool)
            refused = await recorder.send(http, "confirm", CONFIRM, {"b": lapsing["id"]}, late_one)
            assert refused is not None and refused["__typename"] == "HoldExpired", refused

            # With no worker and no scheduler at all, reads through the skewed API still expire
            # a lapsed hold (lazy expiry decides by PostgreSQL's and Redis' clocks, not its own).
            for process in stack.processes[1:]:
                kill_tree(process, signal.SIGTERM)
            lone_slot = await create_slot(recorder, http, capacity=1, hold_seconds=1)
            lone_holder = token("skew-lone")
            lone = await recorder.send(http, "reserve", RESERVE, {"s": lone_slot, "k": "k"}, lone_holder)
            assert lone is not None
            lone_lapse = datetime.fromisoformat(lone["expiresAt"])
            await eventually(lambda: db.fetchval("SELECT now() > $1::timestamptz", lone_lapse), bool)
            seen = await recorder.send(http, "slot", READ_SLOT, {"s": lone_slot}, ADMIN)
            assert seen is not None and seen["held"] == 0, seen
            state = await db.fetchval("SELECT state FROM bookings WHERE id = $1", uuid.UUID(lone["id"]))
            assert state == "EXPIRED"

        assert recorder.tally() == Counter(answer=len(recorder.calls))
        worst = max(expiries).total_seconds()
        print(
            f"\nclocks api {_minutes(api)}, worker {_minutes(worker)}, scheduler {_minutes(scheduler)}:"
            f" {2 * HOLDS} holds EXPIRED"
            f" max {worst:.3f} s after PostgreSQL's expiresAt, {HOLDS} promotions max"
            f" {max(promotions).total_seconds():.3f} s after the unit freed; expire_hold runs per hold"
            f" {dict(Counter(runs))}; confirm before expiry CONFIRMED, after HoldExpired;"
            f" lazy expiry without workers by a skewed API: EXPIRED"
        )
    finally:
        stack.stop()
        await db.close()


def _minutes(offset: timedelta) -> str:
    return f"{int(offset.total_seconds() // 60):+d} min"


async def _expired(db: asyncpg.Pool, ids: list[str]) -> int:
    count = await db.fetchval(
        "SELECT count(*) FROM bookings WHERE id = ANY($1::uuid[]) AND state = 'EXPIRED'",
        [uuid.UUID(i) for i in ids],
    )
    return int(count)
