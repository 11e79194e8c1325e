"""The Taskiq broker: a Redis stream with a consumer group (acknowledged, at-least-once)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from redis import exceptions as redis_errors
from taskiq import AckableMessage, TaskiqEvents, TaskiqState
from taskiq_redis import RedisStreamBroker

from slotengine.config import Settings, get_settings, unsafe_secret_reason
from slotengine.logs import configure_logging
from slotengine.redis.connection import reconnecting
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
        url=settings.redis_url or "redis://127.0.0.1:6379/0",
        queue_name=task_stream(settings.redis_prefix),
        consumer_group_name=f"{settings.redis_prefix}workers",
        # A group created after tasks were sent must still see them.
        consumer_id="0",
        idle_timeout=UNACKED_REDELIVERY_MS,
        xread_block=1000,
        maxlen=100_000,
        retry=reconnecting(),
    )

    @broker.on_event(TaskiqEvents.WORKER_STARTUP)
    async def open_resources(state: TaskiqState) -> None:
        assert settings.database_url and settings.redis_url, "worker needs both URLs"
        # Also when started as `taskiq worker workers.broker:broker`, without our CLI.
        reason = unsafe_secret_reason(settings)
        if reason is not None:
            raise SystemExit(f"slotengine worker: refusing to start: {reason}")
        configure_logging(settings.log_level, settings.log_format)
        state.engine = await open_engine(
            settings, database_url=settings.database_url, redis_url=settings.redis_url
        )

    @broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
    async def close_resources(state: TaskiqState) -> None:
        await close_engine(state.engine)

    return broker


broker = make_broker(get_settings())
