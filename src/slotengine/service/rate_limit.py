"""A per-holder limit on reserveSlot calls, counted in Redis so that every API process shares it."""

from __future__ import annotations

import logging

from redis import exceptions as redis_errors

from slotengine.domain.errors import RateLimited
from slotengine.redis import scripts
from slotengine.redis.connection import on_cluster
from slotengine.redis.keys import reserve_rate_key
from slotengine.service.engine import Engine

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


async def take_reserve_turn(engine: Engine, holder: str) -> None:
    """Count one reserveSlot call of `holder`; RateLimited once the minute's allowance is spent."""
    limit = engine.reserve_rate_per_minute
    if limit <= 0:
        return
    # The window is timed by Redis alone: API processes with skewed clocks share one count.
    try:
        calls, left_ms = await scripts.take_turn(
            engine.redis, [reserve_rate_key(engine.prefix, holder)], [WINDOW_SECONDS * 1000]
        )
    except (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        redis_errors.ClusterDownError,
        redis_errors.RedisClusterException,
    ) as unreachable:
        if not on_cluster(engine.redis):
            raise  # one Redis: the reservation cannot be made without it either
        # On a cluster the holder's counter may sit on a master that is down while the slot's
        # keys are on one that answers: the limit guards against abuse, not over-booking, so
        # let the call through rather than fail it for a node it does not need.
        log.warning("rate limit of %s unreachable (%s): not counted", holder, unreachable)
        return
    if int(calls) > limit:
        raise RateLimited(retry_after_seconds=int(left_ms) / 1000)
