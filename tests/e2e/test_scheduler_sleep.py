"""The scheduler sleeps until a timer is due instead of polling Redis, and arming a timer sooner
than its plan wakes it.

Each test runs a real scheduler process on a Redis server of its own, so INFO commandstats counts
that scheduler's commands and nothing else's.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from slotengine.config import Settings
from slotengine.embedded import start_redis
from slotengine.scheduling.source import DueTimeScheduleSource
from slotengine.service.timers import expire_hold_schedule
from tests.deadlines import eventually
from tests.processes import kill_tree, spawn
from workers.scheduler import heartbeat_key

IDLE_SECONDS = 3.0
# Counted as Redis counts them, the commands inside Lua scripts included. The 10 ms poller this
# replaced ran ~100 claims a second (4 commands each: ~400 a second); sleeping, the scheduler
# sends about once a second a claim, one due-time read and a heartbeat (~12), and a sweep every 2 s.
MOST_COMMANDS_PER_IDLE_SECOND = 20


@pytest.fixture
def own_redis_url(tmp_path: Path) -> Iterator[str]:
    server = start_redis(tmp_path / "redis")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def own_redis(own_redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(own_redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def start_scheduler(
    settings: Settings, redis_url: str, redis: Redis, **env: str
) -> subprocess.Popen[bytes]:
    process = spawn(settings, "scheduler", env={"SLOTENGINE_REDIS_URL": redis_url, **env})
    await eventually(lambda: redis.exists(heartbeat_key(settings.redis_prefix)), bool, within=60)
    return process


async def commands_sent(redis: Redis) -> int:
    """Commands Redis has run, not counting INFO (the probe's own)."""
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def test_idle_scheduler_sends_redis_only_a_few_commands_a_second(
    settings: Settings, own_redis_url: str, own_redis: Redis
) -> None:
    process = await start_scheduler(settings, own_redis_url, own_redis)
    try:
        before = await commands_sent(own_redis)
        began = time.monotonic()
        # The idle period is what is measured here: a fixed span, not a wait for an outcome.
        await asyncio.sleep(IDLE_SECONDS)
        sent = await commands_sent(own_redis) - before
        elapsed = time.monotonic() - began
    finally:
        kill_tree(process, signal.SIGTERM)
    assert sent <= MOST_COMMANDS_PER_IDLE_SECOND * elapsed, f"{sent} commands in {elapsed:.1f} s idle"


async def test_timer_armed_while_scheduler_sleeps_far_ahead_is_sent_when_due(
    settings: Settings, own_redis_url: str, own_redis: Redis
) -> None:
    # Heartbeat and sweep an hour apart, one timer due in an hour: it plans to sleep an hour.
    process = await start_scheduler(
        settings,
        own_redis_url,
        own_redis,
        SLOTENGINE_SCHEDULER_TICK_SECONDS="3600",
        SLOTENGINE_SWEEP_INTERVAL_SECONDS="3600",
    )
    try:
        source = DueTimeScheduleSource(own_redis, settings.redis_prefix)
        later = datetime.now(UTC) + timedelta(hours=1)
        await source.add_schedule(expire_hold_schedule(uuid4(), 1, later))
        soon = expire_hold_schedule(uuid4(), 1, datetime.now(UTC) + timedelta(milliseconds=300))
        await source.add_schedule(soon)
        # Sent (and so forgotten) long before the hour the scheduler meant to sleep.
        await eventually(
            lambda: own_redis.hexists(source.keys_of(soon.schedule_id).tasks, soon.schedule_id),
            lambda kept: not kept,
            within=30,
        )
        assert await source.pending() == 1  # the far timer still waits
    finally:
        kill_tree(process, signal.SIGTERM)
