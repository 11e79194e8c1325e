"""Per-caller limits on reserveSlot calls and on reads, counted in Redis so every API process shares them.

Both are sliding windows (see redis/take_turn.lua): at most the limit in any minute, never twice it
across a window boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from redis import exceptions as redis_errors

from slotengine.domain.errors import RateLimited
from slotengine.redis import scripts
from slotengine.redis.connection import on_cluster
from slotengine.redis.keys import read_rate_key, reserve_rate_key
from slotengine.service.engine import Engine

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# What a cluster throws for a counter on a master that is down.
_UNREACHABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.RedisClusterException,
)


async def take_turn(engine: Engine, key: str, limit: int, *, now_ms: int | None = None) -> float | None:
    """Log one call under `key`; None when allowed, else seconds until the next call would be.

    `now_ms` is for tests only: production leaves the time to Redis' clock.
    """
    turn = await scripts.take_one_turn(engine.redis, key, WINDOW_SECONDS * 1000, limit, now_ms)
    return None if turn.allowed else turn.wait_ms / 1000


async def take_reserve_turn(engine: Engine, holder: str) -> None:
    """Count one reserveSlot call of `holder`; RateLimited once the last minute's allowance is spent."""
    refusal = (await take_reserve_turns(engine, [holder]))[0]
    if refusal is not None:
        raise refusal


async def take_reserve_turns(engine: Engine, holders: Sequence[str]) -> list[RateLimited | None]:
    """One reserveSlot turn for each of a batch of reservations, in one round trip: each refusal or None."""
    limit = engine.reserve_rate_per_minute
    if limit <= 0:
        return [None] * len(holders)
    if on_cluster(engine.redis):
        # The logs live on several nodes: one call each, concurrently, each failing open.
        return list(await asyncio.gather(*(_take_cluster_turn(engine, holder) for holder in holders)))
    args = scripts.turn_args(WINDOW_SECONDS * 1000, limit)
    answers = await scripts.take_turn.run_many(
        engine.redis,
        [([reserve_rate_key(engine.prefix, holder)], args) for holder in holders],
        engine.pipelines,
    )
    return [_refusal(scripts.parse_turn(answer)) for answer in answers]


async def _take_cluster_turn(engine: Engine, holder: str) -> RateLimited | None:
    try:
        wait = await take_turn(
            engine, reserve_rate_key(engine.prefix, holder), engine.reserve_rate_per_minute
        )
    except _UNREACHABLE as unreachable:
        # The holder's log may sit on a master that is down while the slot's keys are on one
        # that answers: the limit guards against abuse, not over-booking, so let the call
        # through rather than fail it for a node it does not need.
        log.warning("rate limit of %s unreachable (%s): not counted", holder, unreachable)
        return None
    return None if wait is None else RateLimited(retry_after_seconds=wait)


def _refusal(turn: scripts.Turn) -> RateLimited | None:
    return None if turn.allowed else RateLimited(retry_after_seconds=turn.wait_ms / 1000)


async def take_read_turn(engine: Engine, client: str) -> None:
    """Count one read of `client` (a holder, or "ip:<address>"); RateLimited past the read allowance."""
    limit = engine.read_rate_per_minute
    if limit <= 0:
        return
    wait = await take_turn(engine, read_rate_key(engine.prefix, client), limit)
    if wait is not None:
        raise RateLimited(retry_after_seconds=wait, what="reads")


@contextlib.asynccontextmanager
async def admitted_read(engine: Engine, client: str) -> AsyncIterator[None]:
    """Run a read once `client` has a turn and the read budget a connection (RateLimited, Busy)."""
    await take_read_turn(engine, client)
    async with engine.read_gate.entered():
        yield
