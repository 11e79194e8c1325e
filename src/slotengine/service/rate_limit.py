"""A per-holder limit on reserveSlot calls, counted in Redis so that every API process shares it."""

from __future__ import annotations

import time

from slotengine.domain.errors import RateLimited
from slotengine.redis.keys import reserve_rate_key
from slotengine.service.engine import Engine

WINDOW_SECONDS = 60


async def take_reserve_turn(engine: Engine, holder: str) -> None:
    """Count one reserveSlot call of `holder`; RateLimited once the minute's allowance is spent."""
    limit = engine.reserve_rate_per_minute
    if limit <= 0:
        return
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    key = reserve_rate_key(engine.prefix, holder, window)
    async with engine.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS + 1)
        calls, _ = await pipe.execute()
    if int(calls) > limit:
        raise RateLimited(retry_after_seconds=(window + 1) * WINDOW_SECONDS - now)
