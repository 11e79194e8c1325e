"""An admin closes, reopens or resizes a slot: each one slot transaction, decided by the domain.

Closing expires the queue (each waiter audited, with the admin's reason) and refuses new
reservations; holds already granted may still be confirmed until they lapse. Growing the capacity
offers the new units to the queue at once, in FIFO order; shrinking never goes below the units in
use. Every change of the slot's terms is announced on its channel with a version of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import NotAuthorized, SlotNotFound
from slotengine.domain.fill_policy import FillPolicy, validate_max_pass_overs
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.service import queries
from slotengine.service.announcements import Change, SlotTerms
from slotengine.service.engine import Engine
from slotengine.service.ids import parse_id
from slotengine.service.retries import retry_conflicts
from slotengine.service.settlement import promote, settle
from slotengine.service.state_sql import PENDING
from slotengine.service.unit_of_work import SlotTransaction, slot_transaction
from slotengine.service.views import Caller, SlotView

_CLOSED_IN_QUEUE = transition(BookingState.PENDING, Event.CLOSE, Role.ADMIN)
DEFAULT_CLOSE_REASON = "the slot was closed"


@dataclass(frozen=True, slots=True)
class SlotUpdate:
    """What updateSlot changes; None leaves a term as it is."""

    capacity: int | None = None
    hold_seconds: int | None = None
    max_extensions: int | None = None
    max_hold_seconds: int | None = None
    fill_policy: FillPolicy | None = None
    max_pass_overs: int | None = None


async def close_slot(engine: Engine, caller: Caller, slot_id: str, reason: str | None) -> SlotView:
    """Take no more reservations; everyone waiting becomes EXPIRED with `reason` (admins only)."""
    _require_admin(caller, "close")
    policy.validate_reason(reason)
    slot_uuid = parse_id("slotId", slot_id)
    await _close(engine, caller, slot_uuid, reason or DEFAULT_CLOSE_REASON)
    return await _view(engine, slot_uuid)


async def reopen_slot(engine: Engine, caller: Caller, slot_id: str) -> SlotView:
    """Take reservations again (admins only)."""
    _require_admin(caller, "reopen")
    slot_uuid = parse_id("slotId", slot_id)
    await _reopen(engine, slot_uuid)
    return await _view(engine, slot_uuid)


async def update_slot(engine: Engine, caller: Caller, slot_id: str, update: SlotUpdate) -> SlotView:
    """Change a slot's capacity, hold time and extension limits (admins only)."""
    _require_admin(caller, "update")
    slot_uuid = parse_id("slotId", slot_id)
    await _update(engine, slot_uuid, update)
    return await _view(engine, slot_uuid)


def _require_admin(caller: Caller, what: str) -> None:
    if not caller.admin:
        raise NotAuthorized(f"only an admin can {what} a slot")


async def _view(engine: Engine, slot_id: UUID) -> SlotView:
    view = await queries.get_slot(engine, str(slot_id))
    if view is None:  # pragma: no cover (slots are never deleted)
        raise SlotNotFound(str(slot_id))
    return view


@retry_conflicts
async def _close(engine: Engine, caller: Caller, slot_id: UUID, reason: str) -> None:
    async with slot_transaction(engine, slot_id) as tx:
        await settle(tx)
        if tx.closed:
            return  # closed already: nothing to announce
        previous = await _terms(tx)
        await tx.conn.execute_query("UPDATE slots SET closed = true WHERE id = $1", [slot_id])
        tx.closed = True
        await _expire_queue(tx, caller.holder, reason)
        await _changed_terms(tx, previous)


@retry_conflicts
async def _reopen(engine: Engine, slot_id: UUID) -> None:
    async with slot_transaction(engine, slot_id) as tx:
        await settle(tx)
        if not tx.closed:
            return
        previous = await _terms(tx)
        await tx.conn.execute_query("UPDATE slots SET closed = false WHERE id = $1", [slot_id])
        tx.closed = False
        await _changed_terms(tx, previous)


@retry_conflicts
async def _update(engine: Engine, slot_id: UUID, update: SlotUpdate) -> None:
    async with slot_transaction(engine, slot_id) as tx:
        await settle(tx)
        previous = await _terms(tx)
        capacity = tx.capacity if update.capacity is None else update.capacity
        hold_seconds = tx.hold_seconds if update.hold_seconds is None else update.hold_seconds
        max_extensions = previous.max_extensions if update.max_extensions is None else update.max_extensions
        max_hold_seconds = (
            previous.max_hold_seconds if update.max_hold_seconds is None else update.max_hold_seconds
        )
        fill = tx.fill_policy if update.fill_policy is None else update.fill_policy
        max_pass_overs = tx.max_pass_overs if update.max_pass_overs is None else update.max_pass_overs
        policy.validate_terms(capacity, hold_seconds)
        policy.validate_extension_terms(hold_seconds, max_extensions, max_hold_seconds)
        validate_max_pass_overs(max_pass_overs)
        policy.check_capacity(capacity, len(tx.taken))
        # Units above a smaller capacity move down first: the database refuses the capacity while
        # a unit above it is in use (migrations 0006, 0013), and a unit above its capacity (0001,
        # 0013). A unit may be a party's first or one of its others.
        for above, below in policy.renumbering(capacity, tx.taken):
            await tx.conn.execute_query(
                "UPDATE bookings SET unit = CASE WHEN unit = $2 THEN $3 ELSE unit END,"
                " extra_units = array_replace(extra_units, $2, $3)"
                " WHERE slot_id = $1 AND (unit = $2 OR $2 = ANY(extra_units))",
                [slot_id, above, below],
            )
            tx.taken[tx.taken.index(above)] = below
        await tx.conn.execute_query(
            "UPDATE slots SET capacity = $2, hold_seconds = $3, max_extensions = $4, max_hold_seconds = $5,"
            " fill_policy = $6, max_pass_overs = $7 WHERE id = $1",
            [slot_id, capacity, hold_seconds, max_extensions, max_hold_seconds, fill.value, max_pass_overs],
        )
        tx.capacity, tx.hold_seconds = capacity, hold_seconds
        tx.fill_policy, tx.max_pass_overs = fill, max_pass_overs
        if not policy.queue_has_lapsed(tx.starts_at, tx.now):
            await promote(tx)  # new units go to the head of the queue, one by one, each audited
        await _changed_terms(tx, previous)


async def _expire_queue(tx: SlotTransaction, actor: str, reason: str) -> None:
    """Every waiter becomes EXPIRED, in queue order, each with an audit row naming the reason."""
    if not tx.waiting:
        return
    closed = await tx.fetch(
        "UPDATE bookings SET state = $2, updated_at = now()"
        f" WHERE slot_id = $1 AND state = {PENDING} RETURNING id, queue_seq, group_id",
        tx.slot_id,
        _CLOSED_IN_QUEUE,
    )
    ordered = [row["id"] for row in sorted(closed, key=lambda row: row["queue_seq"])]
    await tx.conn.execute_query(
        "INSERT INTO transitions"
        " (booking_id, from_state, to_state, event, actor, reason, slot_id, slot_version)"
        " SELECT id, $2, $3, $4, $5, $6, $7, $8"
        " FROM unnest($1::uuid[]) WITH ORDINALITY AS q (id, n) ORDER BY n",
        [
            ordered,
            BookingState.PENDING.value,
            _CLOSED_IN_QUEUE.value,
            Event.CLOSE.value,
            actor,
            reason,
            tx.slot_id,
            tx.change_version,
        ],
    )
    # A waiting group whose entry here expired can never be held: its other entries lapse too.
    tx.groups_to_offer.update(row["group_id"] for row in closed if row["group_id"] is not None)
    for booking_id in ordered:
        # Each leaves from the head of what is left of the queue.
        tx.changes.append(Change(str(booking_id), BookingState.PENDING, _CLOSED_IN_QUEUE, Event.CLOSE, 1))
    tx.waiting = 0


async def _terms(tx: SlotTransaction) -> SlotTerms:
    """The slot's terms as they stand in this transaction."""
    row = await tx.fetch_one(
        "SELECT capacity, hold_seconds, closed, max_extensions, max_hold_seconds, fill_policy,"
        " max_pass_overs FROM slots WHERE id = $1",
        tx.slot_id,
    )
    assert row is not None
    return SlotTerms(
        row["capacity"],
        row["hold_seconds"],
        row["closed"],
        row["max_extensions"],
        row["max_hold_seconds"],
        FillPolicy(row["fill_policy"]),
        int(row["max_pass_overs"]),
    )


async def _changed_terms(tx: SlotTransaction, previous: SlotTerms) -> None:
    """Announce the slot's terms as they now are, keep them in the slot's terms trail (a resuming
    subscription replays them from there), and rebuild its mirror (capacity, closed)."""
    tx.terms = await _terms(tx)
    await tx.conn.execute_query(
        "INSERT INTO slot_terms_trail (slot_id, slot_version, terms, previous) VALUES ($1, $2, $3, $4)",
        [tx.slot_id, tx.change_version, json.dumps(tx.terms.to_dict()), json.dumps(previous.to_dict())],
    )
    tx.mirror_stale = True
