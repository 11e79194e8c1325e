"""Timers the service sets after a commit: a hold's expiry, a queue's lapse at slot start.

They are one-off Taskiq schedules; workers run them. None of them is needed for correctness
(reads and writes expire lazily, and the sweep is a backstop): they make changes prompt.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from taskiq import ScheduledTask

from slotengine.redis.connection import RedisPipeline
from slotengine.scheduling.source import DueTimeScheduleSource

EXPIRE_HOLD_TASK = "slotengine.expire_hold"
SETTLE_SLOT_TASK = "slotengine.settle_slot"
SWEEP_TASK = "slotengine.sweep"
REARM_TIMERS_TASK = "slotengine.rearm_timers"
DISPATCH_WEBHOOKS_TASK = "slotengine.dispatch_webhooks"
EXPIRE_GROUP_TASK = "slotengine.expire_group"
OFFER_GROUP_TASK = "slotengine.offer_group"


def expire_hold_schedule(booking_id: UUID, fence: int, expires_at: datetime) -> ScheduledTask:
    """Expire this hold (if its fence still matches) when it is due; one schedule per hold."""
    return ScheduledTask(
        task_name=EXPIRE_HOLD_TASK,
        labels={},
        args=[str(booking_id), fence],
        kwargs={},
        schedule_id=f"expire:{booking_id}:{fence}",
        time=expires_at,
    )


def settle_slot_schedule(slot_id: UUID, when: datetime) -> ScheduledTask:
    """Settle the slot at `when` (used to lapse its queue when it starts)."""
    return ScheduledTask(
        task_name=SETTLE_SLOT_TASK,
        labels={},
        args=[str(slot_id)],
        kwargs={},
        schedule_id=f"settle:{slot_id}:{int(when.timestamp())}",
        time=when,
    )


def expire_group_schedule(group_id: UUID, expires_at: datetime) -> ScheduledTask:
    """Expire a booking group's holds together when due: one timer for the whole group."""
    return ScheduledTask(
        task_name=EXPIRE_GROUP_TASK,
        labels={},
        args=[str(group_id)],
        kwargs={},
        schedule_id=f"expire-group:{group_id}:{int(expires_at.timestamp() * 1000)}",
        time=expires_at,
    )


def offer_group_schedule(group_id: UUID, when: datetime) -> ScheduledTask:
    """Look at once whether a waiting group can be offered every one of its slots (a slot's
    transaction may lock no other slot, so it asks this of a transaction locking them all)."""
    return ScheduledTask(
        task_name=OFFER_GROUP_TASK,
        labels={},
        args=[str(group_id)],
        kwargs={},
        # One id per group: asking again while a look is pending only moves its due time.
        schedule_id=f"offer-group:{group_id}",
        time=when,
    )


class Timers:
    """Schedules the engine's own tasks in a DueTimeScheduleSource."""

    def __init__(self, source: DueTimeScheduleSource) -> None:
        self.source = source

    async def expire_hold_after(
        self, booking_id: UUID, fence: int, expires_at: datetime, remaining: timedelta
    ) -> None:
        """Expire this hold `remaining` from now, counted on Redis' clock (re-arming an early timer)."""
        await self.source.add_schedule_in(expire_hold_schedule(booking_id, fence, expires_at), remaining)

    async def settle_slot_at(self, slot_id: UUID, when: datetime) -> None:
        await self.source.add_schedule(settle_slot_schedule(slot_id, when))

    async def add_all(self, schedules: list[ScheduledTask]) -> None:
        """Set many schedules in one round trip, one per node on a cluster (re-arming lost timers)."""
        async with self.source.redis.pipeline(transaction=False) as pipe:
            self.add_to(pipe, schedules)
            await pipe.execute()

    def add_to(self, pipe: RedisPipeline, schedules: list[ScheduledTask]) -> None:
        """Queue several schedules on the caller's pipeline (one round trip after a commit)."""
        for schedule in schedules:
            self.source.add_to(pipe, schedule)
