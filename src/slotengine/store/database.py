"""Opening Tortoise on PostgreSQL, applying versioned migrations, and the raw connection."""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url

MODELS = ["slotengine.store.models"]
# Any fixed number works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 7_301_144


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _asyncpg_dsn(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql", query=""))


async def create_database(server_url: str, database: str) -> str:
    """Create `database` on the server at `server_url` unless it exists; return its URL."""
    conn = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return _with_database(server_url, database)


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("slotengine.store") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(url: str) -> list[str]:
    """Apply the migrations not yet applied, in order, each in its own transaction."""
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    applied_now: list[str] = []
    try:
        # Several processes may start at once (api, worker): one migrates, the others wait.
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in _migrations():
            if version in applied:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied_now


async def _release_as_is(connection: asyncpg.Connection) -> None:
    """Hand a connection back to the pool without asyncpg's reset query.

    asyncpg still rolls back an open transaction first. The reset query (unlock advisory locks,
    close cursors, unlisten, RESET ALL) would cost a round trip per query for session state the
    engine never leaves on a pooled connection: migrations lock on a connection of their own.
    """


async def open_database(url: str, pool_size: int = 20) -> None:
    """Start Tortoise's pool for this process (global, so every task and request sees it)."""
    parts = urlsplit(url)
    db_url = urlunsplit(parts._replace(query=f"maxsize={pool_size}&minsize=1"))
    default = expand_db_url(db_url)
    default["credentials"]["reset"] = _release_as_is
    await Tortoise.init(
        config={
            "connections": {"default": default},
            "apps": {"models": {"models": MODELS, "default_connection": "default"}},
            "use_tz": True,
            "timezone": "UTC",
        },
        _enable_global_fallback=True,
    )


async def close_database() -> None:
    """Close this process's pool."""
    await Tortoise.close_connections()


def connection() -> BaseDBAsyncClient:
    """The default connection (a pool), for raw SQL outside a transaction."""
    client: BaseDBAsyncClient = connections.get("default")
    return client
