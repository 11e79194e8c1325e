"""The one place Redis clients are built: API, worker, scheduler and the task broker all call it."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from slotengine.config import Settings, required

# A pooled connection to a Redis that restarted fails on its next use; without retries that
# request fails although Redis is back. Reconnect and send again a few times (about 0.4 s in
# all) before giving up: while Redis is really down, callers still fail fast.
RECONNECT_ATTEMPTS = 3
# A burst of requests waits this long for a free connection instead of failing at once.
POOL_WAIT_SECONDS = 10


def reconnecting() -> Retry:
    """Retry policy for commands that meet a dropped connection or a timeout."""
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.25), RECONNECT_ATTEMPTS)


def connection_pool(settings: Settings, *, decode_responses: bool = True) -> BlockingConnectionPool:
    """A bounded, reconnecting pool on SLOTENGINE_REDIS_URL (raw bytes for the task broker)."""
    return BlockingConnectionPool.from_url(
        required(settings, "redis_url"),
        decode_responses=decode_responses,
        max_connections=settings.redis_pool_size,
        timeout=POOL_WAIT_SECONDS,
        retry=reconnecting(),
    )


def connect(settings: Settings) -> Redis:
    """A Redis client for this process, answering with str; close it with `aclose()`."""
    return Redis.from_pool(connection_pool(settings))
