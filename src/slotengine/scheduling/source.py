"""A Taskiq schedule source for one-off tasks due at a precise moment.

Taskiq's stock sources are read once a second at best; this one is Redis sorted sets by due
time, claimed atomically (claim_due.lua), so a scheduler polling every few milliseconds sends
each task once and on time. A claim that is never acknowledged (the scheduler died between
claiming and sending) becomes due again when its lease ends. Due times are compared with
Redis' clock, never with a scheduler's own: every scheduler then agrees on what is due.

On one Redis a scheduler sleeps until the earliest due time; arming a timer publishes its due
time on a wake-up channel, so a scheduler sleeping past it wakes early. On a cluster (where a
pipeline cannot PUBLISH, and each shard keeps its own node's clock) schedulers poll instead.

On a cluster, schedules are spread over CLUSTER_TIMER_SHARDS shards by id, each under a hash
tag of its own, so every script touches one slot and no one node carries every timer. A shard's
due times are set and compared by the clock of the node holding it. One Redis has one shard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from taskiq import ScheduledTask, ScheduleSource

from slotengine.redis import scripts
from slotengine.redis.clock import epoch_ms, time_reply_ms
from slotengine.redis.connection import RedisClient, RedisPipeline, on_cluster
from slotengine.redis.keys import (
    CLUSTER_TIMER_SHARDS,
    ScheduleKeys,
    schedule_keys,
    schedule_shard,
    timers_wake_channel,
)

log = logging.getLogger(__name__)

CLAIM_LEASE_MS = 30_000
CLAIM_BATCH = 200
# A shard on an unreachable node is reported at most this often (the scheduler polls every 10 ms).
UNREACHABLE_LOG_SECONDS = 5.0


class DueTimeScheduleSource(ScheduleSource):
    """One-off schedules (`ScheduledTask.time`) in Redis, handed out once each when due."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self.redis = redis
        # Every process of a deployment agrees: they are all told SLOTENGINE_REDIS_CLUSTER alike.
        count = CLUSTER_TIMER_SHARDS if on_cluster(redis) else 1
        self.shards = [schedule_keys(prefix, shard) for shard in range(count)]
        self.wake = timers_wake_channel(prefix)
        self._logged_unreachable = 0.0

    def keys_of(self, schedule_id: str) -> ScheduleKeys:
        """The keys of the shard that holds `schedule_id`."""
        return self.shards[schedule_shard(schedule_id, len(self.shards))]

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        """Store the task and its due time; the same schedule id replaces the earlier one."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self.add_to(pipe, schedule)
            await pipe.execute()

    def add_to(self, pipe: RedisPipeline, schedule: ScheduledTask) -> None:
        """Queue the commands that add `schedule` on a pipeline the caller executes."""
        if schedule.time is None:
            raise ValueError("DueTimeScheduleSource only holds one-off schedules (time=...)")
        keys = self.keys_of(schedule.schedule_id)
        pipe.hset(keys.tasks, schedule.schedule_id, schedule.model_dump_json())
        pipe.zadd(keys.due, {schedule.schedule_id: epoch_ms(schedule.time)})
        if not on_cluster(self.redis):
            # Costs nothing when no scheduler listens; a scheduler that does ignores it unless it
            # is due before the scheduler would wake anyway.
            pipe.publish(self.wake, epoch_ms(schedule.time))

    async def add_schedule_in(self, schedule: ScheduledTask, delay: timedelta) -> None:
        """Store the task due `delay` from now by Redis' clock (whatever `schedule.time` says)."""
        keys = self.keys_of(schedule.schedule_id)
        due_ms = await scripts.schedule_in(
            self.redis,
            [keys.due, keys.tasks],
            [schedule.schedule_id, schedule.model_dump_json(), int(delay.total_seconds() * 1000)],
        )
        if not on_cluster(self.redis):
            await self.redis.publish(self.wake, due_ms)

    async def delete_schedule(self, schedule_id: str) -> None:
        keys = self.keys_of(schedule_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.due, schedule_id)
            pipe.zrem(keys.claimed, schedule_id)
            pipe.hdel(keys.tasks, schedule_id)
            await pipe.execute()

    async def get_schedules(self) -> list[ScheduledTask]:
        """Claim and return the schedules due now; each is handed to one caller only.

        A shard on a node that does not answer is skipped (its timers wait for it); only when no
        shard answers does this raise.
        """
        args = [CLAIM_LEASE_MS, CLAIM_BATCH]
        if not on_cluster(self.redis):
            # One Redis holds every shard: one pipelined round trip claims from all of them.
            flats = await scripts.claim_due.run_many(
                self.redis, [(shard.all(), args) for shard in self.shards]
            )
            return [task for flat in flats for task in _tasks(flat)]
        claims = await asyncio.gather(
            *(scripts.claim_due(self.redis, shard.all(), args) for shard in self.shards),
            return_exceptions=True,
        )
        failures = [claim for claim in claims if isinstance(claim, BaseException)]
        if len(failures) == len(claims):
            raise failures[0]
        if failures and time.monotonic() - self._logged_unreachable > UNREACHABLE_LOG_SECONDS:
            self._logged_unreachable = time.monotonic()
            log.warning("%d of %d timer shards unreachable (%s)", len(failures), len(claims), failures[0])
        return [task for claim in claims if not isinstance(claim, BaseException) for task in _tasks(claim)]

    async def post_send(self, task: ScheduledTask) -> None:
        """The task is on the broker's stream: forget the schedule."""
        await self.delete_schedule(task.schedule_id)

    async def earliest_due(self) -> tuple[int | None, int]:
        """(When the next schedule or lapsed claim is due, Redis' now), both epoch ms, in one round
        trip. One Redis only: on a cluster each shard has its own node's clock, and schedulers poll."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                pipe.zrange(shard.due, 0, 0, withscores=True)
                pipe.zrange(shard.claimed, 0, 0, withscores=True)
            pipe.time()
            *firsts, now = await pipe.execute()
        # A claim whose scheduler died is due again when its lease ends (claim_due.lua).
        moments = [int(float(first[0][1])) for first in firsts if first]
        return (min(moments) if moments else None), time_reply_ms(now)

    async def pending(self) -> int:
        """How many schedules wait (due later, or claimed and not yet sent)."""
        counts = await asyncio.gather(
            *(self.redis.zcard(key) for shard in self.shards for key in (shard.due, shard.claimed))
        )
        return sum(int(count) for count in counts)

    async def all_armed(self) -> bool:
        """Whether every shard still holds its timers (a restart or flush loses a node's shards)."""
        markers = await asyncio.gather(*(self.redis.exists(shard.armed) for shard in self.shards))
        return all(markers)

    async def mark_armed(self) -> None:
        """Record that every shard holds its timers (called once they were set from PostgreSQL)."""
        await asyncio.gather(*(self.redis.set(shard.armed, "1") for shard in self.shards))


def _tasks(flat: list[Any]) -> list[ScheduledTask]:
    """The tasks in claim_due.lua's flat {schedule id, task JSON, ...} reply."""
    return [ScheduledTask.model_validate_json(flat[i + 1]) for i in range(0, len(flat), 2)]
