"""GraphQL object types; their names and fields are the public contract (schema.graphql)."""

from __future__ import annotations

from datetime import date, datetime, time

import strawberry
from graphql import GraphQLError

from slotengine.api.context import Info
from slotengine.api.errors import CursorExpired
from slotengine.domain import policy
from slotengine.domain.errors import DomainError
from slotengine.domain.fill_policy import DEFAULT_FILL_POLICY, DEFAULT_MAX_PASS_OVERS, FillPolicy
from slotengine.domain.recurrence import Weekday
from slotengine.domain.states import BookingState
from slotengine.service import operator_views, queries
from slotengine.service.views import (
    BookingView,
    GroupView,
    LiveMessage,
    QueuePositionView,
    SlotView,
    TransitionView,
)

strawberry.enum(BookingState, name="BookingState")
strawberry.enum(
    FillPolicy,
    name="FillPolicy",
    description="Who is offered units as they free: STRICT_FIFO, the head of the queue blocks everyone "
    "behind it until enough units are free; FIRST_FIT, a smaller entry behind may take units the head "
    "cannot use, while no entry it passes has been passed over maxPassOvers times.",
)
strawberry.enum(Weekday, name="Weekday")

_CURSOR = (
    "On subscription messages: where this message stands in its slot's history. Pass it as `after` "
    "to slotStatus, queuePosition or bookingUpdates of the same slot to resume from here. Opaque; "
    "null outside subscriptions."
)
_CURSOR_EXPIRED = (
    "On the first message of a subscription whose `after` cursor could not be resumed from: why. "
    "That message shows the current state; null otherwise."
)


def _cursor_expired(message: LiveMessage[object]) -> CursorExpired | None:
    if message.cursor_expired is None:
        return None
    return CursorExpired(message=message.cursor_expired)


@strawberry.type
class Slot:
    id: strawberry.ID
    resource: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    hold_seconds: int
    available: int
    held: int
    confirmed: int
    queue_length: int
    closed: bool
    max_extensions: int = strawberry.field(description="How many times one hold may be extended.")
    max_hold_seconds: int = strawberry.field(
        description="How long one hold may last in all, extensions included (default 3 x holdSeconds)."
    )
    fill_policy: FillPolicy = strawberry.field(
        default=DEFAULT_FILL_POLICY, description="Who is offered units as they free."
    )
    max_pass_overs: int = strawberry.field(
        default=DEFAULT_MAX_PASS_OVERS,
        description="Under FIRST_FIT, how many later entries may take units before a waiting entry "
        "that cannot use them; from then on it blocks everyone behind it.",
    )
    cursor: str | None = strawberry.field(default=None, description=_CURSOR)
    cursor_expired: CursorExpired | None = strawberry.field(default=None, description=_CURSOR_EXPIRED)

    @classmethod
    def live(cls, message: LiveMessage[SlotView]) -> Slot:
        """A subscription message: the slot with its cursor."""
        slot = cls.of(message.view)
        slot.cursor = message.cursor
        slot.cursor_expired = _cursor_expired(message)  # type: ignore[arg-type]
        return slot

    @classmethod
    def of(cls, view: SlotView) -> Slot:
        return cls(
            id=strawberry.ID(view.id),
            resource=view.resource,
            starts_at=view.starts_at,
            ends_at=view.ends_at,
            capacity=view.capacity,
            hold_seconds=view.hold_seconds,
            available=view.available,
            held=view.held,
            confirmed=view.confirmed,
            queue_length=view.queue_length,
            closed=view.closed,
            max_extensions=view.max_extensions,
            max_hold_seconds=policy.hold_cap_seconds(view.hold_seconds, view.max_hold_seconds),
            fill_policy=view.fill_policy,
            max_pass_overs=view.max_pass_overs,
        )


@strawberry.type(description="One page of a slot listing; pass endCursor as `after` for the next page.")
class SlotPage:
    items: list[Slot]
    end_cursor: str | None = strawberry.field(
        description="Resumes after the last slot this page looked at (with onlyAvailable, past full "
        "ones it skipped); null when the listing is empty."
    )
    has_next_page: bool

    @classmethod
    def of(cls, page: queries.SlotPage) -> SlotPage:
        return cls(
            items=[Slot.of(v) for v in page.items],
            end_cursor=page.end_cursor,
            has_next_page=page.has_next_page,
        )


@strawberry.type(description="The slots one createSlots call made, in start order.")
class SlotBatch:
    count: int
    slots: list[Slot]

    @classmethod
    def of(cls, views: list[SlotView]) -> SlotBatch:
        return cls(count=len(views), slots=[Slot.of(v) for v in views])


@strawberry.type
class Transition:
    from_state: BookingState | None
    to_state: BookingState
    event: str
    actor: str
    reason: str | None
    at: datetime

    @classmethod
    def of(cls, view: TransitionView) -> Transition:
        return cls(
            from_state=view.from_state,
            to_state=view.to_state,
            event=view.event,
            actor=view.actor,
            reason=view.reason,
            at=view.at,
        )


@strawberry.type
class Booking:
    id: strawberry.ID
    slot_id: strawberry.ID
    holder: str
    state: BookingState
    expires_at: datetime | None
    queue_position: int | None = strawberry.field(
        description="Place in the slot's queue while PENDING; 1 is next in line."
    )
    created_at: datetime
    group_id: strawberry.ID | None = strawberry.field(
        default=None, description="The booking group (reserveSlots) this booking belongs to, if any."
    )
    units: int = strawberry.field(
        default=1, description="Units of the slot this booking takes (or waits for), all as one booking."
    )
    cursor: str | None = strawberry.field(default=None, description=_CURSOR)
    cursor_expired: CursorExpired | None = strawberry.field(default=None, description=_CURSOR_EXPIRED)

    @strawberry.field(
        description="Every transition of this booking, oldest first; an admin's actions name the "
        'actor "admin" to anyone but admins.'
    )
    async def history(self, info: Info) -> list[Transition]:
        try:
            trail = await info.context.histories.load(str(self.id))
        except DomainError as refusal:
            raise GraphQLError(refusal.message, extensions={"code": type(refusal).__name__}) from None
        return [Transition.of(t) for t in queries.as_seen_by(trail, self.holder, info.context.caller)]

    @classmethod
    def live(cls, message: LiveMessage[BookingView]) -> Booking:
        """A subscription message: the booking with its cursor."""
        booking = cls.of(message.view)
        booking.cursor = message.cursor
        booking.cursor_expired = _cursor_expired(message)  # type: ignore[arg-type]
        return booking

    @classmethod
    def of(cls, view: BookingView) -> Booking:
        return cls(
            id=strawberry.ID(view.id),
            slot_id=strawberry.ID(view.slot_id),
            holder=view.holder,
            state=view.state,
            expires_at=view.expires_at,
            queue_position=view.queue_position,
            created_at=view.created_at,
            group_id=strawberry.ID(view.group_id) if view.group_id else None,
            units=view.units,
        )


@strawberry.type(
    description="Bookings of several slots held, confirmed, cancelled and expired together: every "
    "slot is held with one expiresAt, or none is."
)
class BookingGroup:
    id: strawberry.ID
    holder: str
    state: BookingState
    expires_at: datetime | None = strawberry.field(
        description="When every hold of the group lapses together (while RESERVED, or once EXPIRED)."
    )
    bookings: list[Booking] = strawberry.field(description="One booking per slot, in slot id order.")
    slot_ids: list[strawberry.ID]
    created_at: datetime

    @classmethod
    def of(cls, view: GroupView) -> BookingGroup:
        return cls(
            id=strawberry.ID(view.id),
            holder=view.holder,
            state=view.state,
            expires_at=view.expires_at,
            bookings=[Booking.of(b) for b in view.bookings],
            slot_ids=[strawberry.ID(b.slot_id) for b in view.bookings],
            created_at=view.created_at,
        )


@strawberry.type(
    description="One page of a slot's bookings in arrival order; pass endCursor as `after` for the next."
)
class BookingPage:
    items: list[Booking]
    end_cursor: str | None = strawberry.field(
        description="Resumes after the last booking this page looked at; null when there is none."
    )
    has_next_page: bool

    @classmethod
    def of(cls, page: operator_views.BookingPage) -> BookingPage:
        return cls(
            items=[Booking.of(v) for v in page.items],
            end_cursor=page.end_cursor,
            has_next_page=page.has_next_page,
        )


@strawberry.type(description="One row of a slot's audit trail: a transition of one of its bookings.")
class SlotTransition:
    booking_id: strawberry.ID
    holder: str
    from_state: BookingState | None
    to_state: BookingState
    event: str
    actor: str
    reason: str | None
    at: datetime

    @classmethod
    def of(cls, view: operator_views.SlotTransitionView) -> SlotTransition:
        t = view.transition
        return cls(
            booking_id=strawberry.ID(view.booking_id),
            holder=view.holder,
            from_state=t.from_state,
            to_state=t.to_state,
            event=t.event,
            actor=t.actor,
            reason=t.reason,
            at=t.at,
        )


@strawberry.type(
    description="One page of a slot's audit trail, newest first; pass endCursor as `after` for older rows."
)
class SlotHistoryPage:
    items: list[SlotTransition]
    end_cursor: str | None = strawberry.field(
        description="Resumes after (older than) the last row this page showed; null when there is none."
    )
    has_next_page: bool

    @classmethod
    def of(cls, page: operator_views.HistoryPage) -> SlotHistoryPage:
        return cls(
            items=[SlotTransition.of(v) for v in page.items],
            end_cursor=page.end_cursor,
            has_next_page=page.has_next_page,
        )


@strawberry.type
class QueuePosition:
    booking_id: strawberry.ID
    state: BookingState
    position: int | None
    ahead: int | None
    estimated_wait_seconds: float | None
    expires_at: datetime | None
    cursor: str | None = strawberry.field(default=None, description=_CURSOR)
    cursor_expired: CursorExpired | None = strawberry.field(default=None, description=_CURSOR_EXPIRED)

    @classmethod
    def live(cls, message: LiveMessage[QueuePositionView]) -> QueuePosition:
        """A subscription message: the place in the queue with its cursor."""
        update = cls.of(message.view)
        update.cursor = message.cursor
        update.cursor_expired = _cursor_expired(message)  # type: ignore[arg-type]
        return update

    @classmethod
    def of(cls, view: QueuePositionView) -> QueuePosition:
        return cls(
            booking_id=strawberry.ID(view.booking_id),
            state=view.state,
            position=view.position,
            ahead=view.ahead,
            estimated_wait_seconds=view.estimated_wait_seconds,
            expires_at=view.expires_at,
        )


@strawberry.input
class CreateSlotInput:
    resource: str
    starts_at: datetime
    ends_at: datetime
    capacity: int = 1
    hold_seconds: int = 120
    max_extensions: int = strawberry.field(
        default=policy.DEFAULT_MAX_EXTENSIONS, description="How many times one hold may be extended."
    )
    max_hold_seconds: int | None = strawberry.field(
        default=None,
        description="How long one hold may last in all, extensions included; null: 3 x holdSeconds.",
    )
    fill_policy: FillPolicy = strawberry.field(
        default=DEFAULT_FILL_POLICY, description="Who is offered units as they free."
    )
    max_pass_overs: int = strawberry.field(
        default=DEFAULT_MAX_PASS_OVERS,
        description="Under FIRST_FIT, how often a waiting entry may be passed over (0 to 1000).",
    )


@strawberry.input(
    description="A weekly pattern on timeZone's wall clock: on each chosen weekday from firstDate to "
    "lastDate (inclusive), a slot of slotMinutes starts every everyMinutes from windowStart, as long as "
    "it ends by windowEnd. Local times hold across daylight-saving changes: a start the clock skips is "
    "left out, one the clock reads twice is made once (at its first reading)."
)
class CreateSlotsInput:
    resource: str
    time_zone: str = strawberry.field(description="IANA time zone name, e.g. 'Europe/Berlin'.")
    first_date: date
    last_date: date
    weekdays: list[Weekday]
    window_start: time = strawberry.field(description="Local wall-clock time, e.g. '09:00'.")
    window_end: time = strawberry.field(description="Local wall-clock time after windowStart, e.g. '17:00'.")
    slot_minutes: int
    every_minutes: int | None = strawberry.field(
        default=None, description="Minutes from one slot's start to the next; defaults to slotMinutes."
    )
    capacity: int = 1
    hold_seconds: int = 120
    max_extensions: int = strawberry.field(
        default=policy.DEFAULT_MAX_EXTENSIONS, description="How many times one hold may be extended."
    )
    max_hold_seconds: int | None = strawberry.field(
        default=None,
        description="How long one hold may last in all, extensions included; null: 3 x holdSeconds.",
    )
    fill_policy: FillPolicy = strawberry.field(
        default=DEFAULT_FILL_POLICY, description="Who is offered units as they free."
    )
    max_pass_overs: int = strawberry.field(
        default=DEFAULT_MAX_PASS_OVERS,
        description="Under FIRST_FIT, how often a waiting entry may be passed over (0 to 1000).",
    )


@strawberry.input(description="What updateSlot changes; a term left out (or null) stays as it is.")
class UpdateSlotInput:
    capacity: int | None = strawberry.field(
        default=None,
        description="Units of the slot. Growing offers the new units to the queue at once; it cannot "
        "go below the units held or confirmed now.",
    )
    hold_seconds: int | None = strawberry.field(
        default=None, description="Length of holds granted from now on (holds already granted keep theirs)."
    )
    max_extensions: int | None = None
    max_hold_seconds: int | None = None
    fill_policy: FillPolicy | None = strawberry.field(
        default=None, description="Who is offered units as they free; the queue moves by it at once."
    )
    max_pass_overs: int | None = None
