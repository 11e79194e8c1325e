"""The engine's tasks. Each is idempotent: run twice, late or concurrently, it does no harm."""

from __future__ import annotations

from uuid import UUID

from taskiq import TaskiqDepends, TaskiqState

from slotengine.service import expiry
from slotengine.service.engine import Engine
from slotengine.service.reservations import settle_slot as settle
from slotengine.service.timers import EXPIRE_HOLD_TASK, REARM_TIMERS_TASK, SETTLE_SLOT_TASK, SWEEP_TASK
from workers.broker import broker


def _engine(state: TaskiqState) -> Engine:
    engine: Engine = state.engine
    return engine


@broker.task(task_name=EXPIRE_HOLD_TASK)
async def expire_hold(booking_id: str, fence: int, state: TaskiqState = TaskiqDepends()) -> str:
    """Expire one hold if its fence still matches and PostgreSQL says it lapsed."""
    return (await expiry.expire_hold(_engine(state), UUID(booking_id), fence)).value


@broker.task(task_name=SETTLE_SLOT_TASK)
async def settle_slot(slot_id: str, state: TaskiqState = TaskiqDepends()) -> None:
    """Expire lapsed holds, lapse a started slot's queue, promote the queue."""
    await settle(_engine(state), UUID(slot_id))


@broker.task(task_name=SWEEP_TASK)
async def sweep(state: TaskiqState = TaskiqDepends()) -> int:
    """The backstop: settle every slot a lost or late timer left unsettled."""
    return await expiry.sweep(_engine(state))


@broker.task(task_name=REARM_TIMERS_TASK)
async def rearm_timers(state: TaskiqState = TaskiqDepends()) -> int:
    """Set every live booking's timers again after Redis lost them."""
    return await expiry.rearm_timers(_engine(state))
