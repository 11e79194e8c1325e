"""A Taskiq schedule source for one-off tasks due at a precise moment.

Taskiq's stock sources are read once a second at best; this one is a Redis sorted set by due
time, claimed atomically (claim_due.lua), so each task is sent once and on time. A scheduler
sleeps until the earliest due time; arming a timer publishes its due time on a wake-up channel,
so a scheduler sleeping past it wakes early. A claim that is never acknowledged (the scheduler died between
claiming and sending) becomes due again when its lease ends. Due times are compared with
Redis' clock, never with a scheduler's own: every scheduler then agrees on what is due.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from taskiq import ScheduledTask, ScheduleSource

from slotengine.redis import scripts
from slotengine.redis.clock import epoch_ms, redis_now_ms, time_reply_ms
from slotengine.redis.keys import ScheduleKeys

CLAIM_LEASE_MS = 30_000
CLAIM_BATCH = 200


class DueTimeScheduleSource(ScheduleSource):
    """One-off schedules (`ScheduledTask.time`) in Redis, handed out once each when due."""

    def __init__(self, redis: Redis, keys: ScheduleKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        """Store the task and its due time; the same schedule id replaces the earlier one."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self.add_to(pipe, schedule)
            await pipe.execute()

    def add_to(self, pipe: Pipeline, schedule: ScheduledTask) -> None:
        """Queue the commands that add `schedule` on a pipeline the caller executes."""
        if schedule.time is None:
            raise ValueError("DueTimeScheduleSource only holds one-off schedules (time=...)")
        self._add_at(pipe, schedule, epoch_ms(schedule.time))

    async def add_schedule_in(self, schedule: ScheduledTask, delay: timedelta) -> None:
        """Store the task due `delay` from now by Redis' clock (whatever `schedule.time` says)."""
        due_ms = await redis_now_ms(self.redis) + int(delay.total_seconds() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            self._add_at(pipe, schedule, due_ms)
            await pipe.execute()

    def _add_at(self, pipe: Pipeline, schedule: ScheduledTask, due_ms: int) -> None:
        pipe.hset(self.keys.tasks, schedule.schedule_id, schedule.model_dump_json())
        pipe.zadd(self.keys.due, {schedule.schedule_id: due_ms})
        # Costs nothing when no scheduler listens; a scheduler that does ignores it unless it is
        # due before the scheduler would wake anyway.
        pipe.publish(self.keys.wake, due_ms)

    async def delete_schedule(self, schedule_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.due, schedule_id)
            pipe.zrem(self.keys.claimed, schedule_id)
            pipe.hdel(self.keys.tasks, schedule_id)
            await pipe.execute()

    async def get_schedules(self) -> list[ScheduledTask]:
        """Claim and return the schedules due now; each is handed to one caller only."""
        flat: list[Any] = await scripts.claim_due(self.redis, self.keys.all(), [CLAIM_LEASE_MS, CLAIM_BATCH])
        return [ScheduledTask.model_validate_json(flat[i + 1]) for i in range(0, len(flat), 2)]

    async def post_send(self, task: ScheduledTask) -> None:
        """The task is on the broker's stream: forget the schedule."""
        await self.delete_schedule(task.schedule_id)

    async def earliest_due(self) -> tuple[int | None, int]:
        """(When the next schedule or lapsed claim is due, Redis' now), both epoch ms, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(self.keys.due, 0, 0, withscores=True)
            pipe.zrange(self.keys.claimed, 0, 0, withscores=True)
            pipe.time()
            first_due, first_lease, now = await pipe.execute()
        # A claim whose scheduler died is due again when its lease ends (claim_due.lua).
        moments = [int(float(first[0][1])) for first in (first_due, first_lease) if first]
        return (min(moments) if moments else None), time_reply_ms(now)

    async def pending(self) -> int:
        """How many schedules wait (due later, or claimed and not yet sent)."""
        due, claimed = await self.redis.zcard(self.keys.due), await self.redis.zcard(self.keys.claimed)
        return int(due) + int(claimed)
