"""The timer scheduler: sends due one-off schedules to the broker within milliseconds, kicks
the backstop sweep every few seconds, and has the timers set again from PostgreSQL when Redis
lost them. Several may run at once: claims are atomic.

It does not poll: it sleeps until the earliest due time (or its next sweep or heartbeat), and
arming a timer publishes the timer's due time on a wake-up channel it listens to, so a timer
due sooner than that wakes it. Idle, it sends Redis a few commands a second, not a hundred.
On a Redis Cluster it polls every CLUSTER_POLL_SECONDS instead: timers are spread over shards
on several nodes, each with its own clock, and a cluster pipeline cannot publish wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time

from redis.asyncio.client import PubSub
from redis.exceptions import RedisClusterException, RedisError
from taskiq import TaskiqScheduler
from taskiq.exceptions import BrokerError
from taskiq.kicker import AsyncKicker

from slotengine.config import Settings, unsafe_secret_reason
from slotengine.logs import configure_logging
from slotengine.redis.connection import connect, on_cluster
from slotengine.scheduling.source import CLAIM_BATCH, DueTimeScheduleSource
from slotengine.service.timers import DISPATCH_WEBHOOKS_TASK, REARM_TIMERS_TASK, SWEEP_TASK
from workers.broker import make_broker

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5
REDIS_RETRY_SECONDS = 0.5
STOP_CHECK_SECONDS = 0.25  # a sleeping scheduler notices a stop at least this often
CLUSTER_POLL_SECONDS = 0.01
# After Redis was unreachable or lost its data: how long, and how finely, to poll instead of sleeping.
RECOVERY_SECONDS = 5.0
RECOVERY_TICK_SECONDS = 0.01
RECOVERY_BEAT_SECONDS = 0.1


def heartbeat_key(prefix: str) -> str:
    return f"{prefix}scheduler:heartbeat"


async def run_scheduler(settings: Settings, stop: asyncio.Event) -> None:
    """Send due schedules until `stop` is set."""
    broker = make_broker(settings)
    redis = connect(settings)
    source = DueTimeScheduleSource(redis, settings.redis_prefix)
    scheduler = TaskiqScheduler(broker, [source])
    await scheduler.startup()
    # Reading messages already delivered sends Redis nothing: a sleep costs no commands.
    wakeups = None if on_cluster(redis) else redis.pubsub(ignore_subscribe_messages=True)
    sweep: AsyncKicker[[], int] = AsyncKicker(SWEEP_TASK, broker, {})
    rearm: AsyncKicker[[], int] = AsyncKicker(REARM_TIMERS_TASK, broker, {})
    webhooks: AsyncKicker[[], int] = AsyncKicker(DISPATCH_WEBHOOKS_TASK, broker, {})
    beat_every = settings.scheduler_tick_seconds
    next_sweep = next_beat = next_webhooks = time.monotonic()
    # After Redis failed us, poll at a fine tick until then: wake-ups published while the
    # subscription was down (timers re-armed from PostgreSQL into a restarted Redis) are lost.
    recovering_until = 0.0
    try:
        while not stop.is_set():
            try:
                if wakeups is not None and not wakeups.subscribed:
                    # Subscribed before due times are read: no timer armed after a read is missed.
                    await wakeups.subscribe(source.wake)
                # A burst of holds lapsing together is sent at once, not one after another.
                due = await source.get_schedules()
                if due:
                    await asyncio.gather(*(scheduler.on_ready(source, task) for task in due))
                now = time.monotonic()
                if now >= next_sweep:
                    await sweep.kiq()
                    next_sweep = now + settings.sweep_interval_seconds
                if now >= next_webhooks:
                    # Deliveries are written by PostgreSQL with their transitions: a worker sends
                    # those due (new ones, and retries whose backoff is over).
                    await webhooks.kiq()
                    next_webhooks = now + settings.webhook_poll_seconds
                if now >= next_beat:
                    await redis.set(
                        heartbeat_key(settings.redis_prefix),
                        str(time.time()),
                        ex=max(HEARTBEAT_SECONDS, math.ceil(3 * beat_every)),
                    )
                    # A Redis that lost its data lost every timer with it: have a worker set them
                    # again from PostgreSQL (the sweep alone would end those holds seconds late).
                    # Marked only once sent; several schedulers may send it, which is harmless.
                    if not await source.all_armed():
                        await rearm.kiq()
                        await source.mark_armed()
                    next_beat = now + (beat_every if now >= recovering_until else RECOVERY_BEAT_SECONDS)
                if len(due) >= CLAIM_BATCH:
                    continue  # more may be due already
                if wakeups is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), CLUSTER_POLL_SECONDS)
                    continue
                earliest_ms, redis_now_ms = await source.earliest_due()
                woke = time.monotonic()
                pause = min(next_sweep, next_beat, next_webhooks) - woke
                if earliest_ms is not None:
                    pause = min(pause, (earliest_ms - redis_now_ms) / 1000)
                if woke < recovering_until:
                    pause = min(pause, RECOVERY_TICK_SECONDS)
                await _sleep(wakeups, pause, stop, redis_now_ms, woke)
            except (RedisError, BrokerError, RedisClusterException) as exc:
                # Redis restarting or unreachable (the broker wraps its errors in BrokerError):
                # keep trying. Timers it lost are re-armed (and swept) once it answers again.
                # The wake-up subscription reconnects (and subscribes again) on its next read.
                log.warning("scheduler cannot reach Redis (%s): retrying", exc)
                recovering_until = time.monotonic() + RECOVERY_SECONDS
                next_beat = 0.0  # check at once, when it answers, whether it lost the timers
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), REDIS_RETRY_SECONDS)
            except Exception:
                # redis-py's cluster client can fail inside itself while a master is down (a
                # connection it closed, used again): the scheduler must outlive that too.
                log.exception("scheduler failed to reach Redis: retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), REDIS_RETRY_SECONDS)
    finally:
        if wakeups is not None:
            with contextlib.suppress(RedisError):
                await wakeups.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1
        await scheduler.shutdown()
        await redis.aclose()


async def _sleep(wakeups: PubSub, seconds: float, stop: asyncio.Event, redis_ms: int, at: float) -> None:
    """Sleep `seconds`, shortened by any wake-up announcing a timer due sooner; `redis_ms` is
    Redis' clock at monotonic time `at`, so due times (Redis' clock) map onto our own."""
    deadline = at + seconds
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        message = await wakeups.get_message(timeout=min(remaining, STOP_CHECK_SECONDS))
        if message is not None:
            due_ms = int(message["data"])
            deadline = min(deadline, at + (due_ms - redis_ms) / 1000)


def main(settings: Settings) -> int:
    """Run the scheduler in the foreground until SIGINT or SIGTERM."""
    reason = unsafe_secret_reason(settings)
    if reason is not None:
        raise SystemExit(f"slotengine scheduler: refusing to start: {reason}")
    configure_logging(settings.log_level, settings.log_format)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        log.info("scheduler started (heartbeat every %.3fs)", settings.scheduler_tick_seconds)
        await run_scheduler(settings, stop)

    asyncio.run(serve())
    return 0
