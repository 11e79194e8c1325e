"""Done-when 2 and 3: many holders racing for one slot never over-book it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from slotengine.redis import scripts
from slotengine.service.engine import Engine
from slotengine.store.database import connection
from tests.e2e.conftest import GraphQL, token

HOLDERS = 200
ROUNDS = 10


async def race(gql: GraphQL, slot_id: str, holders: int, tag: str) -> list[dict[str, Any]]:
    tokens = [token(f"{tag}-holder-{i}") for i in range(holders)]
    return list(await asyncio.gather(*(gql.reserve(t, slot_id, f"key-{i}") for i, t in enumerate(tokens))))


async def occupied_in_database(slot_id: str) -> tuple[int, int]:
    rows = await connection().execute_query_dict(
        "SELECT count(*) FILTER (WHERE state IN ('RESERVED', 'CONFIRMED', 'COMPLETED')) AS active,"
        " (SELECT capacity FROM slots WHERE id = $1) AS capacity FROM bookings WHERE slot_id = $1",
        [slot_id],
    )
    return int(rows[0]["active"]), int(rows[0]["capacity"])


def assert_fair_outcome(answers: list[dict[str, Any]], capacity: int) -> None:
    assert all(a["__typename"] == "Booking" for a in answers), answers
    reserved = [a for a in answers if a["state"] == "RESERVED"]
    pending = [a for a in answers if a["state"] == "PENDING"]
    assert len(reserved) == capacity
    assert len(pending) == len(answers) - capacity
    assert all(a["expiresAt"] for a in reserved)
    assert sorted(a["queuePosition"] for a in pending) == list(range(1, len(pending) + 1))


@pytest.mark.slow
@pytest.mark.parametrize("capacity", [1, 3])
async def test_200_holders_racing_for_a_slot_get_exactly_its_capacity(gql: GraphQL, capacity: int) -> None:
    over_booked = 0
    for round_no in range(ROUNDS):
        slot_id = await gql.create_slot(capacity=capacity)
        answers = await race(gql, slot_id, HOLDERS, f"c{capacity}r{round_no}")
        assert_fair_outcome(answers, capacity)
        active, cap = await occupied_in_database(slot_id)
        over_booked += active > cap
        assert active == capacity
    assert over_booked == 0


@pytest.mark.slow
@pytest.mark.parametrize("capacity", [1, 3])
async def test_the_race_after_redis_forgot_the_slot_still_never_over_books(
    gql: GraphQL, engine: Engine, capacity: int
) -> None:
    slot_id = await gql.create_slot(capacity=capacity)
    keys = engine.keys(slot_id).all()
    assert await engine.redis.exists(*keys) > 0
    await engine.redis.delete(*keys)

    answers = await race(gql, slot_id, HOLDERS, f"flushed{capacity}")

    assert_fair_outcome(answers, capacity)
    active, cap = await occupied_in_database(slot_id)
    assert active == cap == capacity
    # The mirror was rebuilt and agrees with PostgreSQL.
    status = await scripts.slot_status(engine.redis, keys, [0])
    assert status[0] != "MISSING"
    _, confirmed, live, lapsed, waiting, closed, _ = status
    assert (confirmed, live + lapsed, waiting, closed) == (0, capacity, HOLDERS - capacity, 0)
