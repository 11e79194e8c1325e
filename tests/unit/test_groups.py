"""Booking groups' rules: lock order, admission all or nothing, one expiry, FIFO around groups."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slotengine.domain import groups, policy
from slotengine.domain.errors import SlotClosed, SlotUnavailable, TooManyBookings, ValidationError
from slotengine.domain.states import BookingState, InvalidTransition
from slotengine.service import state_sql

NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def standing(**overrides: object) -> groups.SlotStanding:
    base = groups.SlotStanding(
        slot_id=str(uuid.uuid4()),
        closed=False,
        starts_at=NOW + timedelta(days=1),
        ends_at=NOW + timedelta(days=1, minutes=30),
        capacity=1,
        hold_seconds=120,
        occupied=0,
        waiting=0,
        holder_has_live_booking=False,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@given(st.lists(st.uuids(), min_size=1, max_size=groups.MAX_GROUP_SLOTS, unique=True), st.randoms())
def test_every_listing_of_the_same_slots_locks_them_in_one_order(ids: list[uuid.UUID], rng: object) -> None:
    shuffled = list(ids)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert groups.validate_group_slots(shuffled) == groups.validate_group_slots(ids) == sorted(ids)
    # PostgreSQL orders uuids by their bytes: so does the lock order.
    assert [u.bytes for u in groups.lock_order(shuffled)] == sorted(u.bytes for u in ids)


def test_a_group_names_one_to_twenty_distinct_slots() -> None:
    one = uuid.uuid4()
    for bad in ([], [one, one], [uuid.uuid4() for _ in range(groups.MAX_GROUP_SLOTS + 1)]):
        with pytest.raises(ValidationError) as refused:
            groups.validate_group_slots(bad)
        assert refused.value.field == "slotIds"


def test_a_group_holds_only_when_every_slot_has_a_free_unit_and_nobody_waiting() -> None:
    free = [standing(), standing(capacity=3, occupied=2)]
    assert groups.admit_group(free, NOW, wait=False) is policy.Admission.HOLD

    full = standing(occupied=1)
    with pytest.raises(SlotUnavailable) as refused:
        groups.admit_group([*free, full], NOW, wait=False)
    assert refused.value.slot_id == full.slot_id and "taken" in refused.value.message

    queued = standing(capacity=2, occupied=1, waiting=1)  # a unit is free, but someone waits
    with pytest.raises(SlotUnavailable) as refused:
        groups.admit_group([queued, *free], NOW, wait=False)
    assert refused.value.slot_id == queued.slot_id and "waiting" in refused.value.message


def test_with_wait_a_group_that_cannot_hold_every_slot_queues_for_all() -> None:
    assert groups.admit_group([standing(), standing(occupied=1)], NOW, wait=True) is policy.Admission.QUEUE
    assert groups.admit_group([standing(), standing()], NOW, wait=True) is policy.Admission.HOLD


def test_closed_started_and_already_claimed_slots_refuse_even_a_waiting_group() -> None:
    closed = standing(closed=True)
    with pytest.raises(SlotClosed) as refused:
        groups.admit_group([standing(occupied=1), closed], NOW, wait=True)
    assert refused.value.slot_id == closed.slot_id
    started = standing(starts_at=NOW)
    with pytest.raises(SlotClosed):
        groups.admit_group([started], NOW, wait=True)
    mine = standing(holder_has_live_booking=True)
    with pytest.raises(SlotUnavailable) as unavailable:
        groups.admit_group([standing(), mine], NOW, wait=True)
    assert unavailable.value.slot_id == mine.slot_id


def test_the_group_has_one_expiry_the_earliest_any_slot_allows() -> None:
    short = standing(hold_seconds=60)
    ending = standing(hold_seconds=600, ends_at=NOW + timedelta(seconds=30))
    assert groups.group_expiry(NOW, [standing(), short]) == NOW + timedelta(seconds=60)
    assert groups.group_expiry(NOW, [standing(), short, ending]) == NOW + timedelta(seconds=30)


def test_a_held_group_reads_expired_at_its_expiry_worker_or_not() -> None:
    at = NOW + timedelta(seconds=5)
    assert groups.group_state(BookingState.RESERVED, at, NOW) is BookingState.RESERVED
    assert groups.group_state(BookingState.RESERVED, at, at) is BookingState.EXPIRED
    assert groups.group_state(BookingState.CONFIRMED, at, at) is BookingState.CONFIRMED


def test_held_and_waiting_members_move_only_with_their_group() -> None:
    assert not groups.member_moves_alone(BookingState.RESERVED)
    assert not groups.member_moves_alone(BookingState.PENDING)
    assert groups.member_moves_alone(BookingState.CONFIRMED)
    refusal = groups.GroupMember(BookingState.RESERVED, "confirm", "b1", "g1")
    assert isinstance(refusal, InvalidTransition) and "g1" in refusal.message


def test_the_live_bookings_cap_counts_every_slot_of_the_group() -> None:
    groups.check_group_cap(live_elsewhere=15, slots=5, cap=20)
    groups.check_group_cap(live_elsewhere=100, slots=5, cap=0)
    with pytest.raises(TooManyBookings):
        groups.check_group_cap(live_elsewhere=16, slots=5, cap=20)


def test_a_waiting_group_is_offered_only_at_the_head_of_every_queue_with_a_unit_free() -> None:
    assert groups.group_can_be_offered([True, True], [1, 2])
    assert not groups.group_can_be_offered([True, False], [1, 1])
    assert not groups.group_can_be_offered([True, True], [1, 0])


@given(st.lists(st.one_of(st.none(), st.sampled_from(["g1", "g2"])), max_size=10))
def test_nobody_passes_a_waiting_groups_entry(groups_of_heads: list[str | None]) -> None:
    heads = [(f"b{i}", group) for i, group in enumerate(groups_of_heads)]
    singles, group = policy.heads_before_group(heads)
    first_group = next((i for i, (_, g) in enumerate(heads) if g is not None), len(heads))
    assert singles == [b for b, _ in heads[:first_group]]
    assert group == (heads[first_group][1] if first_group < len(heads) else None)


def test_the_group_tables_state_check_allows_every_state_and_its_hold_index_names_the_held_one() -> None:
    sql = (resources.files("slotengine.store") / "migrations" / "0010_booking_groups.sql").read_text()
    check = re.search(r"state\s+text\s+NOT NULL\s+CHECK \(state IN \(([^)]*)\)\)", sql)
    assert check is not None
    assert {name.strip(" '\n") for name in check.group(1).split(",")} == {s.value for s in BookingState}
    assert f"WHERE state = {state_sql.RESERVED}" in sql
