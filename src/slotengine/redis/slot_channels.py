"""Slot channels: how announcements are published and read, on one Redis or on a cluster.

On a Redis 7 cluster a slot's channel is sharded (SPUBLISH/SSUBSCRIBE): it lives on the node
owning the slot's hash tag, so announcements do not cross the cluster bus to every node, and
redis-py's cluster pub/sub resubscribes on the new owner when the slot moves. A cluster whose
servers lack SPUBLISH (Redis 6) falls back to classic PUBLISH, which every node relays; the
choice is made once per process and logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from redis.asyncio import RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub
from redis.exceptions import ResponseError

from slotengine.redis.connection import RedisClient

log = logging.getLogger(__name__)

# A sharded subscription is one connection per node, read in turn: each is polled this long, so
# an announcement waits at most (nodes - 1) x this for its turn.
SHARD_POLL_SECONDS = 0.01


class SlotChannels:
    """Publishes announcements and opens subscriptions, sharded where the cluster allows it."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._sharded: bool | None = None if isinstance(redis, RedisCluster) else False
        self._deciding = asyncio.Lock()

    async def sharded(self, channel: str) -> bool:
        """Whether slot channels are sharded here (asked once, of the node owning `channel`).

        The node asked is one the caller is about to use anyway: a probe on a fixed channel would
        fail for as long as that channel's node is down, whatever node the caller needs.
        """
        if self._sharded is None:
            async with self._deciding:
                if self._sharded is None:
                    self._sharded = await _supports_spublish(self.redis, channel)
                    if not self._sharded:
                        log.warning("this Redis Cluster lacks SPUBLISH (Redis < 7): classic PUBLISH it is")
        return self._sharded

    async def publish(self, channel: str, message: str) -> None:
        """Announce `message` on `channel`."""
        if await self.sharded(channel):
            await self.redis.spublish(channel, message)
        else:
            await self.redis.publish(channel, message)

    async def subscription(self, first_channel: str) -> Subscription:
        """A new subscription, empty until told which channels to follow (`first_channel` first)."""
        if await self.sharded(first_channel):
            assert isinstance(self.redis, RedisCluster)
            return ShardedSubscription(self.redis.pubsub())
        return ClassicSubscription(self.redis.pubsub())


async def _supports_spublish(redis: RedisClient, channel: str) -> bool:
    # An empty SPUBLISH on a channel of the same hash tag: listeners ignore what they cannot parse.
    try:
        await redis.spublish(f"{channel}:probe", "")
    except ResponseError as exc:
        if "unknown command" in str(exc).lower():
            return False
        raise
    return True


class Subscription:
    """Channels followed on one logical connection; messages come as {"type", "channel", "data"}.

    `type` is "subscribe" once Redis confirmed a channel, "message" for an announcement.
    """

    async def subscribe(self, channel: str) -> None:
        raise NotImplementedError

    async def unsubscribe(self, channel: str) -> None:
        raise NotImplementedError

    async def get_message(self, wait: float) -> dict[str, Any] | None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class ClassicSubscription(Subscription):
    """SUBSCRIBE on one connection (one Redis, or any node of a cluster without SPUBLISH)."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub

    async def subscribe(self, channel: str) -> None:
        await self.pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.pubsub.unsubscribe(channel)

    async def get_message(self, wait: float) -> dict[str, Any] | None:
        message: dict[str, Any] | None = await self.pubsub.get_message(timeout=wait)
        return message

    async def aclose(self) -> None:
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]


class ShardedSubscription(Subscription):
    """SSUBSCRIBE on the node owning each channel's slot, followed as the slot moves."""

    _TYPES: ClassVar[dict[str, str]] = {
        "ssubscribe": "subscribe",
        "smessage": "message",
        "sunsubscribe": "unsubscribe",
    }

    def __init__(self, pubsub: ClusterPubSub) -> None:
        self.pubsub = pubsub

    async def subscribe(self, channel: str) -> None:
        await self.pubsub.ssubscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.pubsub.sunsubscribe(channel)

    async def get_message(self, wait: float) -> dict[str, Any] | None:
        if not self.pubsub.node_pubsub_mapping:
            # Nothing followed: redis-py would answer at once, and its reader would spin.
            await asyncio.sleep(wait)
            return None
        message: dict[str, Any] | None = await self.pubsub.get_sharded_message(
            timeout=min(wait, SHARD_POLL_SECONDS)
        )
        if message is None:
            return None
        kind = message.get("type")
        return {**message, "type": self._TYPES.get(kind, kind) if isinstance(kind, str) else kind}

    async def aclose(self) -> None:
        await self.pubsub.aclose()
