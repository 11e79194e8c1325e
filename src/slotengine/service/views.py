"""What the service hands back: plain read models, free of ORM and Redis types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from slotengine.domain.states import BookingState


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

    @property
    def available(self) -> int:
        return max(0, self.capacity - self.held - self.confirmed)


@dataclass(frozen=True, slots=True)
class BookingView:
    id: str
    slot_id: str
    holder: str
    state: BookingState
    expires_at: datetime | None
    queue_position: int | None
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
