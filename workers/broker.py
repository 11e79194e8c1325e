"""The Taskiq broker: a Redis stream with a consumer group (acknowledged, at-least-once).

`taskiq worker workers.broker:broker` (what `slotengine worker` runs) finds the broker here; it
is built from the settings when Taskiq first asks for it, never when this module is imported.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator
from typing import Any

from redis import exceptions as redis_errors
from taskiq import AckableMessage, TaskiqEvents, TaskiqState
from taskiq_redis import RedisStreamBroker

from slotengine.config import Settings, get_settings, required, unsafe_secret_reason
from slotengine.logs import configure_logging
from slotengine.redis.connection import connection_pool
from slotengine.redis.keys import task_stream
from slotengine.service.engine import close_engine, open_engine

log = logging.getLogger(__name__)

# A message a dead worker took and never acknowledged goes to another worker after this long.
UNACKED_REDELIVERY_MS = 30_000
RECONNECT_PAUSE_SECONDS = 0.5


class ResilientStreamBroker(RedisStreamBroker):
    """A stream broker whose workers outlive a Redis restart or flush."""

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        # Taskiq's own listener ends at the first connection error, or at NOGROUP once a
        # restarted Redis has forgotten the stream and its group: its worker process dies.
        while True:
            try:
                async for message in super().listen():
                    yield message
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                log.warning("task stream unreachable (%s): reconnecting", exc)
                await asyncio.sleep(RECONNECT_PAUSE_SECONDS)
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis lost the stream (restart without persistence, flush): declare it again.
                log.warning("task stream or its consumer group is gone: declaring them again")
                try:
                    await self._declare_consumer_group()
                except (redis_errors.ConnectionError, redis_errors.TimeoutError):
                    await asyncio.sleep(RECONNECT_PAUSE_SECONDS)


def make_broker(settings: Settings) -> RedisStreamBroker:
    """A broker on the settings' Redis; workers open the engine when they start."""
    broker = ResilientStreamBroker(
        url=required(settings, "redis_url"),
        queue_name=task_stream(settings.redis_prefix),
        consumer_group_name=f"{settings.redis_prefix}workers",
        # A group created after tasks were sent must still see them.
        consumer_id="0",
        idle_timeout=UNACKED_REDELIVERY_MS,
        xread_block=1000,
        maxlen=100_000,
    )
    # Taskiq builds a pool from the URL; ours is the engine's one way to reach Redis (bounded,
    # reconnecting). Task messages are bytes, so it answers undecoded.
    broker.connection_pool = connection_pool(settings, decode_responses=False)

    @broker.on_event(TaskiqEvents.WORKER_STARTUP)
    async def open_resources(state: TaskiqState) -> None:
        # Also when started as `taskiq worker workers.broker:broker`, without our CLI.
        reason = unsafe_secret_reason(settings)
        if reason is not None:
            raise SystemExit(f"slotengine worker: refusing to start: {reason}")
        configure_logging(settings.log_level, settings.log_format)
        state.engine = await open_engine(settings)

    @broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
    async def close_resources(state: TaskiqState) -> None:
        await close_engine(state.engine)

    return broker


@functools.cache
def worker_broker() -> RedisStreamBroker:
    """The broker of this worker process, from its settings, with the engine's tasks on it."""
    from workers.tasks import register_tasks

    broker = make_broker(get_settings())
    register_tasks(broker)
    return broker


def __getattr__(name: str) -> Any:
    # Taskiq's CLI looks up `workers.broker:broker` with getattr: build it only then.
    if name == "broker":
        return worker_broker()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
