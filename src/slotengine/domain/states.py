"""Booking states and the one transition table that says what may happen to a booking."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from slotengine.domain.errors import DomainError, NotAuthorized


class BookingState(StrEnum):
    PENDING = "PENDING"
    RESERVED = "RESERVED"
    CONFIRMED = "CONFIRMED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class Event(StrEnum):
    HOLD = "hold"  # a new request finds a free unit and nobody waiting
    QUEUE = "queue"  # a new request finds the slot full or people waiting
    PROMOTE = "promote"  # a unit freed and this booking heads the queue
    CONFIRM = "confirm"
    CANCEL = "cancel"
    EXPIRE = "expire"  # the hold's TTL passed
    LAPSE = "lapse"  # the slot started while the booking was still waiting
    COMPLETE = "complete"
    EXTEND = "extend"  # the holder asks for more time on a live hold (a new fence and expiry)
    CLOSE = "close"  # an admin closed the slot while the booking was still waiting


class Role(StrEnum):
    HOLDER = "holder"
    ADMIN = "admin"
    SYSTEM = "system"


class InvalidTransition(DomainError):
    """The transition table has no move for this event from this state."""

    def __init__(self, from_state: BookingState | None, event: str) -> None:
        name = from_state.value if from_state is not None else "a new booking"
        super().__init__(f"cannot {event} from {name}")
        self.from_state = from_state
        self.event = event


@dataclass(frozen=True, slots=True)
class Rule:
    to_state: BookingState
    roles: frozenset[Role]


_HOLDER = frozenset({Role.HOLDER})
_HOLDER_OR_ADMIN = frozenset({Role.HOLDER, Role.ADMIN})
_ADMIN = frozenset({Role.ADMIN})
_SYSTEM = frozenset({Role.SYSTEM})

S = BookingState
TRANSITIONS: dict[tuple[BookingState | None, Event], Rule] = {
    (None, Event.HOLD): Rule(S.RESERVED, _HOLDER),
    (None, Event.QUEUE): Rule(S.PENDING, _HOLDER),
    (S.PENDING, Event.PROMOTE): Rule(S.RESERVED, _SYSTEM),
    (S.PENDING, Event.CANCEL): Rule(S.CANCELLED, _HOLDER_OR_ADMIN),
    (S.PENDING, Event.LAPSE): Rule(S.EXPIRED, _SYSTEM),
    (S.PENDING, Event.CLOSE): Rule(S.EXPIRED, _ADMIN),
    (S.RESERVED, Event.CONFIRM): Rule(S.CONFIRMED, _HOLDER),
    (S.RESERVED, Event.EXPIRE): Rule(S.EXPIRED, _SYSTEM),
    (S.RESERVED, Event.EXTEND): Rule(S.RESERVED, _HOLDER),
    (S.RESERVED, Event.CANCEL): Rule(S.CANCELLED, _HOLDER_OR_ADMIN),
    (S.CONFIRMED, Event.CANCEL): Rule(S.CANCELLED, _HOLDER_OR_ADMIN),
    (S.CONFIRMED, Event.COMPLETE): Rule(S.COMPLETED, _ADMIN),
}
del S

FINAL_STATES = frozenset({BookingState.COMPLETED, BookingState.CANCELLED, BookingState.EXPIRED})
# States that occupy one unit of the slot's capacity.
OCCUPYING_STATES = frozenset({BookingState.RESERVED, BookingState.CONFIRMED, BookingState.COMPLETED})
# States in which a holder still has a claim on the slot (one per holder and slot).
LIVE_STATES = frozenset({BookingState.PENDING, BookingState.RESERVED, BookingState.CONFIRMED})


def transition(state: BookingState | None, event: Event, role: Role) -> BookingState:
    """Return the state that `event` leads to from `state`, or raise why it may not happen."""
    rule = TRANSITIONS.get((state, event))
    if rule is None:
        raise InvalidTransition(from_state=state, event=event.value)
    if role not in rule.roles:
        raise NotAuthorized(f"{role.value} may not {event.value} a {state or 'new'} booking")
    return rule.to_state
