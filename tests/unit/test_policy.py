"""Hold and queue policy: admission, units, expiry and slot validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slotengine.domain import policy
from slotengine.domain.errors import ExtensionLimitReached, ValidationError

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


# --- extending a hold ---------------------------------------------------------------------------


def hold(**overrides: object) -> policy.HoldExtension:
    """A hold granted at NOW for 120 s on a slot ending in an hour, extensible once to 360 s."""
    values: dict[str, object] = {
        "now": NOW + timedelta(seconds=100),
        "expires_at": NOW + timedelta(seconds=120),
        "held_since": NOW,
        "extensions_used": 0,
        "max_extensions": 1,
        "max_hold_seconds": 360,
        "slot_ends_at": NOW + timedelta(hours=1),
        "slot_closed": False,
    }
    values.update(overrides)
    return policy.HoldExtension(**values)  # type: ignore[arg-type]


def test_an_extension_gives_the_hold_its_seconds_from_now() -> None:
    assert policy.extended_expiry(hold(), 120) == NOW + timedelta(seconds=220)


def test_an_extension_is_cut_to_the_slots_cap_on_the_whole_hold() -> None:
    assert policy.extended_expiry(hold(), 3600) == NOW + timedelta(seconds=360)


def test_an_extension_is_cut_to_the_slots_end() -> None:
    ends = NOW + timedelta(seconds=200)
    assert policy.extended_expiry(hold(slot_ends_at=ends), 3600) == ends


def test_extensions_beyond_the_slots_count_are_refused_naming_the_limits() -> None:
    with pytest.raises(ExtensionLimitReached) as refused:
        policy.extended_expiry(hold(extensions_used=1), 60)
    assert (refused.value.max_extensions, refused.value.max_hold_seconds) == (1, 360)
    assert "extended 1 time" in refused.value.message


def test_a_hold_at_its_cap_cannot_be_extended() -> None:
    at_cap = hold(max_extensions=5, extensions_used=1, expires_at=NOW + timedelta(seconds=360))
    with pytest.raises(ExtensionLimitReached) as refused:
        policy.extended_expiry(at_cap, 600)
    assert "360 s" in refused.value.message
    at_end = hold(expires_at=NOW + timedelta(seconds=150), slot_ends_at=NOW + timedelta(seconds=150))
    with pytest.raises(ExtensionLimitReached) as refused:
        policy.extended_expiry(at_end, 600)
    assert "slot ends" in refused.value.message


def test_holds_on_a_closed_slot_are_not_extended() -> None:
    with pytest.raises(ExtensionLimitReached) as refused:
        policy.extended_expiry(hold(slot_closed=True), 60)
    assert "closed" in refused.value.message


@pytest.mark.parametrize("seconds", [0, -5, policy.MAX_HOLD_SECONDS + 1, 20])
def test_an_extension_must_ask_for_more_than_the_hold_has_left(seconds: int) -> None:
    # 20 s from now is before the hold's expiry (20 s left): it would not extend anything.
    with pytest.raises(ValidationError) as refused:
        policy.extended_expiry(hold(), seconds)
    assert refused.value.field == "seconds"


@given(
    used=st.integers(0, 3),
    allowed=st.integers(0, 3),
    held_for=st.integers(0, 500),
    left=st.integers(1, 500),
    seconds=st.integers(1, 2000),
    cap=st.integers(1, 1500),
    ends_in=st.integers(1, 3000),
)
def test_an_extended_hold_never_passes_its_cap_nor_its_slots_end_and_always_grows(
    used: int, allowed: int, held_for: int, left: int, seconds: int, cap: int, ends_in: int
) -> None:
    now = NOW + timedelta(seconds=held_for)
    current = hold(
        now=now,
        expires_at=now + timedelta(seconds=left),
        extensions_used=used,
        max_extensions=allowed,
        max_hold_seconds=cap,
        slot_ends_at=now + timedelta(seconds=ends_in),
    )
    try:
        expiry = policy.extended_expiry(current, seconds)
    except (ExtensionLimitReached, ValidationError):
        return
    assert used < allowed
    assert current.expires_at < expiry <= now + timedelta(seconds=seconds)
    assert expiry <= NOW + timedelta(seconds=cap) and expiry <= current.slot_ends_at


def test_the_hold_cap_defaults_to_three_hold_times() -> None:
    assert policy.hold_cap_seconds(120, None) == 360
    assert policy.hold_cap_seconds(120, 200) == 200


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ((120, -1, None), "maxExtensions"),
        ((120, 101, None), "maxExtensions"),
        ((120, 1, 119), "maxHoldSeconds"),
    ],
)
def test_extension_limits_are_validated(terms: tuple[int, int, int | None], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        policy.validate_extension_terms(*terms)
    assert refused.value.field == field
    with pytest.raises(ValidationError):
        policy.validate_slot(spec(hold_seconds=terms[0], max_extensions=terms[1], max_hold_seconds=terms[2]))


# --- resizing a slot ----------------------------------------------------------------------------


def test_capacity_cannot_go_below_the_units_in_use_and_the_refusal_names_the_count() -> None:
    policy.check_capacity(3, 3)
    with pytest.raises(ValidationError) as refused:
        policy.check_capacity(2, 3)
    assert refused.value.field == "capacity" and "3 units" in refused.value.message
    with pytest.raises(ValidationError):
        policy.check_capacity(0, 0)


@given(capacity=st.integers(1, 12), taken=st.sets(st.integers(1, 20), max_size=12))
def test_shrinking_moves_units_above_the_capacity_onto_free_ones_below(
    capacity: int, taken: set[int]
) -> None:
    if len(taken) > capacity:
        return
    moves = dict(policy.renumbering(capacity, taken))
    after = {moves.get(unit, unit) for unit in taken}
    assert len(after) == len(taken) and all(1 <= unit <= capacity for unit in after)
    assert all(source > capacity for source in moves)


# --- waiting ------------------------------------------------------------------------------------


def test_waiters_estimates_wait_for_the_earliest_hold_to_end() -> None:
    assert policy.estimated_wait_seconds(1, None, 30.0) is None  # no record: no estimate
    assert policy.estimated_wait_seconds(2, 10.0, None) == 20.0
    # Every unit is held for 300 s more (an extended hold): nobody moves before then.
    assert policy.estimated_wait_seconds(1, 10.0, 300.0) == 300.0
    assert policy.estimated_wait_seconds(3, 10.0, 300.0) == 320.0
    assert policy.estimated_wait_seconds(3, 200.0, 5.0) == 600.0
