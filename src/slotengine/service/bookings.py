"""Loading booking rows and turning them into views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from slotengine.domain import groups
from slotengine.domain.states import BookingState, Event
from slotengine.service.state_sql import CLAIMING_SQL, RESERVED
from slotengine.service.views import BookingView
from slotengine.store.database import connection

BOOKING_COLUMNS = (
    "id, slot_id, holder, state, unit, fence, queue_seq, expires_at, created_at, group_id, units, extra_units"
)


async def capped_holders(holders: Sequence[str], slot_id: UUID, cap: int) -> set[str]:
    """The holders among `holders` who already hold or wait for `cap` slots besides `slot_id`.

    One query on a partial index, outside any slot lock: concurrent reserves of one holder on
    several slots may each pass it, so the cap can be overshot by the requests that holder has in
    flight at once. (admit_reservations() applies the same rule in its own statement.)
    """
    if cap <= 0 or not holders:
        return set()
    rows = await connection().execute_query_dict(
        "SELECT holder FROM bookings WHERE holder = ANY($1::text[]) AND slot_id <> $2"
        f" AND state IN {CLAIMING_SQL} AND (state <> {RESERVED} OR expires_at > now())"
        " GROUP BY holder HAVING count(*) >= $3",
        [list(set(holders)), slot_id, cap],
    )
    return {row["holder"] for row in rows}


async def load_booking_row(booking_id: UUID) -> dict[str, Any] | None:
    rows = await connection().execute_query_dict(
        f"SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = $1",
        [booking_id],
    )
    return rows[0] if rows else None


def booking_view(row: dict[str, Any], queue_position: int | None) -> BookingView:
    state = BookingState(row["state"])
    return BookingView(
        id=str(row["id"]),
        slot_id=str(row["slot_id"]),
        holder=row["holder"],
        state=state,
        # Only a live hold has an expiry worth showing; an expired one keeps it for the record.
        expires_at=row["expires_at"] if state in (BookingState.RESERVED, BookingState.EXPIRED) else None,
        queue_position=queue_position if state is BookingState.PENDING else None,
        created_at=row["created_at"],
        group_id=str(row["group_id"]) if row.get("group_id") else None,
        units=int(row.get("units") or 1),
    )


def check_moves_alone(row: dict[str, Any], state: BookingState, event: Event) -> None:
    """A held or waiting booking of a group moves only with its group (confirmGroup, cancelGroup;
    its hold is not extended alone either: the group has one expiresAt)."""
    if (
        event in (Event.CONFIRM, Event.CANCEL, Event.EXTEND)
        and row["group_id"] is not None
        and not groups.member_moves_alone(state)
    ):
        raise groups.GroupMember(state, event.value, str(row["id"]), str(row["group_id"]))
