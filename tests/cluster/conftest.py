"""The cluster tier: a real three-master Redis Cluster on loopback, with its own database, two
API processes, two workers and a scheduler, all on SLOTENGINE_REDIS_CLUSTER=true."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import RedisCluster

from slotengine.config import Settings
from slotengine.redis.connection import cluster_client
from slotengine.store.database import create_database, migrate
from tests.cluster.nodes import ClusterNodes
from tests.conftest import TEST_JWT_SECRET
from tests.processes import ApiProcess, running_apis, running_workers


@pytest.fixture(scope="session")
def redis_cluster(data_dir: Path) -> Iterator[ClusterNodes]:
    nodes = ClusterNodes(data_dir / "redis-cluster")
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="session")
async def cluster_settings(postgres_server_url: str, redis_cluster: ClusterNodes) -> Settings:
    # A database of its own: the cluster tier's workers sweep every slot they can see.
    url = await create_database(postgres_server_url, f"slotengine_cluster_{uuid.uuid4().hex[:12]}")
    await migrate(url)
    return Settings(
        database_url=url,
        redis_url=redis_cluster.url,
        redis_cluster=True,
        redis_prefix=f"ct-{uuid.uuid4().hex[:8]}:",
        jwt_secret=TEST_JWT_SECRET,
        reserve_rate_per_minute=100_000,
    )


@pytest.fixture(scope="session")
async def cluster_redis(cluster_settings: Settings) -> AsyncIterator[RedisCluster]:
    client = cluster_client(cluster_settings)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
async def cluster_apis(cluster_settings: Settings) -> AsyncIterator[list[ApiProcess]]:
    async with running_apis(cluster_settings, 2) as apis:
        yield apis


@pytest.fixture(scope="session")
async def cluster_workers(
    cluster_settings: Settings, cluster_redis: RedisCluster
) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """Two workers and a scheduler."""
    async with running_workers(cluster_settings, cluster_redis, workers=2) as running:
        yield running


class Database:
    """Plain SQL on the cluster tier's database (the suite's Tortoise pool is on another)."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("postgres://", "postgresql://", 1)

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.url)
        try:
            return [dict(row) for row in await conn.fetch(query, *args)]
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def cluster_db(cluster_settings: Settings) -> Database:
    assert cluster_settings.database_url
    return Database(cluster_settings.database_url)
