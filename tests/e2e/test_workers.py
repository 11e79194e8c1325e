"""Issue 3: real worker and scheduler processes end holds on time and promote the queue, with
no API call in between; killed workers and repeated or late tasks lose and break nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from taskiq.kicker import AsyncKicker

from slotengine.config import Settings
from slotengine.redis.keys import task_stream
from slotengine.service.engine import Engine
from slotengine.service.timers import EXPIRE_HOLD_TASK
from slotengine.store.database import connection
from tests.deadlines import eventually
from tests.e2e.conftest import GraphQL, token
from tests.processes import kill_tree, spawn, wait_for_consumers
from workers.broker import make_broker

# The target for expiresAt -> EXPIRED committed -> next in line RESERVED.
LATENESS_TARGET = timedelta(seconds=1)

pytestmark = pytest.mark.usefixtures("workers")


async def sql(query: str, *args: Any) -> list[dict[str, Any]]:
    return await connection().execute_query_dict(query, list(args))


async def state_of(booking_id: str) -> str:
    rows = await sql("SELECT state FROM bookings WHERE id = $1", booking_id)
    return str(rows[0]["state"])


async def trail(booking_id: str) -> list[dict[str, Any]]:
    return await sql(
        "SELECT t.from_state, t.to_state, t.event, t.actor, t.at, b.expires_at"
        " FROM transitions t JOIN bookings b ON b.id = t.booking_id"
        " WHERE t.booking_id = $1 ORDER BY t.id",
        booking_id,
    )


async def wait_for_state(booking_id: str, state: str, within: float = 20) -> None:
    await eventually(lambda: state_of(booking_id), lambda s: s == state, within=within)


async def events_of(booking_id: str) -> list[str]:
    return [t["event"] for t in await trail(booking_id)]


async def wait_for_event(booking_id: str, event: str, within: float = 20) -> None:
    """Wait on the audit trail rather than the state: a short hold may lapse again meanwhile."""
    await eventually(lambda: events_of(booking_id), lambda events: event in events, within=within)


async def test_a_lapsed_hold_expires_and_the_waiter_gets_it_with_no_api_call(gql: GraphQL) -> None:
    slot_id = await gql.create_slot(hold_seconds=2)
    held = await gql.reserve(token("w-alice"), slot_id, "k")
    waiter = await gql.reserve(token("w-bob"), slot_id, "k")
    assert (held["state"], waiter["state"]) == ("RESERVED", "PENDING")

    # Only the database is watched from here on: an API read would expire the hold itself.
    await wait_for_state(waiter["id"], "RESERVED")

    expired = (await trail(held["id"]))[-1]
    promoted = (await trail(waiter["id"]))[-1]
    assert (expired["to_state"], expired["event"], expired["actor"]) == ("EXPIRED", "expire", "system")
    assert (promoted["to_state"], promoted["event"], promoted["actor"]) == ("RESERVED", "promote", "system")
    hold_ended = expired["expires_at"]
    assert hold_ended <= expired["at"] <= hold_ended + LATENESS_TARGET  # never early, never late
    assert expired["at"] <= promoted["at"] <= hold_ended + LATENESS_TARGET


async def test_a_chain_of_lapses_passes_the_unit_down_the_queue(gql: GraphQL) -> None:
    slot_id = await gql.create_slot(hold_seconds=1)
    answers = [await gql.reserve(token(f"chain-{n}"), slot_id, "k") for n in "abc"]
    a, b, c = answers

    await wait_for_event(c["id"], "promote")

    trails = [await trail(x["id"]) for x in (a, b, c)]
    steps = [[(t["event"], t["actor"]) for t in tr] for tr in trails]
    assert steps[0] == [("hold", "chain-a"), ("expire", "system")]
    assert steps[1] == [("queue", "chain-b"), ("promote", "system"), ("expire", "system")]
    assert steps[2][:2] == [("queue", "chain-c"), ("promote", "system")]
    a_expired, b_promoted, b_expired, c_promoted = (
        trails[0][1]["at"],
        trails[1][1]["at"],
        trails[1][2]["at"],
        trails[2][1]["at"],
    )
    assert a_expired <= b_promoted < b_expired <= c_promoted


async def test_a_worker_killed_mid_run_loses_no_expiry(
    gql: GraphQL, settings: Settings, engine: Engine
) -> None:
    doomed = spawn(settings, "worker", "--workers", "1")
    try:
        await wait_for_consumers(engine.redis, settings, at_least=2)
        slots = [await gql.create_slot(hold_seconds=1) for _ in range(20)]
        holds = [await gql.reserve(token(f"kill-h{i}"), s, "k") for i, s in enumerate(slots)]
        waiters = [await gql.reserve(token(f"kill-w{i}"), s, "k") for i, s in enumerate(slots)]

        async def expired_count() -> int:
            rows = await sql(
                "SELECT count(*) AS n FROM bookings WHERE id = ANY($1::uuid[]) AND state = 'EXPIRED'",
                [h["id"] for h in holds],
            )
            return int(rows[0]["n"])

        await eventually(expired_count, lambda n: n >= 1, within=20)
    finally:
        kill_tree(doomed)  # SIGKILL, whatever it was doing

    for waiter in waiters:
        await wait_for_event(waiter["id"], "promote", within=30)
    for hold, waiter in zip(holds, waiters, strict=True):
        assert await events_of(hold["id"]) == ["hold", "expire"]
        assert (await events_of(waiter["id"]))[:2] == ["queue", "promote"]
        assert (await events_of(waiter["id"])).count("promote") == 1


async def stream_drained(redis: Redis, settings: Settings) -> bool:
    """Every task sent was delivered, and no live worker holds one unacknowledged.

    Consumers idle for long are workers killed by an earlier test; what they held is the
    sweep's to finish, and stays in their pending lists.
    """
    stream = task_stream(settings.redis_prefix)
    info = await redis.xinfo_stream(stream)
    for group in await redis.xinfo_groups(stream):
        if group["last-delivered-id"] != info["last-generated-id"]:
            return False
        for consumer in await redis.xinfo_consumers(stream, group["name"]):
            if consumer["idle"] < 5_000 and consumer["pending"] > 0:
                return False
    return True


async def test_repeated_and_late_expiry_tasks_change_nothing(
    gql: GraphQL, settings: Settings, engine: Engine
) -> None:
    slot_id = await gql.create_slot(capacity=2, hold_seconds=1)
    keeper = token("dup-keeper")
    kept = await gql.reserve(keeper, slot_id, "k")
    lapsing = await gql.reserve(token("dup-lapsing"), slot_id, "k")
    waiter = await gql.reserve(token("dup-waiter"), slot_id, "k")
    assert (await gql.confirm(keeper, kept["id"]))["state"] == "CONFIRMED"
    await wait_for_event(waiter["id"], "promote")
    fences = {
        r["id"]: r["fence"]
        for r in await sql(
            "SELECT id::text, fence FROM bookings WHERE id = ANY($1::uuid[])",
            [kept["id"], lapsing["id"]],
        )
    }

    broker = make_broker(settings)
    await broker.startup()
    try:
        expire: AsyncKicker[[str, int], str] = AsyncKicker(EXPIRE_HOLD_TASK, broker, {})
        await asyncio.gather(
            *(expire.kiq(b, fences[b]) for b in (kept["id"], lapsing["id"]) for _ in range(3))
        )
    finally:
        await broker.shutdown()
    await eventually(lambda: stream_drained(engine.redis, settings), bool, within=20)

    assert await state_of(kept["id"]) == "CONFIRMED"
    assert [t["event"] for t in await trail(kept["id"])] == ["hold", "confirm"]
    assert [t["event"] for t in await trail(lapsing["id"])] == ["hold", "expire"]
    # The waiter's own one-second hold may lapse meanwhile; it was promoted exactly once.
    assert [t["event"] for t in await trail(waiter["id"])].count("promote") == 1
