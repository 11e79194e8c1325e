"""The transition table, checked for every (state, event, role) there is."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slotengine.domain.errors import NotAuthorized
from slotengine.domain.states import (
    FINAL_STATES,
    BookingState,
    Event,
    InvalidTransition,
    Role,
    transition,
)

S, E, R = BookingState, Event, Role

# The README's state machine, written out independently of the implementation's table.
ALLOWED: dict[tuple[BookingState | None, Event], tuple[BookingState, set[Role]]] = {
    (None, E.HOLD): (S.RESERVED, {R.HOLDER}),
    (None, E.QUEUE): (S.PENDING, {R.HOLDER}),
    (S.PENDING, E.PROMOTE): (S.RESERVED, {R.SYSTEM}),
    (S.PENDING, E.CANCEL): (S.CANCELLED, {R.HOLDER, R.ADMIN}),
    (S.PENDING, E.LAPSE): (S.EXPIRED, {R.SYSTEM}),
    (S.PENDING, E.CLOSE): (S.EXPIRED, {R.ADMIN}),
    (S.RESERVED, E.CONFIRM): (S.CONFIRMED, {R.HOLDER}),
    (S.RESERVED, E.EXPIRE): (S.EXPIRED, {R.SYSTEM}),
    (S.RESERVED, E.EXTEND): (S.RESERVED, {R.HOLDER}),
    (S.RESERVED, E.CANCEL): (S.CANCELLED, {R.HOLDER, R.ADMIN}),
    (S.CONFIRMED, E.CANCEL): (S.CANCELLED, {R.HOLDER, R.ADMIN}),
    (S.CONFIRMED, E.COMPLETE): (S.COMPLETED, {R.ADMIN}),
}

EVERY_CASE = list(itertools.product([None, *BookingState], Event, Role))


@pytest.mark.parametrize(("state", "event", "role"), EVERY_CASE)
def test_every_state_event_and_role_is_allowed_or_refused_as_designed(
    state: BookingState | None, event: Event, role: Role
) -> None:
    expected = ALLOWED.get((state, event))
    if expected is None:
        with pytest.raises(InvalidTransition) as refused:
            transition(state, event, role)
        assert refused.value.from_state == state
        assert refused.value.event == event.value
    elif role not in expected[1]:
        with pytest.raises(NotAuthorized):
            transition(state, event, role)
    else:
        assert transition(state, event, role) == expected[0]


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_final_states_have_no_way_out(state: BookingState) -> None:
    for event, role in itertools.product(Event, Role):
        with pytest.raises(InvalidTransition):
            transition(state, event, role)


def test_invalid_transition_names_the_state_and_event() -> None:
    with pytest.raises(InvalidTransition) as refused:
        transition(S.CONFIRMED, E.CONFIRM, R.HOLDER)
    assert "CONFIRMED" in refused.value.message and "confirm" in refused.value.message


@given(st.lists(st.tuples(st.sampled_from(Event), st.sampled_from(Role)), max_size=30))
def test_any_walk_through_the_table_stays_inside_it(steps: list[tuple[Event, Role]]) -> None:
    state: BookingState | None = None
    for event, role in steps:
        try:
            nxt = transition(state, event, role)
        except (InvalidTransition, NotAuthorized):
            continue
        assert (state, event) in ALLOWED
        if state in FINAL_STATES:
            pytest.fail(f"left final state {state}")
        state = nxt


def test_only_the_holder_extends_and_only_a_hold() -> None:
    assert transition(S.RESERVED, E.EXTEND, R.HOLDER) is S.RESERVED
    with pytest.raises(NotAuthorized):
        transition(S.RESERVED, E.EXTEND, R.ADMIN)
    for state in (S.PENDING, S.CONFIRMED):
        with pytest.raises(InvalidTransition) as refused:
            transition(state, E.EXTEND, R.HOLDER)
        assert refused.value.event == "extend"


def test_closing_a_slot_expires_its_waiters_by_an_admins_hand() -> None:
    assert transition(S.PENDING, E.CLOSE, R.ADMIN) is S.EXPIRED
    for role in (R.HOLDER, R.SYSTEM):
        with pytest.raises(NotAuthorized):
            transition(S.PENDING, E.CLOSE, role)
    with pytest.raises(InvalidTransition):
        transition(S.RESERVED, E.CLOSE, R.ADMIN)  # holds outlive the closing: they may be confirmed
