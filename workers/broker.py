"""The Taskiq broker: a Redis stream with a consumer group (acknowledged, at-least-once)."""

from __future__ import annotations

from taskiq import TaskiqEvents, TaskiqState
from taskiq_redis import RedisStreamBroker

from slotengine.config import Settings, get_settings
from slotengine.logs import configure_logging
from slotengine.redis.keys import task_stream
from slotengine.service.engine import close_engine, open_engine

# A message a dead worker took and never acknowledged goes to another worker after this long.
UNACKED_REDELIVERY_MS = 30_000


def make_broker(settings: Settings) -> RedisStreamBroker:
    """A broker on the settings' Redis; workers open the engine when they start."""
    broker = RedisStreamBroker(
        url=settings.redis_url or "redis://127.0.0.1:6379/0",
        queue_name=task_stream(settings.redis_prefix),
        consumer_group_name=f"{settings.redis_prefix}workers",
        # A group created after tasks were sent must still see them.
        consumer_id="0",
        idle_timeout=UNACKED_REDELIVERY_MS,
        xread_block=1000,
        maxlen=100_000,
    )

    @broker.on_event(TaskiqEvents.WORKER_STARTUP)
    async def open_resources(state: TaskiqState) -> None:
        assert settings.database_url and settings.redis_url, "worker needs both URLs"
        configure_logging(settings.log_level, settings.log_format)
        state.engine = await open_engine(
            settings, database_url=settings.database_url, redis_url=settings.redis_url
        )

    @broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
    async def close_resources(state: TaskiqState) -> None:
        await close_engine(state.engine)

    return broker


broker = make_broker(get_settings())
