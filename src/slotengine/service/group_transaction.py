"""One database transaction holding the row locks of several slots: how a booking group changes.

The slots are locked in one statement, in ascending id (`domain.groups.lock_order`), so groups
racing for overlapping slots listed in any order never deadlock; a single slot's transaction
takes one of these locks only, so it cannot close a cycle either. Each slot gets its own
SlotTransaction on the shared connection: settlement, audit rows, version bumps and mirror deltas
work exactly as for one slot. Nothing is announced or timed before the one commit, so no
listener sees part of a group; a failure before it rolls every slot back and drops their mirrors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import asyncpg
from taskiq import ScheduledTask
from tortoise.transactions import in_transaction

from slotengine.domain.errors import DomainError, SlotNotFound
from slotengine.domain.groups import lock_order
from slotengine.service.after_commit import after_commit
from slotengine.service.engine import Engine
from slotengine.service.mirror import drop_mirror
from slotengine.service.unit_of_work import SlotTransaction

log = logging.getLogger(__name__)

_LOCK_SQL = (
    "SELECT id, capacity, hold_seconds, closed, starts_at, ends_at, version, waiting, fill_policy,"
    " max_pass_overs, now() AS db_now"
    " FROM slots WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
)


class GroupTransaction:
    """The slots of one group, locked together; `slots` in lock order."""

    def __init__(self, slots: list[SlotTransaction]) -> None:
        self.slots = slots
        self.by_id = {tx.slot_id: tx for tx in slots}
        # Timers set after the commit besides each slot's own (the group's expiry).
        self.schedules: list[ScheduledTask] = []

    @property
    def now(self) -> datetime:
        """PostgreSQL's now(), the one clock that decides (one transaction: one instant)."""
        return self.slots[0].now

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return await self.slots[0].fetch(sql, *args)


@contextlib.asynccontextmanager
async def group_transaction(engine: Engine, slot_ids: Sequence[UUID]) -> AsyncIterator[GroupTransaction]:
    """Lock every slot (ascending id) for one transaction; commit, then set timers and announce
    each slot's changes. A DomainError raised inside commits what was done before it (holds found
    lapsed stay expired), then reaches the caller; SlotNotFound names the first missing slot."""
    ordered = lock_order(slot_ids)
    group: GroupTransaction | None = None
    refusal: DomainError | None = None
    try:
        async with in_transaction() as conn:
            driver = cast(asyncpg.Connection, conn._connection)
            rows = {row["id"]: dict(row) for row in await driver.fetch(_LOCK_SQL, ordered)}
            missing = [slot_id for slot_id in ordered if slot_id not in rows]
            if missing:
                raise SlotNotFound(str(missing[0]))
            group = GroupTransaction(
                [SlotTransaction.of_locked_row(engine, conn, slot_id, rows[slot_id]) for slot_id in ordered]
            )
            try:
                yield group
            except DomainError as refused:
                refusal = refused
            for tx in group.slots:
                await tx.finish()
    except BaseException:
        if group is not None:
            await asyncio.shield(asyncio.gather(*(drop_mirror(engine, tx.slot_key) for tx in group.slots)))
        raise
    assert group is not None
    # Each slot's announcement and timers, exactly as slot_transaction sends them.
    await asyncio.gather(
        *(after_commit(engine, tx.committed()) for tx in group.slots), _set(engine, group.schedules)
    )
    if refusal is not None:
        raise refusal


async def _set(engine: Engine, schedules: list[ScheduledTask]) -> None:
    if schedules:
        try:
            await engine.timers.add_all(schedules)
        except Exception:  # committed is committed: the sweep and lazy expiry still end the holds
            log.exception("could not set a booking group's timers")
