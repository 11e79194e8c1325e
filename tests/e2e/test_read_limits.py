"""Limits that keep readers from crowding out reserves, and a sliding window that never lets twice
the limit through: per-client read allowance, the readers' connection budget, the per-holder cap."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from slotengine.api.context import Context
from slotengine.api.schema import schema
from slotengine.redis.keys import read_rate_key
from slotengine.service import rate_limit
from slotengine.service.engine import Engine
from slotengine.service.read_gate import ReadGate
from slotengine.service.views import Caller
from slotengine.store.database import connection
from tests.e2e.conftest import BOOKING_FIELDS, GraphQL, token

WINDOW_MS = rate_limit.WINDOW_SECONDS * 1000


def key() -> str:
    return f"test-rate:{uuid.uuid4().hex}"


async def test_the_reserve_limit_does_not_let_twice_through_across_a_minute_boundary(engine: Engine) -> None:
    log, start = key(), 1_000_000_000
    # Three calls in the last second of one minute, then three just after it: a fixed window
    # counting per minute lets all six through in two seconds.
    late = [await rate_limit.take_turn(engine, log, 3, now_ms=start + 59_000 + i) for i in range(3)]
    early = [await rate_limit.take_turn(engine, log, 3, now_ms=start + 60_500 + i) for i in range(3)]
    reopened = await rate_limit.take_turn(engine, log, 3, now_ms=start + 59_000 + WINDOW_MS)

    assert late == [None, None, None]
    assert early[0] == pytest.approx((59_000 + WINDOW_MS - 60_500) / 1000)
    assert all(wait is not None for wait in early)
    assert reopened is None  # the oldest call left the window: one more turn


@pytest.mark.parametrize("seed", range(5))
async def test_no_window_of_a_minute_ever_holds_more_than_the_limit(engine: Engine, seed: int) -> None:
    rng, log = random.Random(seed), key()
    limit = rng.randint(1, 8)
    now, accepted = 5_000_000, []
    for _ in range(150):
        now += rng.choice([0, 1, 50, 900, 5_000, 20_000, 59_999, 60_000])
        wait = await rate_limit.take_turn(engine, log, limit, now_ms=now)
        if wait is None:
            accepted.append(now)
        else:
            assert wait > 0
    for i, moment in enumerate(accepted):
        in_window = [t for t in accepted[: i + 1] if t > moment - WINDOW_MS]
        assert len(in_window) <= limit, (limit, moment, in_window)
    assert len(accepted) > limit  # the window moved on: the limit is not a ban


def _context(
    app: Starlette, engine: Engine, *, caller: Caller | None = None, address: str = "198.51.100.7"
) -> Context:
    return Context(engine=engine, hub=app.state.hub, caller=caller, client_address=address)


async def _read_slot(app: Starlette, engine: Engine, slot_id: str, **who: Any) -> tuple[Any, str | None]:
    result = await schema.execute(
        "query($s: ID!) { slot(id: $s) { id } }",
        variable_values={"s": slot_id},
        context_value=_context(app, engine, **who),
    )
    code = (result.errors[0].extensions or {}).get("code") if result.errors else None
    return result.data, code


async def test_reads_over_a_clients_allowance_are_rate_limited_by_address_or_holder(
    app: Starlette, engine: Engine, gql: GraphQL
) -> None:
    slot_id = await gql.create_slot()
    limited = dataclasses.replace(engine, read_rate_per_minute=2)
    address = f"203.0.113.{random.randrange(256)}"
    await engine.redis.delete(read_rate_key(engine.prefix, f"ip:{address}"))
    anonymous = [await _read_slot(app, limited, slot_id, address=address) for _ in range(3)]
    other_address = await _read_slot(app, limited, slot_id, address=f"{address}1")
    holder = Caller(f"reader-{uuid.uuid4().hex[:6]}")
    as_holder = [await _read_slot(app, limited, slot_id, caller=holder, address=address) for _ in range(3)]

    assert [code for _, code in anonymous] == [None, None, "RateLimited"]
    assert anonymous[0][0] == {"slot": {"id": slot_id}} and anonymous[2][0] == {"slot": None}
    assert other_address[1] is None
    assert [code for _, code in as_holder] == [None, None, "RateLimited"]


async def test_a_read_that_finds_no_connection_in_its_budget_in_time_is_busy(
    app: Starlette, engine: Engine, gql: GraphQL
) -> None:
    slot_id = await gql.create_slot()
    narrow = dataclasses.replace(engine, read_gate=ReadGate(connections=1, wait_seconds=0.05))
    async with narrow.read_gate.entered():  # the one reader's connection is taken
        _, code = await _read_slot(app, narrow, slot_id)
    _, after = await _read_slot(app, narrow, slot_id)

    assert code == "Busy"
    assert after is None


async def test_a_holder_at_the_cap_of_live_bookings_is_refused_a_new_one(
    app: Starlette, engine: Engine, gql: GraphQL
) -> None:
    capped = dataclasses.replace(engine, live_bookings_per_holder=2)
    holder = Caller(f"capped-{uuid.uuid4().hex[:6]}")
    slots = [await gql.create_slot() for _ in range(3)]

    async def reserve(slot_id: str, k: str) -> dict[str, Any]:
        result = await schema.execute(
            f"""mutation($s: ID!, $k: String!) {{ reserveSlot(slotId: $s, idempotencyKey: $k) {{
                  {BOOKING_FIELDS} ... on TooManyBookings {{ limit }} }} }}""",
            variable_values={"s": slot_id, "k": k},
            context_value=_context(app, capped, caller=holder),
        )
        assert result.errors is None and result.data is not None, result.errors
        answer: dict[str, Any] = result.data["reserveSlot"]
        return answer

    first, second = await reserve(slots[0], "a"), await reserve(slots[1], "b")
    third = await reserve(slots[2], "c")
    again = await reserve(slots[1], "b2")  # a slot already held is not a new claim
    replay = await reserve(slots[0], "a")

    assert (first["__typename"], second["__typename"]) == ("Booking", "Booking")
    assert third["__typename"] == "TooManyBookings" and third["limit"] == 2
    assert again["__typename"] == "Booking" and again["id"] == second["id"]
    assert replay["id"] == first["id"]


@pytest.fixture
async def flooded_app(app: Starlette, engine: Engine) -> AsyncIterator[Engine]:
    """The suite's app with a small readers' budget and a per-address read allowance, for one test."""
    tuned = dataclasses.replace(
        engine, read_rate_per_minute=20, read_gate=ReadGate(connections=2, wait_seconds=0.5)
    )
    app.state.engine = tuned
    try:
        yield tuned
    finally:
        app.state.engine = engine


async def test_a_flood_of_anonymous_reads_never_starves_reserves(
    app: Starlette, flooded_app: Engine, gql: GraphQL
) -> None:
    slot_id = await gql.create_slot(capacity=20, starts_in=timedelta(days=3))
    pool: Any = connection()._pool  # type: ignore[attr-defined]
    busiest = 0
    flooding = True

    async def watch_pool() -> None:
        nonlocal busiest
        while flooding:
            busiest = max(busiest, pool.get_size() - pool.get_idle_size())
            await asyncio.sleep(0)

    async def anonymous_reads(address: str) -> list[tuple[int, Any]]:
        transport = httpx.ASGITransport(app=app, client=(address, 4242))
        async with httpx.AsyncClient(transport=transport, base_url="http://slotengine.test") as http:
            answers = await asyncio.gather(
                *(
                    http.post("/graphql", json={"query": "{ slots(first: 50) { id available } }"})
                    for _ in range(30)
                )
            )
        return [(a.status_code, a.json()) for a in answers]

    async def reserve(i: int) -> dict[str, Any]:
        return await gql.reserve(token(f"flood-{uuid.uuid4().hex[:6]}-{i}"), slot_id, "k")

    watcher = asyncio.create_task(watch_pool())
    readers = [anonymous_reads(f"192.0.2.{i}") for i in range(10)]
    results = await asyncio.gather(*readers, *(reserve(i) for i in range(20)))
    flooding = False
    await watcher

    reads = [answer for batch in results[:10] for answer in batch]  # type: ignore[union-attr]
    reserves: list[dict[str, Any]] = results[10:]  # type: ignore[assignment]
    outcomes = Counter(
        "data" if "errors" not in body else body["errors"][0]["extensions"].get("code") for _, body in reads
    )
    assert all(r["__typename"] == "Booking" and r["state"] == "RESERVED" for r in reserves), reserves
    assert {status for status, _ in reads} == {200}
    assert set(outcomes) <= {"data", "RateLimited", "Busy"}, outcomes
    assert outcomes["RateLimited"] >= 10 * 10  # 30 reads per address against 20 a minute
    # Readers use 2 connections at most, each reserve one at a time: never the whole pool.
    assert busiest <= 2 + 20 < pool.get_max_size(), busiest
