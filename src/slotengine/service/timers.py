"""Timers the service sets after a commit: a hold's expiry, a queue's lapse at slot start.

They are one-off Taskiq schedules; workers run them. None of them is needed for correctness
(reads and writes expire lazily, and the sweep is a backstop): they make changes prompt.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from taskiq import ScheduledTask

from slotengine.scheduling.source import DueTimeScheduleSource

EXPIRE_HOLD_TASK = "slotengine.expire_hold"
SETTLE_SLOT_TASK = "slotengine.settle_slot"
SWEEP_TASK = "slotengine.sweep"


class Timers:
    """Schedules the engine's own tasks in a DueTimeScheduleSource."""

    def __init__(self, source: DueTimeScheduleSource) -> None:
        self.source = source

    async def expire_hold_at(self, booking_id: UUID, fence: int, expires_at: datetime) -> None:
        """Expire this hold (if its fence still matches) when it is due."""
        await self.source.add_schedule(
            ScheduledTask(
                task_name=EXPIRE_HOLD_TASK,
                labels={},
                args=[str(booking_id), fence],
                kwargs={},
                # One schedule per hold: setting it twice is harmless.
                schedule_id=f"expire:{booking_id}:{fence}",
                time=expires_at,
            )
        )

    async def settle_slot_at(self, slot_id: UUID, when: datetime) -> None:
        """Settle the slot at `when` (used to lapse its queue when it starts)."""
        await self.source.add_schedule(
            ScheduledTask(
                task_name=SETTLE_SLOT_TASK,
                labels={},
                args=[str(slot_id)],
                kwargs={},
                schedule_id=f"settle:{slot_id}:{int(when.timestamp())}",
                time=when,
            )
        )
