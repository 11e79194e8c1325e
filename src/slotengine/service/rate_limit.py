"""A per-holder limit on reserveSlot calls, counted in Redis so that every API process shares it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from redis import exceptions as redis_errors

from slotengine.domain.errors import RateLimited
from slotengine.redis import scripts
from slotengine.redis.connection import on_cluster
from slotengine.redis.keys import reserve_rate_key
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


async def take_reserve_turn(engine: Engine, holder: str) -> None:
    """Count one reserveSlot call of `holder`; RateLimited once the minute's allowance is spent."""
    if engine.reserve_rate_per_minute <= 0:
        return
    refusal = await _take_turn(engine, holder)
    if refusal is not None:
        raise refusal


async def take_reserve_turns(engine: Engine, holders: Sequence[str]) -> list[RateLimited | None]:
    """take_reserve_turn for a batch of reservations in one round trip: each call's refusal or None."""
    limit = engine.reserve_rate_per_minute
    if limit <= 0:
        return [None] * len(holders)
    if on_cluster(engine.redis):
        # The counters live on several nodes: one call each, concurrently, each failing open.
        return list(await asyncio.gather(*(_take_turn(engine, holder) for holder in holders)))
    answers = await scripts.take_turn.run_many(
        engine.redis,
        [([reserve_rate_key(engine.prefix, holder)], [WINDOW_SECONDS * 1000]) for holder in holders],
    )
    return [_refusal(limit, scripts.parse_turn(answer)) for answer in answers]


async def _take_turn(engine: Engine, holder: str) -> RateLimited | None:
    # The window is timed by Redis alone: API processes with skewed clocks share one count.
    try:
        turn = await scripts.take_one_turn(
            engine.redis, reserve_rate_key(engine.prefix, holder), WINDOW_SECONDS * 1000
        )
    except _UNREACHABLE as unreachable:
        if not on_cluster(engine.redis):
            raise  # one Redis: the reservation cannot be made without it either
        # On a cluster the holder's counter may sit on a master that is down while the slot's
        # keys are on one that answers: the limit guards against abuse, not over-booking, so
        # let the call through rather than fail it for a node it does not need.
        log.warning("rate limit of %s unreachable (%s): not counted", holder, unreachable)
        return None
    return _refusal(engine.reserve_rate_per_minute, turn)


def _refusal(limit: int, turn: scripts.Turn) -> RateLimited | None:
    return RateLimited(retry_after_seconds=turn.window_left_ms / 1000) if turn.calls > limit else None
