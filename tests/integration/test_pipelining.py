"""Concurrent pipelines of one process share round trips to the real Redis (redis/pipelining.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from slotengine.redis.pipelining import PipelineBatcher


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def test_concurrent_callers_share_round_trips_and_each_gets_its_replies_in_order(redis: Redis) -> None:
    batcher = PipelineBatcher(redis)
    key = f"pipelining-{uuid.uuid4().hex}"

    async def caller(n: int) -> list[object]:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{key}:{n}", n)
            pipe.incrby(f"{key}:{n}", n)
            pipe.get(f"{key}:{n}")
            return await batcher.execute(pipe)

    replies = await asyncio.gather(*(caller(n) for n in range(200)))
    assert replies == [[True, 2 * n, str(2 * n)] for n in range(200)]
    assert batcher.pipelines == 200
    # Callers that queue while none is out share the next one.
    assert batcher.round_trips < 20
    await redis.delete(*(f"{key}:{n}" for n in range(200)))


async def test_a_lone_caller_goes_at_once_and_a_failing_command_fails_only_its_reply(redis: Redis) -> None:
    batcher = PipelineBatcher(redis)
    key = f"pipelining-{uuid.uuid4().hex}"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(key, "text")
        pipe.incr(key)  # not an integer: an error reply, not an exception
        pipe.get(key)
        replies = await batcher.execute(pipe)
    assert replies[0] is True and replies[2] == "text"
    assert isinstance(replies[1], ResponseError)
    assert batcher.round_trips == 1
    async with redis.pipeline(transaction=False) as pipe:
        assert await batcher.execute(pipe) == []  # nothing queued: no round trip
    assert batcher.round_trips == 1
    await redis.delete(key)


async def test_a_failed_round_trip_fails_every_caller_in_it_and_the_next_one_goes(redis_url: str) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens on port 1
    batcher = PipelineBatcher(dead)

    async def caller() -> list[object]:
        async with dead.pipeline(transaction=False) as pipe:
            pipe.ping()
            return await batcher.execute(pipe)

    outcomes = await asyncio.gather(*(caller() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes), outcomes
    assert batcher.round_trips == 1
    await dead.aclose()
    live = Redis.from_url(redis_url)
    batcher.redis = live
    async with live.pipeline(transaction=False) as pipe:
        pipe.ping()
        assert await batcher.execute(pipe) == [True]
    await live.aclose()
