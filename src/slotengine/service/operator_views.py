"""The operator's view of one slot: its bookings (who holds, who waits where, who confirmed) and its
audit trail, cursor-paginated.

Each page is one PostgreSQL statement, so what it shows is one snapshot. Bookings are listed in
arrival order (queue_seq, which never changes for a booking), so a page never repeats a booking
nor skips one that was there all along, however the queue moves between pages; waiters are in
FIFO order among themselves. A waiter's position is the number waiting ahead of the page's first
waiter plus its rank among the page's waiters (a window function), never a count per row. The
number ahead comes from the slot's Redis mirror (one ZRANK, flat in the queue's length) when the
mirror is at the very version of the slot the page was read at, so the two agree; else the page is
read again with that number counted in its own snapshot (one count on the queue's index).

A page of the audit trail is a range of the index on (slot_id, id) (0012): one page's rows,
however long the slot's trail.

Like every read, a page settles its slot first when something on it is due (a lapsed hold to
expire, a queue to promote or lapse), so an operator never sees a hold that is already dead.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import NotAuthorized, SlotNotFound, ValidationError
from slotengine.domain.states import BookingState
from slotengine.redis import scripts
from slotengine.service import sequence_cursor
from slotengine.service.engine import Engine
from slotengine.service.ids import parse_id
from slotengine.service.queries import booking_view_of, slot_is_due
from slotengine.service.reservations import settle_slot
from slotengine.service.state_sql import PENDING, RESERVED
from slotengine.service.unit_of_work import SYSTEM_ACTOR
from slotengine.service.views import BookingView, Caller, TransitionView
from slotengine.store.database import connection

BOOKINGS_LISTING = "slotBookings"
HISTORY_LISTING = "slotHistory"
# Larger than any audit row's id: the first page of a trail read newest first starts below it.
_NEWEST = 2**63 - 1

# The slot with what slot_is_due needs (a materialized CTE: counted once, not once per row of the
# page). Occupying bookings are exactly those with a unit, so the
# counts walk at most `capacity` index entries; the queue's length is kept on the slot's row.
_SLOT_STATE = (
    "SELECT s.id AS slot_id, s.starts_at, s.ends_at, s.capacity, s.waiting, s.version,"
    " now() AS db_now,"
    f" (SELECT coalesce(sum(u.units) FILTER (WHERE u.state = {RESERVED} AND u.expires_at > now()), 0)"
    "   FROM bookings u WHERE u.slot_id = s.id AND u.unit IS NOT NULL) AS held,"
    f" (SELECT coalesce(sum(u.units) FILTER (WHERE u.state = {RESERVED} AND u.expires_at <= now()), 0)"
    "   FROM bookings u WHERE u.slot_id = s.id AND u.unit IS NOT NULL) AS lapsed,"
    f" (SELECT coalesce(sum(u.units) FILTER (WHERE u.state <> {RESERVED}), 0)"
    "   FROM bookings u WHERE u.slot_id = s.id AND u.unit IS NOT NULL) AS confirmed"
    " FROM slots s WHERE s.id = $1"
)


@dataclass(frozen=True, slots=True)
class BookingPage:
    items: list[BookingView]
    end_cursor: str | None  # resumes after the last booking this page looked at
    has_next_page: bool


@dataclass(frozen=True, slots=True)
class SlotTransitionView:
    """One audit row of a slot's trail, naming the booking it moved and that booking's holder."""

    booking_id: str
    holder: str
    transition: TransitionView


@dataclass(frozen=True, slots=True)
class HistoryPage:
    items: list[SlotTransitionView]
    end_cursor: str | None  # resumes after (older than) the last row this page showed
    has_next_page: bool


def _bookings_statement(filtered: bool, counted: bool) -> str:
    """A page of bookings with each waiter's rank among the page's waiters; `counted` also counts
    the waiters ahead of the page's first one, in the same snapshot."""
    state_filter = " AND b.state = ANY($4::text[])" if filtered else ""
    ahead = (
        # One count on the queue's partial index: as long as the page is deep in the queue.
        f"(SELECT count(*) FROM bookings q WHERE q.slot_id = $1 AND q.state = {PENDING}"
        f"  AND q.queue_seq < (SELECT min(w.queue_seq) FROM page w WHERE w.state = {PENDING}))"
        if counted
        else "NULL::bigint"
    )
    return (
        f"WITH st AS MATERIALIZED ({_SLOT_STATE}),"
        " page AS ("
        "  SELECT b.id, b.holder, b.state, b.queue_seq, b.expires_at, b.created_at FROM bookings b"
        f"  WHERE b.slot_id = $1 AND b.queue_seq > $2{state_filter} ORDER BY b.queue_seq LIMIT $3)"
        f" SELECT st.*, {ahead} AS ahead, p.id, p.holder, p.state, p.queue_seq, p.expires_at,"
        f"  p.created_at, CASE WHEN p.state = {PENDING}"
        f"   THEN row_number() OVER (PARTITION BY p.state = {PENDING} ORDER BY p.queue_seq) END AS rank"
        " FROM st LEFT JOIN page p ON true ORDER BY p.queue_seq"
    )


def _history_statement(own_only: bool) -> str:
    holder_filter = " AND b.holder = $4" if own_only else ""
    return (
        f"WITH st AS MATERIALIZED ({_SLOT_STATE})"
        " SELECT st.*, h.id AS seq, h.booking_id, h.holder, h.from_state, h.to_state, h.event,"
        "  h.actor, h.reason, h.at"
        " FROM st LEFT JOIN LATERAL ("
        "  SELECT t.id, t.booking_id, b.holder, t.from_state, t.to_state, t.event, t.actor, t.reason, t.at"
        "  FROM transitions t JOIN bookings b ON b.id = t.booking_id"
        # The audit row names its slot (0009): the slot's rows come from its index, not a join.
        f"  WHERE t.slot_id = st.slot_id AND t.id < $2{holder_filter} ORDER BY t.id DESC LIMIT $3"
        " ) h ON true ORDER BY h.id DESC"
    )


async def _settled_rows(
    engine: Engine, slot_id: UUID, statement: str, args: list[Any]
) -> list[dict[str, Any]]:
    """The statement's rows (one or more per existing slot, each with the slot's state), after
    settling the slot when something on it is due; SlotNotFound when there is no such slot."""
    rows = await connection().execute_query_dict(statement, args)
    if not rows:
        raise SlotNotFound(str(slot_id))
    if slot_is_due(rows[0]):
        await settle_slot(engine, slot_id)
        rows = await connection().execute_query_dict(statement, args)
    return rows


async def slot_bookings(
    engine: Engine,
    caller: Caller | None,
    slot_id: str,
    states: Collection[BookingState] | None,
    first: int,
    after: str | None = None,
) -> BookingPage:
    """One page of the slot's bookings in arrival order (admins only), optionally of some states:
    holds with their expiry, waiters with their place in line, confirmed and final ones."""
    if caller is None or not caller.admin:
        raise NotAuthorized("only an admin can list a slot's bookings")
    slot_uuid = parse_id("slotId", slot_id)
    if states is not None and not states:
        raise ValidationError("states", "must name at least one state, or be left out for all")
    after_seq = sequence_cursor.decode(BOOKINGS_LISTING, after) if after is not None else 0
    args: list[Any] = [slot_uuid, after_seq, first + 1]
    if states is not None:
        args.append(sorted(state.value for state in states))
    rows = await _settled_rows(engine, slot_uuid, _bookings_statement(states is not None, False), args)
    ahead = await _mirrored_ahead(engine, rows)
    if ahead is None:
        # The mirror cannot say (missing, or at another version than this snapshot): the page
        # again, with the count in its own snapshot.
        rows = await connection().execute_query_dict(_bookings_statement(states is not None, True), args)
        ahead = int(rows[0]["ahead"])
    page = [row for row in rows if row["id"] is not None][:first]
    items = [booking_view_of({**row, "position": _place(ahead, row["rank"])}) for row in page]
    if states is not None:
        # A hold on an ended slot, which no read settles, reads EXPIRED: not what was asked for.
        items = [item for item in items if item.state in states]
    return BookingPage(
        items=items,
        end_cursor=sequence_cursor.encode(BOOKINGS_LISTING, page[-1]["queue_seq"]) if page else after,
        has_next_page=len(rows) > first,
    )


async def _mirrored_ahead(engine: Engine, rows: list[dict[str, Any]]) -> int | None:
    """How many wait ahead of the page's first waiter, by the slot's Redis mirror (ZRANK: flat in
    the queue's length) when it is at the version the page was read at; 0 when the page has no
    waiter; None when the mirror cannot say."""
    first_waiter = next((row for row in rows if row["rank"] == 1), None)
    if first_waiter is None:
        return 0
    keys = engine.keys(str(first_waiter["slot_id"])).all()
    return await scripts.read_queue_ahead(
        engine.redis, keys, int(first_waiter["version"]), str(first_waiter["id"])
    )


def _place(ahead: int, rank: int | None) -> int | None:
    return None if rank is None else ahead + int(rank)


async def slot_history(
    engine: Engine, caller: Caller | None, slot_id: str, first: int, after: str | None = None
) -> HistoryPage:
    """One page of the slot's audit trail, newest first. Admins read every row with actors as they
    are; a holder reads the rows of their own bookings of the slot, an admin's actions as "admin"."""
    if caller is None:
        raise NotAuthorized("reading a slot's history needs 'Authorization: Bearer <token>'")
    slot_uuid = parse_id("slotId", slot_id)
    before = sequence_cursor.decode(HISTORY_LISTING, after) if after is not None else _NEWEST
    args: list[Any] = [slot_uuid, before, first + 1]
    if not caller.admin:
        args.append(caller.holder)
    rows = await _settled_rows(engine, slot_uuid, _history_statement(not caller.admin), args)
    page = [row for row in rows if row["seq"] is not None][:first]
    return HistoryPage(
        items=[_transition_of(row, caller) for row in page],
        end_cursor=sequence_cursor.encode(HISTORY_LISTING, page[-1]["seq"]) if page else after,
        has_next_page=len(rows) > first,
    )


def _transition_of(row: dict[str, Any], viewer: Caller) -> SlotTransitionView:
    return SlotTransitionView(
        booking_id=str(row["booking_id"]),
        holder=row["holder"],
        transition=TransitionView(
            from_state=BookingState(row["from_state"]) if row["from_state"] else None,
            to_state=BookingState(row["to_state"]),
            event=row["event"],
            actor=policy.visible_actor(row["actor"], row["holder"], viewer.admin, SYSTEM_ACTOR),
            reason=row["reason"],
            at=row["at"],
        ),
    )
