"""Hold and queue policy: admission, units, expiry and slot validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slotengine.domain import policy
from slotengine.domain.errors import ValidationError

NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def spec(**overrides: object) -> policy.SlotSpec:
    values: dict[str, object] = {
        "resource": "dr-lee",
        "starts_at": NOW,
        "ends_at": NOW + timedelta(minutes=30),
        "capacity": 1,
        "hold_seconds": 120,
    }
    values.update(overrides)
    return policy.SlotSpec(**values)  # type: ignore[arg-type]


@given(capacity=st.integers(1, 50), occupied=st.integers(0, 50), waiting=st.integers(0, 50))
def test_a_newcomer_holds_only_when_a_unit_is_free_and_nobody_waits(
    capacity: int, occupied: int, waiting: int
) -> None:
    admission = policy.admit(capacity, occupied, waiting)
    if occupied < capacity and waiting == 0:
        assert admission is policy.Admission.HOLD
    else:
        assert admission is policy.Admission.QUEUE


@given(capacity=st.integers(1, 40), data=st.data())
def test_free_units_are_exactly_the_untaken_ones_lowest_first(capacity: int, data: st.DataObject) -> None:
    taken = data.draw(st.sets(st.integers(1, capacity)))
    free = policy.free_units(capacity, taken)
    assert free == sorted(set(range(1, capacity + 1)) - taken)


@given(st.lists(st.integers(1, 9), max_size=9, unique=True), st.lists(st.text(), max_size=12))
def test_promotions_pair_queue_heads_in_order_with_free_units(free: list[int], heads: list[str]) -> None:
    pairs = policy.promotions(sorted(free), heads)
    assert len(pairs) == min(len(free), len(heads))
    assert [h for h, _ in pairs] == heads[: len(pairs)]


def test_a_hold_lasts_its_hold_seconds() -> None:
    assert policy.hold_expiry(NOW, 120) == NOW + timedelta(seconds=120)


def test_the_queue_lapses_when_the_slot_starts() -> None:
    assert not policy.queue_has_lapsed(NOW, NOW - timedelta(microseconds=1))
    assert policy.queue_has_lapsed(NOW, NOW)


def test_closed_or_started_slots_refuse_reservations() -> None:
    assert policy.accepts_reservations(False, NOW, NOW - timedelta(seconds=1)) is None
    assert policy.accepts_reservations(True, NOW, NOW - timedelta(seconds=1)) == "it is closed"
    assert policy.accepts_reservations(False, NOW, NOW) == "it has already started"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"resource": " "}, "resource"),
        ({"resource": "x" * 201}, "resource"),
        ({"ends_at": NOW}, "endsAt"),
        ({"ends_at": NOW - timedelta(minutes=1)}, "endsAt"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": -3}, "capacity"),
        ({"hold_seconds": 0}, "holdSeconds"),
        ({"hold_seconds": 86_401}, "holdSeconds"),
        ({"starts_at": datetime(2030, 1, 1, 9, 0)}, "startsAt"),
        ({"ends_at": datetime(2030, 1, 1, 9, 30)}, "endsAt"),
        # Found by fuzzing: PostgreSQL keeps datetime.min/max as -infinity/infinity and hands them
        # back naive; an offset can push the year out of datetime's range.
        ({"starts_at": datetime.min.replace(tzinfo=UTC)}, "startsAt"),
        ({"ends_at": datetime.max.replace(tzinfo=UTC)}, "endsAt"),
        ({"starts_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))}, "startsAt"),
        ({"resource": "dr-lee\x00"}, "resource"),
        ({"resource": "dr-\ud800"}, "resource"),
    ],
)
def test_slot_validation_names_the_bad_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        policy.validate_slot(spec(**overrides))
    assert refused.value.field == field


def test_a_well_formed_slot_passes() -> None:
    policy.validate_slot(spec(capacity=3, hold_seconds=86_400))


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        (("room\x00", None, None), "resource"),
        ((None, datetime(2030, 1, 1), None), "startsAfter"),
        ((None, None, datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))), "startsBefore"),
    ],
)
def test_slot_filters_the_store_cannot_compare_are_refused(
    filters: tuple[str | None, datetime | None, datetime | None], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        policy.validate_slot_filter(*filters)
    assert refused.value.field == field


def test_reasons_must_be_storable() -> None:
    policy.validate_reason(None)
    policy.validate_reason("plans changed \u00e9\U0001f600")
    for reason in ("\x00", "a\ud800"):
        with pytest.raises(ValidationError):
            policy.validate_reason(reason)


@pytest.mark.parametrize("key", ["", "k" * 201, "k\x00", "\udfff"])
def test_idempotency_keys_must_be_1_to_200_storable_characters(key: str) -> None:
    with pytest.raises(ValidationError):
        policy.validate_idempotency_key(key)


def test_seconds_per_place_follows_hold_length_release_share_and_capacity() -> None:
    # Holds last 60 s; half give the unit back; 2 units turn over: a place frees every 60 s.
    assert policy.seconds_per_place(60.0, 10, 5, 2) == 60.0
    assert policy.seconds_per_place(30.0, 4, 4, 1) == 30.0
    assert policy.seconds_per_place(30.0, 4, 1, 1) == 120.0


@pytest.mark.parametrize(("ended", "released"), [(0, 0), (5, 0)])
def test_a_queue_never_seen_to_move_has_no_estimate(ended: int, released: int) -> None:
    assert policy.seconds_per_place(30.0, ended, released, 1) is None
