"""Real worker and scheduler processes for tests, started with the suite's settings."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import psutil
from redis.asyncio import Redis

from slotengine.config import Settings
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


async def consumers(redis: Redis, settings: Settings) -> int:
    stream = task_stream(settings.redis_prefix)
    if not await redis.exists(stream):
        return 0
    groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    return sum(int(g["consumers"]) for g in groups)


async def wait_for_consumers(redis: Redis, settings: Settings, at_least: int) -> None:
    await eventually(lambda: consumers(redis, settings), lambda n: n >= at_least, within=60)


async def wait_for_scheduler(redis: Redis, settings: Settings) -> None:
    await eventually(lambda: redis.exists(heartbeat_key(settings.redis_prefix)), bool, within=60)
