"""The live connections a service call needs, opened once per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from slotengine.config import Settings
from slotengine.redis.connection import reconnecting
from slotengine.redis.keys import SlotKeys, schedule_keys, slot_channel, slot_keys
from slotengine.scheduling.source import DueTimeScheduleSource
from slotengine.service.combining import Combiner
from slotengine.service.timers import Timers
from slotengine.store.database import close_database, open_database


@dataclass(frozen=True, slots=True)
class Engine:
    """Redis client and key prefix; PostgreSQL is reached through Tortoise's global pool."""

    redis: Redis
    prefix: str
    timers: Timers
    reserve_rate_per_minute: int = 0  # per holder; 0 = no limit
    # This process's batches of concurrent reservations, per slot (see service/combining.py).
    reservations: Combiner[Any, Any, Any] = field(default_factory=Combiner, compare=False)

    def keys(self, slot_id: str) -> SlotKeys:
        return slot_keys(self.prefix, slot_id)

    def channel(self, slot_id: str) -> str:
        return slot_channel(self.prefix, slot_id)


async def open_engine(settings: Settings, *, database_url: str, redis_url: str) -> Engine:
    """Open the database pool and a Redis client for this process."""
    await open_database(database_url, settings.db_pool_size)
    # A burst of requests waits for a free connection instead of failing once the pool is in use.
    pool = BlockingConnectionPool.from_url(
        redis_url,
        decode_responses=True,
        max_connections=settings.redis_pool_size,
        timeout=10,
        retry=reconnecting(),
    )
    redis = Redis.from_pool(pool)
    return engine_on(redis, settings.redis_prefix, reserve_rate_per_minute=settings.reserve_rate_per_minute)


def engine_on(redis: Redis, prefix: str, *, reserve_rate_per_minute: int = 0) -> Engine:
    """An engine over an open Redis client (the database pool is opened separately)."""
    source = DueTimeScheduleSource(redis, schedule_keys(prefix))
    return Engine(
        redis=redis, prefix=prefix, timers=Timers(source), reserve_rate_per_minute=reserve_rate_per_minute
    )


async def close_engine(engine: Engine) -> None:
    """Close what open_engine opened."""
    await engine.redis.aclose()
    await close_database()
