"""SQL fragments naming booking states, derived from the domain's sets (never typed by hand)."""

from __future__ import annotations

from collections.abc import Iterable

from slotengine.domain.states import FINAL_STATES, LIVE_STATES, OCCUPYING_STATES, BookingState


def state_literal(state: BookingState) -> str:
    """`'A'`: a literal, not a parameter, so the planner can use the partial indexes on states."""
    return f"'{state.value}'"


def state_list(states: Iterable[BookingState]) -> str:
    """`('A', 'B')` for `state IN ...`, in a stable order."""
    return "(" + ", ".join(f"'{state.value}'" for state in sorted(states)) + ")"


LIVE_SQL = state_list(LIVE_STATES)
OCCUPYING_SQL = state_list(OCCUPYING_STATES)
FINAL_SQL = state_list(FINAL_STATES)
# Occupying states other than a hold: counted together as "confirmed".
SETTLED_SQL = state_list(OCCUPYING_STATES - {BookingState.RESERVED})
# Everything the Redis mirror holds: the queue, the holds and the settled units.
MIRRORED_SQL = state_list(LIVE_STATES | OCCUPYING_STATES)
# Holds and waits: what a holder has claimed and not yet settled (a confirmed booking is settled).
CLAIMING_STATES = frozenset({BookingState.PENDING, BookingState.RESERVED})
CLAIMING_SQL = state_list(CLAIMING_STATES)
PENDING = state_literal(BookingState.PENDING)
RESERVED = state_literal(BookingState.RESERVED)
CONFIRMED = state_literal(BookingState.CONFIRMED)
