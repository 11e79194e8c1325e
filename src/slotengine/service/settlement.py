"""Settling a slot inside its transaction: expire lapsed holds, lapse a started queue, promote."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from slotengine.domain import fill_policy, policy
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.service.announcements import Change
from slotengine.service.state_sql import PENDING, RESERVED
from slotengine.service.unit_of_work import SYSTEM_ACTOR, SlotTransaction

_EXPIRED_BY_TTL = transition(BookingState.RESERVED, Event.EXPIRE, Role.SYSTEM)
_LAPSED_IN_QUEUE = transition(BookingState.PENDING, Event.LAPSE, Role.SYSTEM)
_PROMOTED = transition(BookingState.PENDING, Event.PROMOTE, Role.SYSTEM)


def snapshot_columns(slot_param: str) -> str:
    """Columns a read after the lock can carry so that settle() may be skipped: the taken units and
    whether a hold is due (`slot_param` is the slot id's parameter, e.g. "$3")."""
    return (
        f"ARRAY(SELECT unit FROM booking_units WHERE slot_id = {slot_param}) AS taken,"
        f" EXISTS (SELECT 1 FROM bookings WHERE slot_id = {slot_param} AND state = {RESERVED}"
        "  AND expires_at <= now()) AS hold_due"
    )


def settled_already(tx: SlotTransaction, taken: list[int], hold_due: bool) -> bool:
    """Take the snapshot read with snapshot_columns() when settle() would change nothing (no hold
    due, no queue to lapse, no free unit anyone waits for); False when settle() must run."""
    if hold_due:
        return False
    if tx.waiting and (
        policy.queue_has_lapsed(tx.starts_at, tx.now) or policy.free_units(tx.capacity, taken)
    ):
        return False
    tx.taken = list(taken)
    return True


async def settle(tx: SlotTransaction) -> None:
    """Expire lapsed holds, lapse a queue whose slot started, offer free units to the queue.

    Also takes the snapshot (taken units, queue length) the rest of the transaction uses.
    """
    # A data-modifying CTE's outer query sees the rows as they were before the UPDATE,
    # hence the lapsed holds are left out of the taken units by hand.
    row = await tx.fetch_one(
        "WITH lapsed AS ("
        "  UPDATE bookings SET state = $2, unit = NULL, updated_at = now()"
        f"  WHERE slot_id = $1 AND state = {RESERVED} AND expires_at <= now()"
        "  RETURNING id, fence, units, EXTRACT(EPOCH FROM clock_timestamp() - expires_at) AS late),"
        " audit AS ("
        "  INSERT INTO transitions (booking_id, from_state, to_state, event, actor, fence, slot_id,"
        "   slot_version)"
        f"  SELECT id, {RESERVED}, $2, $3, $4, fence, $1, $5 FROM lapsed RETURNING booking_id)"
        " SELECT"
        "  ARRAY(SELECT booking_id FROM audit) AS expired,"
        "  ARRAY(SELECT units FROM lapsed l JOIN audit a ON a.booking_id = l.id) AS expired_units,"
        "  ARRAY(SELECT late FROM lapsed) AS lateness,"
        "  ARRAY(SELECT unit FROM booking_units WHERE slot_id = $1"
        "        AND booking_id NOT IN (SELECT id FROM lapsed)) AS taken",
        tx.slot_id,
        _EXPIRED_BY_TTL,
        Event.EXPIRE.value,
        SYSTEM_ACTOR,
        tx.change_version,
    )
    assert row is not None
    tx.taken = list(row["taken"])
    tx.expiry_lateness = [float(seconds) for seconds in row["lateness"]]
    for booking_id, units in zip(row["expired"], row["expired_units"], strict=True):
        tx.changes.append(
            Change(str(booking_id), BookingState.RESERVED, _EXPIRED_BY_TTL, Event.EXPIRE, units=int(units))
        )
    if policy.queue_has_lapsed(tx.starts_at, tx.now):
        await _lapse_queue(tx)
    else:
        await promote(tx)


async def _lapse_queue(tx: SlotTransaction) -> None:
    if not tx.waiting:
        return
    lapsed = await tx.fetch(
        "WITH lapsed AS ("
        "  UPDATE bookings SET state = $2, updated_at = now()"
        f"  WHERE slot_id = $1 AND state = {PENDING} RETURNING id, group_id),"
        " audit AS ("
        "  INSERT INTO transitions (booking_id, from_state, to_state, event, actor, reason, slot_id,"
        "   slot_version)"
        f"  SELECT id, {PENDING}, $2, $3, $4, 'the slot started', $1, $5 FROM lapsed"
        "  RETURNING booking_id)"
        " SELECT a.booking_id, l.group_id FROM audit a JOIN lapsed l ON l.id = a.booking_id",
        tx.slot_id,
        _LAPSED_IN_QUEUE,
        Event.LAPSE.value,
        SYSTEM_ACTOR,
        tx.change_version,
    )
    # A waiting group that lapsed here can never be held: its other slots' entries lapse too.
    tx.groups_to_offer.update(row["group_id"] for row in lapsed if row["group_id"] is not None)
    for row in lapsed:
        tx.changes.append(
            Change(str(row["booking_id"]), BookingState.PENDING, _LAPSED_IN_QUEUE, Event.LAPSE, 1)
        )
    tx.waiting = 0


async def promote(tx: SlotTransaction) -> None:
    """Offer the free units to the queue, in arrival order, as the slot's fill policy says
    (domain/fill_policy.py): each entry offered all its units at once."""
    free = policy.free_units(tx.capacity, tx.taken)
    if not free or not tx.waiting:
        return
    heads = await tx.fetch(
        f"SELECT id, group_id, units, passed_over FROM bookings WHERE slot_id = $1 AND state = {PENDING}"
        " ORDER BY queue_seq LIMIT $2",
        tx.slot_id,
        fill_policy.queue_window(tx.fill_policy, len(free)),
    )
    # FIFO around waiting groups: nobody passes a group's entry. A group is offered all its slots
    # at once, by a transaction locking them all, never by one slot's promotion.
    singles, group_at_head = policy.heads_before_group([(r, r["group_id"]) for r in heads])
    waiters = [fill_policy.Waiter(r["id"], int(r["units"]), int(r["passed_over"])) for r in singles]
    offers = fill_policy.offers(tx.fill_policy, len(free), waiters, tx.max_pass_overs)
    if group_at_head is not None and len(offers.offered) == len(singles) and offers.units_left > 0:
        tx.groups_to_offer.add(group_at_head)
    if offers.passed:
        await tx.fetch(
            "UPDATE bookings b SET passed_over = b.passed_over + p.n"
            " FROM unnest($1::uuid[], $2::int[]) AS p (id, n) WHERE b.id = p.id",
            list(offers.passed),
            list(offers.passed.values()),
        )
    expires_at = policy.hold_expiry(tx.now, tx.hold_seconds, tx.ends_at)
    still_waiting = [w.key for w in waiters]
    for waiter in offers.offered:
        units = policy.free_units(tx.capacity, tx.taken)[: waiter.units]
        # Its place as it leaves: behind the entries it passed over (FIRST_FIT), else the head.
        place = still_waiting.index(waiter.key) + 1
        still_waiting.remove(waiter.key)
        fence = await promote_booking(tx, waiter.key, units[0], expires_at, units[1:], place)
        tx.holds_granted.append((waiter.key, fence, expires_at))


async def promote_booking(
    tx: SlotTransaction,
    booking_id: UUID,
    unit: int,
    expires_at: datetime,
    extra_units: Sequence[int] = (),
    place: int = 1,
) -> int:
    """Give the waiting booking `unit` (and `extra_units`, for a party) with a new fence, audited and
    announced as a promotion from the queue as it stands; answer the fence (its expiry timer is
    the caller's)."""
    row = await tx.fetch_one(
        "WITH fence AS (UPDATE slots SET fence = fence + 1 WHERE id = $2 RETURNING fence),"
        " promoted AS ("
        "  UPDATE bookings SET state = $3, unit = $4, extra_units = $9, expires_at = $5,"
        "   updated_at = now(), fence = (SELECT fence FROM fence)"
        f"  WHERE id = $1 AND state = {PENDING} RETURNING id, fence, units)"
        " INSERT INTO transitions (booking_id, from_state, to_state, event, actor, fence, slot_id,"
        "  slot_version)"
        f" SELECT id, {PENDING}, $3, $6, $7, fence, $2, $8 FROM promoted RETURNING fence,"
        " (SELECT units FROM promoted) AS units",
        booking_id,
        tx.slot_id,
        _PROMOTED,
        unit,
        expires_at,
        Event.PROMOTE.value,
        SYSTEM_ACTOR,
        tx.change_version,
        list(extra_units),
    )
    assert row is not None  # the slot lock keeps the queue as we read it
    tx.taken += [unit, *extra_units]
    tx.waiting -= 1
    tx.changes.append(
        Change(
            str(booking_id),
            BookingState.PENDING,
            _PROMOTED,
            Event.PROMOTE,
            place,
            expires_at,
            units=int(row["units"]),
        )
    )
    return int(row["fence"])
