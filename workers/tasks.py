"""The engine's tasks. Each is idempotent: run twice, late or concurrently, it does no harm."""

from __future__ import annotations

from uuid import UUID

from taskiq import AsyncBroker, TaskiqDepends, TaskiqState

from slotengine.service import expiry, groups, webhook_delivery
from slotengine.service.engine import Engine
from slotengine.service.reservations import settle_slot as settle
from slotengine.service.timers import (
    DISPATCH_WEBHOOKS_TASK,
    EXPIRE_GROUP_TASK,
    EXPIRE_HOLD_TASK,
    OFFER_GROUP_TASK,
    REARM_TIMERS_TASK,
    SETTLE_SLOT_TASK,
    SWEEP_TASK,
)


def _engine(state: TaskiqState) -> Engine:
    engine: Engine = state.engine
    return engine


async def expire_hold(booking_id: str, fence: int, state: TaskiqState = TaskiqDepends()) -> str:
    """Expire one hold if its fence still matches and PostgreSQL says it lapsed."""
    return (await expiry.expire_hold(_engine(state), UUID(booking_id), fence)).value


async def settle_slot(slot_id: str, state: TaskiqState = TaskiqDepends()) -> None:
    """Expire lapsed holds, lapse a started slot's queue, promote the queue."""
    await settle(_engine(state), UUID(slot_id))


async def expire_group(group_id: str, state: TaskiqState = TaskiqDepends()) -> bool:
    """Expire every hold of a booking group together once PostgreSQL says they lapsed."""
    return await groups.expire_group(_engine(state), UUID(group_id))


async def offer_group(group_id: str, state: TaskiqState = TaskiqDepends()) -> bool:
    """Offer a waiting group every one of its slots if it heads each queue and each has a unit free."""
    return await groups.offer_group(_engine(state), UUID(group_id))


async def sweep(state: TaskiqState = TaskiqDepends()) -> int:
    """The backstop: settle every slot a lost or late timer left unsettled."""
    return await expiry.sweep(_engine(state))


async def rearm_timers(state: TaskiqState = TaskiqDepends()) -> int:
    """Set every live booking's timers again after Redis lost them."""
    return await expiry.rearm_timers(_engine(state))


async def dispatch_webhooks(state: TaskiqState = TaskiqDepends()) -> int:
    """Send the webhook deliveries that are due, each endpoint's chain per slot in order."""
    return await webhook_delivery.dispatch(_engine(state))


def register_tasks(broker: AsyncBroker) -> None:
    """Put the engine's tasks on `broker`, under the names the timers and scheduler send."""
    broker.register_task(expire_hold, task_name=EXPIRE_HOLD_TASK)
    broker.register_task(settle_slot, task_name=SETTLE_SLOT_TASK)
    broker.register_task(expire_group, task_name=EXPIRE_GROUP_TASK)
    broker.register_task(offer_group, task_name=OFFER_GROUP_TASK)
    broker.register_task(sweep, task_name=SWEEP_TASK)
    broker.register_task(rearm_timers, task_name=REARM_TIMERS_TASK)
    broker.register_task(dispatch_webhooks, task_name=DISPATCH_WEBHOOKS_TASK)
