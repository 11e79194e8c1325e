"""Real servers for the suite: embedded PostgreSQL and Redis, or the ones the environment names.

SLOTENGINE_TEST_DATABASE_URL / SLOTENGINE_TEST_REDIS_URL point the suite at running servers; it
then works in a database and a key prefix of its own, so it never disturbs what else is there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from slotengine.config import Settings
from slotengine.embedded import start_postgres, start_redis
from slotengine.service.engine import Engine
from slotengine.store.database import create_database, migrate

TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def postgres_server_url(data_dir: Path) -> Iterator[str]:
    configured = os.environ.get("SLOTENGINE_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    server = start_postgres(data_dir / "postgres", durable=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> str:
    url = await create_database(postgres_server_url, f"slotengine_test_{uuid.uuid4().hex[:12]}")
    await migrate(url)
    return url


@pytest.fixture(scope="session")
def redis_url(data_dir: Path) -> Iterator[str]:
    configured = os.environ.get("SLOTENGINE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    server = start_redis(data_dir / "redis")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        # A prefix of our own: a shared Redis is never flushed under someone else.
        redis_prefix=f"test-{uuid.uuid4().hex[:8]}:",
        jwt_secret=TEST_JWT_SECRET,
        db_pool_size=30,
        # The limit's code path runs in every reserve; its refusals are tested on their own.
        reserve_rate_per_minute=100_000,
        read_rate_per_minute=1_000_000,
        live_bookings_per_holder=1_000,
        introspection=True,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    """The ASGI app with its lifespan entered: the pool and Redis client stay open all session."""
    from slotengine.api.app import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def engine(app: Starlette) -> Engine:
    engine: Engine = app.state.engine
    return engine
