"""What the service hands back: plain read models, free of ORM and Redis types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from slotengine.domain.fill_policy import DEFAULT_FILL_POLICY, DEFAULT_MAX_PASS_OVERS, FillPolicy
from slotengine.domain.policy import DEFAULT_MAX_EXTENSIONS
from slotengine.domain.states import BookingState

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class SlotView:
    id: str
    resource: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    hold_seconds: int
    closed: bool
    held: int
    confirmed: int
    queue_length: int
    max_extensions: int = DEFAULT_MAX_EXTENSIONS
    max_hold_seconds: int | None = None  # the slot's own cap; None: policy's default
    fill_policy: FillPolicy = DEFAULT_FILL_POLICY
    max_pass_overs: int = DEFAULT_MAX_PASS_OVERS

    @property
    def available(self) -> int:
        return max(0, self.capacity - self.held - self.confirmed)

    @classmethod
    def of_row(cls, row: Mapping[str, Any], queue_length: int) -> SlotView:
        """A slot row with its `held` and `confirmed` counts; the caller says how many wait."""
        return cls(
            id=str(row["id"]),
            resource=row["resource"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            capacity=row["capacity"],
            hold_seconds=row["hold_seconds"],
            closed=row["closed"],
            held=int(row["held"]),
            confirmed=int(row["confirmed"]),
            queue_length=queue_length,
            max_extensions=row["max_extensions"],
            max_hold_seconds=row["max_hold_seconds"],
            fill_policy=FillPolicy(row.get("fill_policy", DEFAULT_FILL_POLICY)),
            max_pass_overs=int(row.get("max_pass_overs", DEFAULT_MAX_PASS_OVERS)),
        )


@dataclass(frozen=True, slots=True)
class BookingView:
    id: str
    slot_id: str
    holder: str
    state: BookingState
    expires_at: datetime | None
    queue_position: int | None
    created_at: datetime
    group_id: str | None = None  # the booking group it belongs to (reserveSlots), if any
    units: int = 1  # units of the slot it takes (or waits for), as one booking


@dataclass(frozen=True, slots=True)
class GroupView:
    """A booking group: one booking per slot, held, confirmed, cancelled and expired together."""

    id: str
    holder: str
    state: BookingState
    expires_at: datetime | None
    bookings: list[BookingView]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TransitionView:
    from_state: BookingState | None
    to_state: BookingState
    event: str
    actor: str
    reason: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class QueuePositionView:
    booking_id: str
    state: BookingState
    position: int | None
    ahead: int | None
    expires_at: datetime | None
    estimated_wait_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the JWT's subject, and whether it carries the admin role."""

    holder: str
    admin: bool = False


@dataclass(frozen=True, slots=True)
class LiveMessage(Generic[V]):
    """One message of a subscription: the view, the cursor to resume after it, and, on the first
    message of a subscription whose `after` cursor could not be resumed from, why not."""

    view: V
    cursor: str
    cursor_expired: str | None = None
