"""Per-caller limits on reserveSlot calls and on reads, counted in Redis so every API process shares them.

Both are sliding windows (see redis/take_turn.lua): at most the limit in any minute, never twice it
across a window boundary.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from slotengine.domain.errors import RateLimited
from slotengine.redis import scripts
from slotengine.redis.keys import read_rate_key, reserve_rate_key
from slotengine.service.engine import Engine

WINDOW_SECONDS = 60


async def take_turn(engine: Engine, key: str, limit: int, *, now_ms: int | None = None) -> float | None:
    """Log one call under `key`; None when allowed, else seconds until the next call would be.

    `now_ms` is for tests only: production leaves the time to Redis' clock.
    """
    allowed, wait_ms = await scripts.take_turn(
        engine.redis, [key], [WINDOW_SECONDS * 1000, limit, "" if now_ms is None else now_ms]
    )
    return None if int(allowed) else int(wait_ms) / 1000


async def take_reserve_turn(engine: Engine, holder: str) -> None:
    """Count one reserveSlot call of `holder`; RateLimited once the last minute's allowance is spent."""
    limit = engine.reserve_rate_per_minute
    if limit <= 0:
        return
    wait = await take_turn(engine, reserve_rate_key(engine.prefix, holder), limit)
    if wait is not None:
        raise RateLimited(retry_after_seconds=wait)


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
