"""Typed GraphQL error members, and the one map from domain exceptions to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from slotengine.domain import errors as domain
from slotengine.domain.states import BookingState
from slotengine.domain.states import InvalidTransition as InvalidTransitionError


@strawberry.interface(description="Every refusal carries a message meant for people.")
class Error:
    message: str


@strawberry.type
class ValidationError(Error):
    field: str


@strawberry.type
class NotAuthorized(Error):
    pass


@strawberry.type
class SlotNotFound(Error):
    slot_id: strawberry.ID


@strawberry.type
class SlotClosed(Error):
    slot_id: strawberry.ID


@strawberry.type
class BookingNotFound(Error):
    booking_id: strawberry.ID


@strawberry.type
class NotHolder(Error):
    booking_id: strawberry.ID


@strawberry.type
class HoldExpired(Error):
    booking_id: strawberry.ID
    expired_at: datetime | None


@strawberry.type
class InvalidTransition(Error):
    from_state: BookingState | None
    event: str


@strawberry.type(
    description="The hold may not be extended (further); the message says which of the slot's limits it met."
)
class ExtensionLimitReached(Error):
    max_extensions: int
    max_hold_seconds: int


@strawberry.type
class IdempotencyKeyReused(Error):
    idempotency_key: str


@strawberry.type
class RateLimited(Error):
    retry_after_seconds: float


@strawberry.type(description="The holder already holds or waits for as many slots as one holder may.")
class TooManyBookings(Error):
    limit: int


@strawberry.type(
    description="A subscription's `after` cursor could not be resumed from: older than the changes "
    "kept for resuming, not a cursor the engine gave out, or of another slot. The message carrying "
    "it shows the current state; the subscription goes on live from there."
)
class CursorExpired(Error):
    pass


@strawberry.type
class WebhookEndpointNotFound(Error):
    endpoint_id: strawberry.ID


@strawberry.type
class WebhookDeliveryNotFound(Error):
    delivery_id: strawberry.ID


@strawberry.type(description="A slot a booking group could not hold; the group holds none of its slots.")
class SlotUnavailable(Error):
    slot_id: strawberry.ID
    reason: str


@strawberry.type
class GroupNotFound(Error):
    group_id: strawberry.ID


def error_member(exc: domain.DomainError) -> Any:
    """The GraphQL member that tells the client what `exc` means."""
    match exc:
        case domain.ValidationError():
            return ValidationError(message=exc.message, field=exc.field)
        case domain.NotAuthorized():
            return NotAuthorized(message=exc.message)
        case domain.SlotNotFound():
            return SlotNotFound(message=exc.message, slot_id=strawberry.ID(exc.slot_id))
        case domain.SlotClosed():
            return SlotClosed(message=exc.message, slot_id=strawberry.ID(exc.slot_id))
        case domain.BookingNotFound():
            return BookingNotFound(message=exc.message, booking_id=strawberry.ID(exc.booking_id))
        case domain.NotHolder():
            return NotHolder(message=exc.message, booking_id=strawberry.ID(exc.booking_id))
        case domain.HoldExpired():
            return HoldExpired(
                message=exc.message,
                booking_id=strawberry.ID(exc.booking_id),
                expired_at=exc.expired_at,
            )
        case InvalidTransitionError():
            return InvalidTransition(message=exc.message, from_state=exc.from_state, event=exc.event)
        case domain.ExtensionLimitReached():
            return ExtensionLimitReached(
                message=exc.message,
                max_extensions=exc.max_extensions,
                max_hold_seconds=exc.max_hold_seconds,
            )
        case domain.IdempotencyKeyReused():
            return IdempotencyKeyReused(message=exc.message, idempotency_key=exc.key)
        case domain.RateLimited():
            return RateLimited(message=exc.message, retry_after_seconds=exc.retry_after_seconds)
        case domain.TooManyBookings():
            return TooManyBookings(message=exc.message, limit=exc.limit)
        case domain.CursorExpired():
            return CursorExpired(message=exc.message)
        case domain.WebhookEndpointNotFound():
            return WebhookEndpointNotFound(message=exc.message, endpoint_id=strawberry.ID(exc.endpoint_id))
        case domain.WebhookDeliveryNotFound():
            return WebhookDeliveryNotFound(message=exc.message, delivery_id=strawberry.ID(exc.delivery_id))
        case domain.SlotUnavailable():
            return SlotUnavailable(message=exc.message, slot_id=strawberry.ID(exc.slot_id), reason=exc.why)
        case domain.GroupNotFound():
            return GroupNotFound(message=exc.message, group_id=strawberry.ID(exc.group_id))
    raise TypeError(f"no GraphQL member for {exc!r}")  # pragma: no cover
