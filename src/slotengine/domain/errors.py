"""Domain failures: exceptions inside the engine, typed union members at the GraphQL edge."""

from __future__ import annotations

from datetime import datetime


class DomainError(Exception):
    """A refusal the caller can act on; `message` is safe to show to a user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ValidationError(DomainError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotAuthorized(DomainError):
    pass


class SlotNotFound(DomainError):
    def __init__(self, slot_id: str) -> None:
        super().__init__(f"slot {slot_id} does not exist")
        self.slot_id = slot_id


class SlotClosed(DomainError):
    def __init__(self, slot_id: str, why: str) -> None:
        super().__init__(f"slot {slot_id} takes no reservations: {why}")
        self.slot_id = slot_id


class BookingNotFound(DomainError):
    def __init__(self, booking_id: str) -> None:
        super().__init__(f"booking {booking_id} does not exist")
        self.booking_id = booking_id


class NotHolder(DomainError):
    def __init__(self, booking_id: str) -> None:
        super().__init__(f"booking {booking_id} belongs to another holder")
        self.booking_id = booking_id


class HoldExpired(DomainError):
    def __init__(self, booking_id: str, expired_at: datetime | None) -> None:
        when = f" at {expired_at.isoformat()}" if expired_at else ""
        super().__init__(f"the hold on booking {booking_id} expired{when}")
        self.booking_id = booking_id
        self.expired_at = expired_at


class ExtensionLimitReached(DomainError):
    """A hold may not be extended (further): the message says which limit it met."""

    def __init__(self, message: str, max_extensions: int, max_hold_seconds: int) -> None:
        super().__init__(message)
        self.max_extensions = max_extensions
        self.max_hold_seconds = max_hold_seconds


class IdempotencyKeyReused(DomainError):
    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for another request")
        self.key = key


class RateLimited(DomainError):
    def __init__(self, retry_after_seconds: float, what: str = "reservations") -> None:
        super().__init__(f"too many {what}; try again in {max(1, round(retry_after_seconds))} s")
        self.retry_after_seconds = retry_after_seconds


class TooManyBookings(DomainError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"you already hold or wait for {limit} slots; confirm or cancel one first")
        self.limit = limit


class Busy(DomainError):
    """Every connection readers may use stayed taken for the whole wait: try again shortly."""

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__("the engine is busy with other reads; try again shortly")
        self.retry_after_seconds = retry_after_seconds


class CursorExpired(DomainError):
    """A subscription's `after` cursor cannot be resumed from: older than what is kept, not a
    cursor the engine gave out, or of another slot. The subscription goes on from the current state."""

    def __init__(self, why: str) -> None:
        super().__init__(f"cannot resume after this cursor ({why}): here is the current state")
        self.why = why


class WebhookEndpointNotFound(DomainError):
    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"webhook endpoint {endpoint_id} does not exist")
        self.endpoint_id = endpoint_id


class WebhookDeliveryNotFound(DomainError):
    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"webhook delivery {delivery_id} does not exist")
        self.delivery_id = delivery_id


class SlotUnavailable(DomainError):
    """A group could not hold this slot, so it holds none of them."""

    def __init__(self, slot_id: str, why: str) -> None:
        super().__init__(f"slot {slot_id} cannot be held: {why}; nothing was held")
        self.slot_id = slot_id
        self.why = why


class GroupNotFound(DomainError):
    def __init__(self, group_id: str) -> None:
        super().__init__(f"booking group {group_id} does not exist")
        self.group_id = group_id
