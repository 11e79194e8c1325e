"""Real worker and scheduler processes for tests, started with the suite's settings."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from slotengine.config import Settings
from slotengine.embedded import free_port
from slotengine.redis.connection import RedisClient
from slotengine.redis.keys import task_stream
from tests.deadlines import eventually
from workers.scheduler import heartbeat_key


def engine_env(settings: Settings) -> dict[str, str]:
    assert settings.database_url and settings.redis_url
    return {
        **os.environ,
        "SLOTENGINE_DATABASE_URL": settings.database_url,
        "SLOTENGINE_REDIS_URL": settings.redis_url,
        "SLOTENGINE_REDIS_PREFIX": settings.redis_prefix,
        "SLOTENGINE_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "SLOTENGINE_JWT_SECRET": settings.jwt_secret,
        "SLOTENGINE_LOG_LEVEL": "warning",
        "SLOTENGINE_RESERVE_RATE_PER_MINUTE": str(settings.reserve_rate_per_minute),
        "SLOTENGINE_INTROSPECTION": str(settings.introspection).lower(),
    }


def spawn(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`slotengine <args>` on the suite's servers; `env` overrides settings for this process."""
    return subprocess.Popen(
        [sys.executable, "-m", "slotengine.cli", *args],
        env={**engine_env(settings), **(env or {})},
        stdin=subprocess.DEVNULL,
    )


async def serving(http: httpx.AsyncClient, base: str) -> bool:
    """Whether the API at `base` answers /healthz with 200 (PostgreSQL and Redis reachable)."""
    try:
        return (await http.get(f"{base}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


def kill_tree(process: subprocess.Popen[bytes], signum: int = signal.SIGKILL) -> None:
    """Signal a process and every process under it, and reap it."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signum)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        kill_tree(process, signal.SIGKILL)


async def consumers(redis: RedisClient, settings: Settings) -> int:
    stream = task_stream(settings.redis_prefix)
    if not await redis.exists(stream):
        return 0
    groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    return sum(int(g["consumers"]) for g in groups)


async def wait_for_consumers(redis: RedisClient, settings: Settings, at_least: int) -> None:
    await eventually(lambda: consumers(redis, settings), lambda n: n >= at_least, within=60)


async def wait_for_scheduler(redis: RedisClient, settings: Settings) -> None:
    await eventually(lambda: redis.exists(heartbeat_key(settings.redis_prefix)), bool, within=60)


@contextlib.asynccontextmanager
async def served(process: subprocess.Popen[bytes], port: int) -> AsyncIterator[str]:
    """The base URL of server `process` once it answers on `port`; the process is stopped on exit."""
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            await eventually(lambda: serving(http, base), bool, within=60)
        yield base
    finally:
        kill_tree(process, signal.SIGTERM)


@dataclass(frozen=True)
class ApiProcess:
    base: str
    ws: str


@contextlib.asynccontextmanager
async def running_apis(settings: Settings, count: int = 2) -> AsyncIterator[list[ApiProcess]]:
    """`count` `slotengine serve` processes on the settings' servers, stopped on exit."""
    ports = [free_port() for _ in range(count)]
    running = [spawn(settings, "serve", "--port", str(port)) for port in ports]
    try:
        async with httpx.AsyncClient() as http:
            for port in ports:
                await eventually(
                    lambda port=port: serving(http, f"http://127.0.0.1:{port}"),
                    bool,
                    within=60,  # type: ignore[misc]
                )
        yield [ApiProcess(f"http://127.0.0.1:{p}", f"ws://127.0.0.1:{p}/graphql") for p in ports]
    finally:
        for process in running:
            kill_tree(process, signal.SIGTERM)


@contextlib.asynccontextmanager
async def running_workers(
    settings: Settings, redis: RedisClient, workers: int = 1
) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """`workers` worker processes and a scheduler, serving once each has shown up in Redis."""
    running = [
        *(spawn(settings, "worker", "--workers", "1") for _ in range(workers)),
        spawn(settings, "scheduler"),
    ]
    try:
        await wait_for_consumers(redis, settings, at_least=workers)
        await wait_for_scheduler(redis, settings)
        yield running
    finally:
        for process in running:
            kill_tree(process, signal.SIGTERM)
