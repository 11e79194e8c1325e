"""The cluster task broker hands a dead consumer's unacknowledged task to another (XAUTOCLAIM)."""

from __future__ import annotations

import asyncio
import uuid

from taskiq.message import BrokerMessage

from slotengine.config import Settings
from slotengine.redis.connection import cluster_client
from slotengine.redis.keys import task_stream
from workers.cluster_broker import ClusterStreamBroker


def broker_on(settings: Settings, prefix: str, idle_timeout_ms: int) -> ClusterStreamBroker:
    return ClusterStreamBroker(
        cluster_client(settings, decode_responses=False),
        stream=task_stream(prefix),
        group=f"{prefix}workers",
        idle_timeout_ms=idle_timeout_ms,
        block_ms=100,
    )


async def test_an_unacknowledged_task_goes_to_another_consumer(cluster_settings: Settings) -> None:
    prefix = f"{cluster_settings.redis_prefix}redeliver-{uuid.uuid4().hex[:6]}:"
    dead, alive = broker_on(cluster_settings, prefix, 200), broker_on(cluster_settings, prefix, 200)
    try:
        await dead._declare_group()
        await alive._declare_group()
        await dead.kick(BrokerMessage(task_id="t1", task_name="noop", message=b"payload", labels={}))

        taken = await asyncio.wait_for(anext(dead.listen()), 10)  # and its consumer dies holding it
        redelivered = await asyncio.wait_for(anext(alive.listen()), 10)

        assert taken.data == redelivered.data == b"payload"
        await redelivered.ack()
        pending = await alive.redis.xpending(task_stream(prefix), f"{prefix}workers")
        assert pending["pending"] == 0
    finally:
        await dead.redis.aclose()
        await alive.redis.aclose()
