"""The live connections a service call needs, opened once per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from slotengine.config import Settings, required
from slotengine.domain.webhook_policy import AddressRules, DeliveryRules
from slotengine.redis.connection import RedisClient, connect
from slotengine.redis.keys import SlotKeys, slot_channel, slot_keys
from slotengine.redis.pipelining import PipelineBatcher
from slotengine.redis.slot_channels import SlotChannels
from slotengine.scheduling.source import DueTimeScheduleSource
from slotengine.service.combining import Combiner
from slotengine.service.read_gate import ReadGate
from slotengine.service.timers import Timers
from slotengine.store.database import close_database, open_database


@dataclass(frozen=True, slots=True)
class Engine:
    """Redis client and key prefix; PostgreSQL is reached through Tortoise's global pool."""

    redis: RedisClient
    prefix: str
    timers: Timers
    slot_channels: SlotChannels
    reserve_rate_per_minute: int = 0  # per holder; 0 = no limit
    read_rate_per_minute: int = 0  # per client (holder or address); 0 = no limit
    live_bookings_per_holder: int = 0  # holds and waits at once; 0 = no cap
    resume_window_versions: int = 10_000  # changes a resumed subscription may replay
    read_gate: ReadGate = field(default_factory=lambda: ReadGate(connections=5, wait_seconds=2.0))
    webhooks: DeliveryRules = field(default_factory=DeliveryRules)
    # This process's batches of concurrent reservations, per slot (see service/combining.py).
    reservations: Combiner[Any, Any, Any] = field(default_factory=Combiner, compare=False)
    # And of concurrent confirms, cancels and completes, per slot (see service/booking_changes.py).
    changes: Combiner[Any, Any, Any] = field(default_factory=Combiner, compare=False)
    # This process's small pipelines, merged into shared round trips (None on a cluster, whose
    # pipelines split per node and refuse EVALSHA; see redis/pipelining.py).
    pipelines: PipelineBatcher | None = field(default=None, compare=False)

    def keys(self, slot_id: str) -> SlotKeys:
        return slot_keys(self.prefix, slot_id)

    def channel(self, slot_id: str) -> str:
        return slot_channel(self.prefix, slot_id)


async def open_engine(settings: Settings) -> Engine:
    """Open the database pool and a Redis client for this process (both URLs must be set)."""
    redis = connect(settings)
    await open_database(required(settings, "database_url"), settings.db_pool_size)
    # Imported here: the webhook service itself works on an Engine.
    from slotengine.service.webhook_endpoints import sync_configured_endpoints

    await sync_configured_endpoints(settings.webhook_endpoints)
    return engine_on(
        redis,
        settings.redis_prefix,
        reserve_rate_per_minute=settings.reserve_rate_per_minute,
        read_rate_per_minute=settings.read_rate_per_minute,
        live_bookings_per_holder=settings.live_bookings_per_holder,
        resume_window_versions=settings.resume_window_versions,
        read_gate=ReadGate(settings.read_db_connections, settings.read_wait_seconds),
        webhooks=delivery_rules(settings),
    )


def delivery_rules(settings: Settings) -> DeliveryRules:
    """The settings' webhook rules: addresses allowed, retries, the timeout of one attempt."""
    return DeliveryRules(
        addresses=AddressRules(settings.webhook_allow_loopback, settings.webhook_allow_private),
        retry_schedule=tuple(settings.webhook_retry_schedule),
        timeout_seconds=settings.webhook_timeout_seconds,
    )


def engine_on(
    redis: RedisClient,
    prefix: str,
    *,
    reserve_rate_per_minute: int = 0,
    read_rate_per_minute: int = 0,
    live_bookings_per_holder: int = 0,
    resume_window_versions: int = 10_000,
    read_gate: ReadGate | None = None,
    webhooks: DeliveryRules | None = None,
) -> Engine:
    """An engine over an open Redis client (the database pool is opened separately)."""
    source = DueTimeScheduleSource(redis, prefix)
    return Engine(
        redis=redis,
        prefix=prefix,
        timers=Timers(source),
        slot_channels=SlotChannels(redis),
        reserve_rate_per_minute=reserve_rate_per_minute,
        read_rate_per_minute=read_rate_per_minute,
        live_bookings_per_holder=live_bookings_per_holder,
        resume_window_versions=resume_window_versions,
        read_gate=read_gate or ReadGate(connections=5, wait_seconds=2.0),
        webhooks=webhooks or DeliveryRules(),
        pipelines=PipelineBatcher(redis) if isinstance(redis, Redis) else None,
    )


async def close_engine(engine: Engine) -> None:
    """Close what open_engine opened."""
    await engine.redis.aclose()
    await close_database()
