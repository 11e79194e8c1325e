"""The one place Redis clients are built: API, worker, scheduler and the task broker all call it.

With SLOTENGINE_REDIS_CLUSTER the URL names one node of a Redis Cluster and every client is a
`RedisCluster`, which finds the other nodes and follows slots as they move.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis import exceptions as redis_errors
from redis._parsers.commands import AsyncCommandsParser
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
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
    client = RedisCluster.from_url(
        required(settings, "redis_url"),
        decode_responses=decode_responses,
        max_connections=settings.redis_pool_size,
        retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), CLUSTER_ATTEMPTS),
    )
    client.commands_parser = SteadyCommandsParser(client)
    return client


class SteadyCommandsParser(AsyncCommandsParser):
    """redis-py's key finder, made to survive the death of the cluster's first master.

    redis-py reads COMMAND again from its "default node" (the first master) each time it
    refreshes the slot map, and asks that node where a command's keys are (COMMAND GETKEYS, for
    XREADGROUP and the like). With that master down, every refresh failed and closed every
    connection: one dead master stopped all traffic, to the live masters too. The command table
    does not change with the topology, so it is read once; key lookups go to any master that
    answers.
    """

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__()
        self._cluster = cluster

    async def initialize(self, node: ClusterNode | None = None) -> None:
        if self.commands:
            return
        await super().initialize(node)

    async def _get_moveable_keys(self, *args: Any) -> tuple[str, ...] | None:
        unreachable: Exception | None = None
        for node in [self.node, *(n for n in self._cluster.get_primaries() if n is not self.node)]:
            self.node = node
            try:
                return await super()._get_moveable_keys(*args)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                unreachable = exc
        assert unreachable is not None
        raise unreachable


def connect(settings: Settings) -> RedisClient:
    """A Redis client for this process, answering with str; close it with `aclose()`."""
    if settings.redis_cluster:
        return cluster_client(settings)
    return Redis.from_pool(connection_pool(settings))


def on_cluster(redis: RedisClient) -> bool:
    """Whether `redis` talks to a Redis Cluster (no cross-slot pipelines, sharded pub/sub)."""
    return isinstance(redis, RedisCluster)
