"""The one place Redis clients are built: API, worker, scheduler and the task broker all call it.

With SLOTENGINE_REDIS_CLUSTER the URL names one node of a Redis Cluster and every client is a
`RedisCluster`, which finds the other nodes and follows slots as they move.
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from slotengine.config import Settings, required

# Either kind of client; code that must behave differently on a cluster asks `on_cluster`.
RedisClient: TypeAlias = "Redis | RedisCluster"
RedisPipeline: TypeAlias = "Pipeline | ClusterPipeline"

# A pooled connection to a Redis that restarted fails on its next use; without retries that
# request fails although Redis is back. Reconnect and send again a few times (about 0.4 s in
# all) before giving up: while Redis is really down, callers still fail fast.
RECONNECT_ATTEMPTS = 3
# A burst of requests waits this long for a free connection instead of failing at once.
POOL_WAIT_SECONDS = 10
# A cluster client re-reads the slot map and retries on MOVED, TRYAGAIN and CLUSTERDOWN; a
# failover or a restarted master takes a few seconds, so it tries for about that long.
CLUSTER_ATTEMPTS = 6


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


def cluster_client(settings: Settings, *, decode_responses: bool = True) -> RedisCluster:
    """A client of the Redis Cluster SLOTENGINE_REDIS_URL belongs to (not connected until used)."""
    return RedisCluster.from_url(
        required(settings, "redis_url"),
        decode_responses=decode_responses,
        max_connections=settings.redis_pool_size,
        retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), CLUSTER_ATTEMPTS),
    )


def connect(settings: Settings) -> RedisClient:
    """A Redis client for this process, answering with str; close it with `aclose()`."""
    if settings.redis_cluster:
        return cluster_client(settings)
    return Redis.from_pool(connection_pool(settings))


def on_cluster(redis: RedisClient) -> bool:
    """Whether `redis` talks to a Redis Cluster (no cross-slot pipelines, sharded pub/sub)."""
    return isinstance(redis, RedisCluster)
