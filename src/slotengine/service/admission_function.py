"""Reserving in one round trip: a batch for one slot admitted by PostgreSQL's admit_reservations().

The function (migration 0005) locks the slot, admits the batch and writes everything in one
statement, run in autocommit: one round trip, one transaction, no BEGIN or COMMIT, and the slot's
lock is held only while PostgreSQL runs it. The Redis mirror follows after the commit, in the
same round trip as the timers and the announcement. When the slot has something to settle first
the function changes nothing and answers "due": the caller runs the full slot transaction then.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from slotengine.domain import policy
from slotengine.domain.errors import (
    DomainError,
    IdempotencyKeyReused,
    SlotClosed,
    SlotNotFound,
    TooManyBookings,
)
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.redis.scripts import ChangesApplied
from slotengine.service.after_commit import Committed, MirrorCall, after_commit
from slotengine.service.announcements import Change
from slotengine.service.engine import Engine
from slotengine.service.mirror import MirrorOp, apply_args, apply_to_mirror, mirror_ops
from slotengine.service.reserve_request import Reservation, ReserveRequest
from slotengine.service.retries import retry_conflicts
from slotengine.service.state_sql import PENDING
from slotengine.service.unit_of_work import slot_transaction
from slotengine.store.database import connection

log = logging.getLogger(__name__)

HELD = transition(None, Event.HOLD, Role.HOLDER)
QUEUED = transition(None, Event.QUEUE, Role.HOLDER)

# The domain's states and events, passed to the function (see migration 0005).
ADMIT_SQL = "SELECT * FROM admit_reservations($1, $2, $3, $4, $5, $6, $7, $8)"


def admit_args(slot_id: UUID, requests: Sequence[ReserveRequest], cap: int = 0) -> list[Any]:
    """ADMIT_SQL's arguments for a batch of requests, in arrival order; `cap` on live claims
    elsewhere per holder (0 = none)."""
    return [
        slot_id,
        [r.holder for r in requests],
        [r.key for r in requests],
        HELD.value,
        QUEUED.value,
        Event.HOLD.value,
        Event.QUEUE.value,
        cap,
    ]


_BOOKING_FIELDS = (
    "id", "slot_id", "holder", "state", "unit", "fence", "queue_seq", "expires_at", "created_at",
    "group_id", "units",
)  # fmt: skip

Outcome = Reservation | DomainError


async def admit_in_one_trip(
    engine: Engine, slot_id: UUID, requests: Sequence[ReserveRequest]
) -> list[Outcome] | None:
    """Each request's answer or refusal; None when the slot must be settled first (nothing done)."""
    cap = engine.live_bookings_per_holder
    rows = await _admit(slot_id, requests, cap)
    if not rows:
        raise SlotNotFound(str(slot_id))
    ordered = sorted(rows, key=lambda row: int(row["ord"]))
    slot, answers = ordered[0], ordered[1:]
    if slot["outcome"] == "due":
        return None
    assert slot["outcome"] == "slot" and len(answers) == len(requests)
    done = Committed(slot_id, slot["starts_at"], int(slot["version"]))
    places, queue_seqs, waiting = _changes(done, answers)
    before = int(slot["locked_version"])
    ops = mirror_ops(done.changes, queue_seqs) + [MirrorOp("rank", b) for b in waiting]
    keys = engine.keys(str(slot_id)).all()
    answer = await after_commit(
        engine, done, MirrorCall(keys, apply_args(before, done.version, ops)) if ops else None
    )
    change = (before, done.version, ops)
    if waiting:
        places.update(await _places(engine, slot_id, change, answer, waiting, queue_seqs))
    elif answer is not None and not (answer.applied or answer.ahead):
        await _mirror_lost(engine, slot_id, change, answer)
    refusal = policy.accepts_reservations(slot["closed"], slot["starts_at"], slot["db_now"])
    return [_outcome(requests, slot_id, row, places, refusal, cap) for row in answers]


def _changes(
    done: Committed, answers: list[asyncpg.Record]
) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Fill `done` from the function's answers; return the new waiters' places, the arrival
    sequences of the bookings the mirror must know, and the bookings already waiting (asked for
    again) whose places the mirror tells."""
    places: dict[str, int] = {}
    queue_seqs: dict[str, int] = {}
    waiting: list[str] = []
    new: dict[str, asyncpg.Record] = {}
    for row in answers:
        booking_id = str(row["id"])
        if row["outcome"] == "new":
            new.setdefault(booking_id, row)
        elif row["outcome"] in ("row", "replay") and row["state"] == BookingState.PENDING:
            if booking_id not in queue_seqs:
                waiting.append(booking_id)
            queue_seqs[booking_id] = int(row["queue_seq"])
    # Holds in admission order, then newcomers to the queue in arrival order.
    for booking_id, row in new.items():
        if row["state"] == HELD:
            done.holds_granted.append((row["id"], int(row["fence"]), row["expires_at"]))
            done.changes.append(Change(booking_id, None, HELD, Event.HOLD, None, row["expires_at"]))
    for booking_id, row in sorted(new.items(), key=lambda item: int(item[1]["queue_seq"])):
        if row["state"] == QUEUED:
            places[booking_id] = int(row["place"])
            queue_seqs[booking_id] = int(row["queue_seq"])
            done.changes.append(Change(booking_id, None, QUEUED, Event.QUEUE, places[booking_id]))
            done.queue_joined = True
    return places, queue_seqs, waiting


def _outcome(
    requests: Sequence[ReserveRequest],
    slot_id: UUID,
    row: asyncpg.Record,
    places: dict[str, int],
    refusal: str | None,
    cap: int,
) -> Outcome:
    outcome = row["outcome"]
    if outcome == "capped":
        return TooManyBookings(cap)
    request = requests[int(row["ord"]) - 1]
    # The same key for another party size is another request (this batch asks one unit each).
    if outcome == "reused" or (outcome == "replay" and int(row["units"]) != request.units):
        return IdempotencyKeyReused(request.key)
    if outcome == "refused":
        assert refusal is not None, "admit_reservations refused what the domain accepts"
        return SlotClosed(str(slot_id), refusal)
    booking = {name: row[name] for name in _BOOKING_FIELDS}
    return Reservation(booking, places.get(str(booking["id"])), replayed=outcome == "replay")


@retry_conflicts
async def _admit(slot_id: UUID, requests: Sequence[ReserveRequest], cap: int) -> list[asyncpg.Record]:
    async with connection().acquire_connection() as conn:
        db: asyncpg.Connection = conn
        rows: list[asyncpg.Record] = await db.fetch(ADMIT_SQL, *admit_args(slot_id, requests, cap))
    return rows


async def _places(
    engine: Engine,
    slot_id: UUID,
    change: tuple[int, int, list[MirrorOp]],
    answer: ChangesApplied | None,
    booking_ids: list[str],
    queue_seqs: dict[str, int],
) -> dict[str, int]:
    """Places of bookings already waiting: from the mirror's ranks, else counted in PostgreSQL."""
    if answer is not None and answer.behind:
        answer = await apply_to_mirror(engine, slot_id, *change)
    if answer is not None and answer.applied:
        return dict(zip(booking_ids, answer.places[-len(booking_ids) :], strict=True))
    if answer is not None and not answer.ahead:
        await _mirror_lost(engine, slot_id, change, answer)
    places: dict[str, int] = {}
    for booking_id in booking_ids:
        found = await connection().execute_query_dict(
            f"SELECT count(*) AS n FROM bookings WHERE slot_id = $1 AND state = {PENDING} AND queue_seq < $2",
            [slot_id, queue_seqs[booking_id]],
        )
        places[booking_id] = int(found[0]["n"]) + 1
    return places


async def _mirror_lost(
    engine: Engine, slot_id: UUID, change: tuple[int, int, list[MirrorOp]], answer: ChangesApplied
) -> None:
    """The mirror did not take the changes: wait for an earlier change on its way, else rebuild it."""
    if answer.behind:
        answer = await apply_to_mirror(engine, slot_id, *change)
        if answer.applied or answer.ahead:
            return
    log.log(
        logging.INFO if answer.missing else logging.WARNING,
        "Redis mirror of slot %s was %s: rebuilding it",
        slot_id,
        "missing" if answer.missing else f"not at version {change[0]} ({answer.status})",
    )
    async with slot_transaction(engine, slot_id) as tx:
        tx.mirror_stale = True
