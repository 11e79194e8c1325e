"""The live connections a service call needs, opened once per process."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from slotengine.config import Settings
from slotengine.redis.keys import SlotKeys, slot_channel, slot_keys
from slotengine.store.database import close_database, open_database


@dataclass(frozen=True, slots=True)
class Engine:
    """Redis client and key prefix; PostgreSQL is reached through Tortoise's global pool."""

    redis: Redis
    prefix: str

    def keys(self, slot_id: str) -> SlotKeys:
        return slot_keys(self.prefix, slot_id)

    def channel(self, slot_id: str) -> str:
        return slot_channel(self.prefix, slot_id)


async def open_engine(settings: Settings, *, database_url: str, redis_url: str) -> Engine:
    """Open the database pool and a Redis client for this process."""
    await open_database(database_url, settings.db_pool_size)
    redis = Redis.from_url(redis_url, decode_responses=True)
    return Engine(redis=redis, prefix=settings.redis_prefix)


async def close_engine(engine: Engine) -> None:
    """Close what open_engine opened."""
    await engine.redis.aclose()
    await close_database()
