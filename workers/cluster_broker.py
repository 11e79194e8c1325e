"""The task broker on a Redis Cluster: the same stream and consumer group, on one hash tag.

taskiq-redis' RedisStreamClusterBroker rejects an idle timeout and never re-claims what a dead
worker took; this one does both, and rides out a cluster that is failing over or re-sharding
(MOVED, TRYAGAIN, CLUSTERDOWN, a node restarting) instead of ending its worker.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import RedisCluster
from taskiq import AckableMessage, AsyncBroker
from taskiq.message import BrokerMessage

log = logging.getLogger(__name__)

# What a cluster throws while a node is down or its slots are moving: wait, then ask again.
PASSING_FAULTS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.MovedError,
    redis_errors.RedisClusterException,
)
FIRST_PAUSE_SECONDS = 0.1
LONGEST_PAUSE_SECONDS = 2.0


class ClusterStreamBroker(AsyncBroker):
    """A Redis stream with a consumer group on a cluster: acknowledged, at-least-once."""

    def __init__(
        self,
        redis: RedisCluster,
        *,
        stream: str,
        group: str,
        idle_timeout_ms: int,
        block_ms: int = 1000,
        batch: int = 100,
        maxlen: int | None = None,
    ) -> None:
        super().__init__()
        self.redis = redis  # answering bytes: task messages are bytes
        self.stream = stream
        self.group = group
        self.consumer = str(uuid.uuid4())
        self.idle_timeout_ms = idle_timeout_ms
        self.block_ms = block_ms
        self.batch = batch
        self.maxlen = maxlen

    async def startup(self) -> None:
        await super().startup()
        if self.is_worker_process:
            await self._declare_group()

    async def shutdown(self) -> None:
        await self.redis.aclose()
        await super().shutdown()

    async def _declare_group(self) -> None:
        try:
            # From the stream's start: a group created after tasks were sent must still see them.
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def kick(self, message: BrokerMessage) -> None:
        """Append the task to the stream."""
        await self.redis.xadd(self.stream, {b"data": message.message}, maxlen=self.maxlen, approximate=True)

    def _ack(self, message_id: bytes) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            await self.redis.xack(self.stream, self.group, message_id)

        return ack

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """New tasks, then any a dead worker took and left unacknowledged for idle_timeout_ms."""
        pause = FIRST_PAUSE_SECONDS
        while True:
            try:
                fetched: Any = await self.redis.xreadgroup(
                    self.group, self.consumer, {self.stream: ">"}, count=self.batch, block=self.block_ms
                )
                # XAUTOCLAIM is atomic: two workers claiming at once never get the same message.
                claimed: Any = await self.redis.xautoclaim(
                    self.stream, self.group, self.consumer, self.idle_timeout_ms, count=self.batch
                )
            except PASSING_FAULTS as exc:
                log.warning("task stream unreachable (%s): retrying in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
                continue
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The node restarted without its data (or the stream was flushed): declare again.
                log.warning("task stream or its consumer group is gone: declaring them again")
                try:
                    await self._declare_group()
                except PASSING_FAULTS:
                    await asyncio.sleep(pause)
                continue
            except Exception:
                # redis-py's cluster client can fail inside itself while a master is down (a
                # connection it closed, used again); a worker that let it through would die.
                log.exception("task stream read failed: retrying in %.1fs", pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
                continue
            pause = FIRST_PAUSE_SECONDS
            messages = [entry for _, entries in fetched or [] for entry in entries]
            messages += claimed[1] if claimed else []
            for message_id, fields in messages:
                if fields is None:  # deleted from the stream (trimmed) while pending
                    await self._ack(message_id)()
                    continue
                yield AckableMessage(data=fields[b"data"], ack=self._ack(message_id))
