"""Reserving, batched: every reservation for one slot that gathered meanwhile, in one transaction.

One lock, one settlement, one lookup of known keys and live bookings, one statement admitting
them all (bookings, audit rows, idempotency records, fences, the slot's version and queue
length), one mirror update. Each request still gets its own answer or refusal.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from tortoise.exceptions import IntegrityError

from slotengine.domain import fill_policy, policy
from slotengine.domain.errors import (
    DomainError,
    IdempotencyKeyReused,
    SlotClosed,
    TooManyBookings,
    ValidationError,
)
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.service.admission_function import admit_in_one_trip
from slotengine.service.announcements import Change
from slotengine.service.bookings import BOOKING_COLUMNS, capped_holders
from slotengine.service.engine import Engine
from slotengine.service.rate_limit import take_reserve_turns
from slotengine.service.reserve_request import Reservation, ReserveRequest
from slotengine.service.retries import retry_conflicts
from slotengine.service.settlement import promote, settle, settled_already, snapshot_columns
from slotengine.service.state_sql import LIVE_SQL
from slotengine.service.unit_of_work import LockRead, SlotTransaction, slot_transaction

_HELD = transition(None, Event.HOLD, Role.HOLDER)
_QUEUED = transition(None, Event.QUEUE, Role.HOLDER)


Outcome = Reservation | DomainError


async def reserve_batch(engine: Engine, slot_id: UUID, requests: Sequence[ReserveRequest]) -> list[Outcome]:
    """Take each request's turn against the rate limit, then admit, replay or refuse the rest in one
    transaction on the slot."""
    turns = await take_reserve_turns(engine, [request.holder for request in requests])
    allowed = [request for request, refusal in zip(requests, turns, strict=True) if refusal is None]
    try:
        answers = iter(await _reserve_allowed(engine, slot_id, allowed) if allowed else [])
    except DomainError as refusal:  # the slot does not exist: every request allowed learns it
        answers = iter([refusal] * len(allowed))
    return [next(answers) if refusal is None else refusal for refusal in turns]


async def _reserve_allowed(
    engine: Engine, slot_id: UUID, requests: Sequence[ReserveRequest]
) -> list[Outcome]:
    # admit_reservations() admits one unit per booking: a batch with a party takes the full path.
    singles = all(request.units == 1 for request in requests)
    for _ in range(3):
        try:
            # One round trip when nothing on the slot is due; else the full slot transaction.
            answered = await admit_in_one_trip(engine, slot_id, requests) if singles else None
            if answered is not None:
                return answered
            return await _settle_and_reserve(engine, slot_id, requests)
        except (IntegrityError, asyncpg.UniqueViolationError) as exc:
            # A concurrent request with the same key on another slot committed first: the
            # lookup now finds it. Any other integrity error is a bug and must surface.
            if "idempotency_keys_pkey" not in str(exc):
                raise
    raise RuntimeError("idempotency record neither written nor found")  # pragma: no cover


async def _settle_and_reserve(
    engine: Engine, slot_id: UUID, requests: Sequence[ReserveRequest]
) -> list[Outcome]:
    """The full slot transaction, for holders under the cap on live bookings."""
    cap = engine.live_bookings_per_holder
    capped = await capped_holders([r.holder for r in requests], slot_id, cap)
    admissible = [r for r in requests if r.holder not in capped]
    answers = iter(await _reserve_batch(engine, slot_id, admissible) if admissible else [])
    return [TooManyBookings(cap) if r.holder in capped else next(answers) for r in requests]


@dataclass
class _Admission:
    """A booking this batch creates."""

    booking_id: UUID
    holder: str
    key: str
    state: BookingState
    unit: int | None
    hold_number: int | None  # 1.. among this batch's holds: its fence is the slot's fence + that
    expires_at: datetime | None
    units: int = 1
    extra_units: tuple[int, ...] = ()  # a held party's units besides `unit`


@retry_conflicts
async def _reserve_batch(engine: Engine, slot_id: UUID, requests: Sequence[ReserveRequest]) -> list[Outcome]:
    read = LockRead(_KNOWN_SQL, ([r.holder for r in requests], [r.key for r in requests]))
    async with slot_transaction(engine, slot_id, read=read) as tx:
        # The common case (nothing due, nobody committed on the slot while we waited for its
        # lock) reads everything with the lock statement.
        rows = tx.lock_read if tx.lock_read is not None else await tx.fetch(read.sql, slot_id, *read.args)
        by_key, live, (taken, hold_due) = _known(rows)
        if not settled_already(tx, taken, hold_due):
            await settle(tx)
            by_key, live, _ = _known(await tx.fetch(read.sql, slot_id, *read.args))
        refusal = policy.accepts_reservations(tx.closed, tx.starts_at, tx.now)
        admitted: dict[str, _Admission] = {}  # holder -> new booking
        new_keys: list[tuple[str, str, UUID]] = []  # (holder, key, booking) for a known booking
        written: set[tuple[str, str]] = set()  # idempotency records this batch writes
        decided: list[tuple[str, Any]] = []  # ("row", row) | ("new", admission) | ("refused", error)
        holds = 0
        for request in requests:
            known = by_key.get((request.holder, request.key))
            if known is not None:
                # The same key for another slot, or for another party size, is another request.
                if known["key_slot"] != slot_id or int(known["units"]) != request.units:
                    decided.append(("refused", IdempotencyKeyReused(request.key)))
                else:
                    decided.append(("replay", known))
                continue
            # One live booking per holder and slot: a second request, new key or not, gets it back.
            existing = live.get(request.holder)
            if existing is not None:
                new_keys.append((request.holder, request.key, existing["id"]))
                by_key[(request.holder, request.key)] = {**existing, "key_slot": slot_id}
                decided.append(("row", existing))
                continue
            if request.holder in admitted:
                admission = admitted[request.holder]
                if request.key == admission.key and request.units != admission.units:
                    decided.append(("refused", IdempotencyKeyReused(request.key)))
                    continue
                if (request.holder, request.key) not in written:
                    written.add((request.holder, request.key))
                    new_keys.append((request.holder, request.key, admission.booking_id))
                decided.append(("new", admission))
                continue
            if refusal is not None:
                decided.append(("refused", SlotClosed(tx.slot_key, refusal)))
                continue
            try:
                fill_policy.validate_units(request.units, tx.capacity)
            except ValidationError as too_many:
                decided.append(("refused", too_many))
                continue
            admission = _admit_one(tx, request, holds)
            if admission.hold_number is not None:
                holds += 1
            admitted[request.holder] = admission
            written.add((request.holder, request.key))
            decided.append(("new", admission))
        inserted = await _insert(tx, list(admitted.values()), holds, new_keys) if admitted else {}
        if new_keys and not admitted:
            await _insert_keys(tx, new_keys)
        if tx.queue_joined and policy.free_units(tx.capacity, tx.taken):
            # Units a party at the head cannot use, which a newcomer now queued may take (FIRST_FIT).
            inserted.update(await _promote_newcomers(tx, inserted))
        for kind, found in decided:
            if kind in ("row", "replay") and found["state"] == BookingState.PENDING:
                tx.place_requests.append(str(found["id"]))
                tx.queue_seqs[str(found["id"])] = int(found["queue_seq"])
    outcomes: list[Outcome] = []
    for kind, found in decided:
        if kind == "refused":
            outcomes.append(found)
        elif kind == "new":
            row = inserted[found.booking_id]
            outcomes.append(Reservation(row, tx.places.get(str(row["id"])), replayed=False))
        else:
            outcomes.append(Reservation(found, tx.places.get(str(found["id"])), replayed=kind == "replay"))
    return outcomes


def _admit_one(tx: SlotTransaction, request: ReserveRequest, holds_before: int) -> _Admission:
    """Hold free units when nobody waits, else join the queue (the domain's rule)."""
    units = request.units
    holds = policy.admit(tx.capacity, len(tx.taken), tx.waiting, units) is policy.Admission.HOLD
    booking_id = uuid.uuid4()
    if not holds:
        tx.waiting += 1
        return _Admission(booking_id, request.holder, request.key, _QUEUED, None, None, None, units)
    unit, *extra = policy.free_units(tx.capacity, tx.taken)[:units]
    tx.taken += [unit, *extra]
    expires_at = policy.hold_expiry(tx.now, tx.hold_seconds, tx.ends_at)
    hold_number = holds_before + 1
    return _Admission(
        booking_id, request.holder, request.key, _HELD, unit, hold_number, expires_at, units, tuple(extra)
    )


async def _promote_newcomers(
    tx: SlotTransaction, inserted: dict[UUID, dict[str, Any]]
) -> dict[UUID, dict[str, Any]]:
    """Offer the free units to the queue as the fill policy says, right after this batch queued;
    answer the rows of this batch's bookings it promoted, as they are now."""
    promoted_before = len(tx.holds_granted)
    await promote(tx)
    granted = tx.holds_granted[promoted_before:]
    if granted:  # _insert wrote the queue's length before these left it
        await tx.fetch("UPDATE slots SET waiting = $2 WHERE id = $1", tx.slot_id, tx.waiting)
    # Only newcomers can be promoted here: the settlement before admission offered the same free
    # units to everyone waiting then. A newcomer still waiting moves up past each one promoted
    # from ahead of it, as of commit.
    promoted = [booking_id for booking_id, _, _ in granted if booking_id in inserted]
    if not promoted:
        return {}
    left = [int(inserted[booking_id]["queue_seq"]) for booking_id in promoted]
    for booking_id, row in inserted.items():
        key = str(booking_id)
        if key in tx.places and booking_id not in promoted:
            tx.places[key] -= sum(seq < int(row["queue_seq"]) for seq in left)
    rows = await tx.fetch(f"SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = ANY($1::uuid[])", promoted)
    return {row["id"]: row for row in rows}


def _known(
    rows: list[dict[str, Any]],
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, dict[str, Any]], tuple[list[int], bool]]:
    """From _KNOWN_SQL's rows: bookings already made for the requests' (holder, key) pairs, these
    holders' live bookings here, and the slot's snapshot (taken units, whether a hold is due)."""
    snapshot = (list(rows[0]["taken"]), bool(rows[0]["hold_due"]))
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    live: dict[str, dict[str, Any]] = {}
    for found in rows:
        if found["id"] is None:
            continue  # the snapshot's row when nothing was found
        row = {name: found[name] for name in _KNOWN_COLUMNS}
        if row["found_key"] is not None:
            by_key[(row["holder"], row["found_key"])] = row
        else:
            live[row["holder"]] = row
    return by_key, live, snapshot


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in BOOKING_COLUMNS.split(","))


# Bookings already made for ($2, $3) = (holders, keys) pairs, and these holders' live bookings
# on slot $1; one row at least (the snapshot for settled_already()), then one per booking found.
_KNOWN_SQL = (
    f"SELECT {snapshot_columns('$1')}, known.* FROM (SELECT 1) AS one LEFT JOIN ("
    f" SELECT i.key AS found_key, i.slot_id AS key_slot, {_prefixed('b')}"
    " FROM idempotency_keys i JOIN bookings b ON b.id = i.booking_id"
    " WHERE (i.holder, i.key) IN (SELECT * FROM unnest($2::text[], $3::text[]))"
    f" UNION ALL SELECT NULL, NULL, {_prefixed('b')} FROM bookings b"
    f" WHERE b.slot_id = $1 AND b.holder = ANY($2::text[]) AND b.state IN {LIVE_SQL}"
    ") AS known ON true"
)
_KNOWN_COLUMNS = ("found_key", "key_slot", *(column.strip() for column in BOOKING_COLUMNS.split(",")))


async def _insert(
    tx: SlotTransaction, admitted: list[_Admission], holds: int, new_keys: list[tuple[str, str, UUID]]
) -> dict[UUID, dict[str, Any]]:
    """Write the new bookings, their audit rows, every new idempotency record, the holds' fences
    and the slot's version and queue length, in one statement."""
    keys = [(a.holder, a.key, a.booking_id) for a in admitted] + new_keys
    rows = await tx.fetch(
        "WITH slot AS ("
        "  UPDATE slots SET fence = fence + $2, version = version + 1, waiting = $3"
        "  WHERE id = $1 RETURNING fence, version),"
        " booking AS ("
        "  INSERT INTO bookings (id, slot_id, holder, state, unit, fence, expires_at, idempotency_key,"
        "   units, extra_units)"
        "  SELECT t.id, $1, t.holder, t.state, t.unit, (SELECT fence FROM slot) - $2 + t.hold_number,"
        "   t.expires_at, t.key, t.units, t.extra_units::int[]"
        "  FROM unnest($4::uuid[], $5::text[], $6::text[], $7::int[], $8::int[], $9::timestamptz[],"
        "   $10::text[], $15::int[], $16::text[])"
        "   AS t (id, holder, state, unit, hold_number, expires_at, key, units, extra_units)"
        f"  RETURNING {BOOKING_COLUMNS}),"
        " audit AS ("
        "  INSERT INTO transitions (booking_id, from_state, to_state, event, actor, fence, slot_id,"
        "   slot_version)"
        "  SELECT b.id, NULL, b.state, e.event, b.holder, b.fence, $1, (SELECT version FROM slot)"
        "  FROM booking b JOIN unnest($4::uuid[], $11::text[]) AS e (id, event) ON e.id = b.id"
        # In admission order (queue_seq follows it): a merge join would otherwise write a big
        # batch's audit rows in booking-id order, and the trail would not replay.
        "  ORDER BY b.queue_seq),"
        " idempotency AS ("
        "  INSERT INTO idempotency_keys (holder, key, slot_id, booking_id)"
        "  SELECT holder, key, $1, booking_id"
        "  FROM unnest($12::text[], $13::text[], $14::uuid[]) AS k (holder, key, booking_id))"
        " SELECT booking.*, (SELECT version FROM slot) AS slot_version FROM booking",
        tx.slot_id,
        holds,
        tx.waiting,
        [a.booking_id for a in admitted],
        [a.holder for a in admitted],
        [a.state.value for a in admitted],
        [a.unit for a in admitted],
        [a.hold_number for a in admitted],
        [a.expires_at for a in admitted],
        [a.key for a in admitted],
        [(Event.HOLD if a.state is _HELD else Event.QUEUE).value for a in admitted],
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [a.units for a in admitted],
        # Array literals, one per booking: unnest() takes no array of arrays of unequal lengths.
        ["{" + ",".join(map(str, a.extra_units)) + "}" for a in admitted],
    )
    by_id = {row["id"]: row for row in rows}
    tx.version = int(rows[0]["slot_version"])
    tx.version_written = True
    # Places in the queue follow the arrival sequence PostgreSQL gave each newcomer.
    queued = sorted((r for r in rows if r["state"] == BookingState.PENDING), key=lambda r: r["queue_seq"])
    waiting_before = tx.waiting - len(queued)
    for place, row in enumerate(queued, start=waiting_before + 1):
        tx.places[str(row["id"])] = place
        tx.queue_seqs[str(row["id"])] = int(row["queue_seq"])
    if queued:
        tx.queue_joined = True
    for admission in admitted:
        row = by_id[admission.booking_id]
        booking_id = str(admission.booking_id)
        if admission.state is _HELD:
            assert admission.expires_at is not None
            tx.holds_granted.append((admission.booking_id, int(row["fence"]), admission.expires_at))
            tx.changes.append(
                Change(booking_id, None, _HELD, Event.HOLD, None, admission.expires_at, units=admission.units)
            )
    for row in queued:
        place = tx.places[str(row["id"])]
        tx.changes.append(Change(str(row["id"]), None, _QUEUED, Event.QUEUE, place, units=int(row["units"])))
    return by_id


async def _insert_keys(tx: SlotTransaction, keys: list[tuple[str, str, UUID]]) -> None:
    await tx.conn.execute_query(
        "INSERT INTO idempotency_keys (holder, key, slot_id, booking_id)"
        " SELECT holder, key, $1, booking_id FROM unnest($2::text[], $3::text[], $4::uuid[])"
        " AS k (holder, key, booking_id)",
        [tx.slot_id, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
    )
