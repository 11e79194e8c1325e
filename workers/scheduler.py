"""The timer scheduler: sends due one-off schedules to the broker within milliseconds, kicks
the backstop sweep every few seconds, and has the timers set again from PostgreSQL when Redis
lost them. Several may run at once: claims are atomic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from redis.exceptions import RedisClusterException, RedisError
from taskiq import TaskiqScheduler
from taskiq.exceptions import BrokerError
from taskiq.kicker import AsyncKicker

from slotengine.config import Settings
from slotengine.logs import configure_logging
from slotengine.redis.connection import connect
from slotengine.scheduling.source import DueTimeScheduleSource
from slotengine.service.timers import REARM_TIMERS_TASK, SWEEP_TASK
from workers.broker import make_broker

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5
REDIS_RETRY_SECONDS = 0.5


def heartbeat_key(prefix: str) -> str:
    return f"{prefix}scheduler:heartbeat"


async def run_scheduler(settings: Settings, stop: asyncio.Event) -> None:
    """Send due schedules until `stop` is set."""
    broker = make_broker(settings)
    redis = connect(settings)
    source = DueTimeScheduleSource(redis, settings.redis_prefix)
    scheduler = TaskiqScheduler(broker, [source])
    await scheduler.startup()
    sweep: AsyncKicker[[], int] = AsyncKicker(SWEEP_TASK, broker, {})
    rearm: AsyncKicker[[], int] = AsyncKicker(REARM_TIMERS_TASK, broker, {})
    next_sweep = next_beat = time.monotonic()
    try:
        while not stop.is_set():
            pause = settings.scheduler_tick_seconds
            try:
                # A burst of holds lapsing together is sent at once, not one after another.
                due = await source.get_schedules()
                if due:
                    await asyncio.gather(*(scheduler.on_ready(source, task) for task in due))
                now = time.monotonic()
                if now >= next_sweep:
                    await sweep.kiq()
                    next_sweep = now + settings.sweep_interval_seconds
                if now >= next_beat:
                    await redis.set(
                        heartbeat_key(settings.redis_prefix), str(time.time()), ex=HEARTBEAT_SECONDS
                    )
                    # A Redis that lost its data lost every timer with it: have a worker set them
                    # again from PostgreSQL (the sweep alone would end those holds seconds late).
                    # Marked only once sent; several schedulers may send it, which is harmless.
                    if not await source.all_armed():
                        await rearm.kiq()
                        await source.mark_armed()
                    next_beat = now + 1
            except (RedisError, BrokerError, RedisClusterException) as exc:
                # Redis restarting or unreachable (the broker wraps its errors in BrokerError):
                # keep trying. Timers it lost are re-armed (and swept) once it answers again.
                log.warning("scheduler cannot reach Redis (%s): retrying", exc)
                pause = REDIS_RETRY_SECONDS
            except Exception:
                # redis-py's cluster client can fail inside itself while a master is down (a
                # connection it closed, used again): the scheduler must outlive that too.
                log.exception("scheduler failed to reach Redis: retrying")
                pause = REDIS_RETRY_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
    finally:
        await scheduler.shutdown()
        await redis.aclose()


def main(settings: Settings) -> int:
    """Run the scheduler in the foreground until SIGINT or SIGTERM."""
    configure_logging(settings.log_level, settings.log_format)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        log.info("scheduler started (tick %.3fs)", settings.scheduler_tick_seconds)
        await run_scheduler(settings, stop)

    asyncio.run(serve())
    return 0
