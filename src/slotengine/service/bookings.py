"""Loading booking rows and turning them into views."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from slotengine.domain.errors import BookingNotFound
from slotengine.domain.states import BookingState
from slotengine.service.views import BookingView
from slotengine.store.database import connection

BOOKING_COLUMNS = "id, slot_id, holder, state, unit, fence, queue_seq, expires_at, created_at"


def parse_booking_id(raw: str) -> UUID:
    """A booking id from the API; one that cannot exist reads as not found."""
    try:
        return UUID(raw)
    except ValueError:
        raise BookingNotFound(raw) from None


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
    )
