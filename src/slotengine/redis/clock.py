"""Redis' clock: the one clock every engine process shares for timing that Redis keeps.

PostgreSQL's now() decides every state change; Redis' TIME times what lives in Redis (when a
timer is due, whether a mirrored hold has lapsed). No process's own clock decides either.
"""

from __future__ import annotations

from datetime import UTC, datetime

from redis.asyncio import Redis


async def redis_now_ms(redis: Redis) -> int:
    """Redis' current time in epoch milliseconds."""
    seconds, microseconds = await redis.time()
    return int(seconds) * 1000 + int(microseconds) // 1000


async def redis_now(redis: Redis) -> datetime:
    """Redis' current time (UTC)."""
    return datetime.fromtimestamp(await redis_now_ms(redis) / 1000, UTC)
