"""The fill policies: who among the waiting is offered the free units, in queue order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slotengine.domain import fill_policy
from slotengine.domain.errors import ValidationError
from slotengine.domain.fill_policy import FillPolicy, Offers, Waiter, offers, queue_window

STRICT, FIRST = FillPolicy.STRICT_FIFO, FillPolicy.FIRST_FIT


def _queue(*units: int, passed: dict[int, int] | None = None) -> list[Waiter[int]]:
    return [Waiter(i, u, (passed or {}).get(i, 0)) for i, u in enumerate(units)]


def _keys(result: Offers[int]) -> list[int]:
    return [w.key for w in result.offered]


def test_strict_fifo_head_that_does_not_fit_blocks_everyone_behind_it() -> None:
    result = offers(STRICT, 2, _queue(3, 1, 1), max_pass_overs=3)
    assert _keys(result) == [] and result.passed == {} and result.units_left == 2


def test_strict_fifo_serves_heads_in_order_while_they_fit() -> None:
    assert _keys(offers(STRICT, 4, _queue(1, 2, 2, 1), max_pass_overs=3)) == [0, 1]


def test_first_fit_lets_a_smaller_entry_take_units_the_head_cannot_use() -> None:
    result = offers(FIRST, 2, _queue(3, 1, 2, 1), max_pass_overs=3)
    assert _keys(result) == [1, 3]  # entry 2 (two units) no longer fits after entry 1 took one
    assert result.passed == {0: 2, 2: 1} and result.units_left == 0


def test_first_fit_head_passed_over_its_bound_blocks_everyone_behind_it() -> None:
    assert _keys(offers(FIRST, 2, _queue(3, 1, 1, passed={0: 3}), max_pass_overs=3)) == []


def test_first_fit_stops_passing_once_the_head_reaches_its_bound() -> None:
    result = offers(FIRST, 3, _queue(4, 1, 1, 1, passed={0: 1}), max_pass_overs=3)
    assert _keys(result) == [1, 2] and result.passed == {0: 2}


def test_first_fit_with_a_bound_of_zero_is_strict_fifo() -> None:
    assert _keys(offers(FIRST, 2, _queue(3, 1), max_pass_overs=0)) == []


def test_the_window_is_the_free_units_under_strict_fifo_and_more_under_first_fit() -> None:
    assert queue_window(STRICT, 3) == 3
    assert queue_window(FIRST, 3) == 3 + fill_policy.LOOKAHEAD


@pytest.mark.parametrize(("units", "capacity"), [(0, None), (-1, 5), (6, 5)])
def test_units_below_one_or_above_the_capacity_are_a_validation_error(
    units: int, capacity: int | None
) -> None:
    with pytest.raises(ValidationError) as refused:
        fill_policy.validate_units(units, capacity)
    assert refused.value.field == "units"


def test_a_pass_over_bound_out_of_range_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        fill_policy.validate_max_pass_overs(-1)
    with pytest.raises(ValidationError):
        fill_policy.validate_max_pass_overs(fill_policy.MAX_PASS_OVERS + 1)


waiters = st.lists(st.tuples(st.integers(1, 5), st.integers(0, 4)), max_size=12)


@given(st.sampled_from(list(FillPolicy)), st.integers(0, 10), waiters, st.integers(0, 4))
def test_offers_follow_the_policy_whatever_the_queue(
    policy: FillPolicy, free: int, drawn: list[tuple[int, int]], bound: int
) -> None:
    queue = [Waiter(i, units, passed) for i, (units, passed) in enumerate(drawn)]
    result = offers(policy, free, queue, bound)
    keys = _keys(result)
    # Whole entries only, never more units than are free, in queue order, each offered once.
    assert sum(w.units for w in result.offered) == free - result.units_left <= free
    assert keys == sorted(set(keys))
    first_left_out = next((w for w in queue if w.key not in keys), None)
    if policy is STRICT or first_left_out is None:
        # Under STRICT_FIFO the offered are exactly a prefix of the queue.
        if policy is STRICT:
            assert keys == list(range(len(keys)))
            assert result.passed == {}
        return
    # FIRST_FIT: a passed entry is one left out ahead of someone offered, counted once per offer
    # behind it, and no entry ever ends up passed over more than the bound.
    for w in queue:
        behind = [k for k in keys if k > w.key]
        assert result.passed.get(w.key, 0) == (len(behind) if w.key not in keys else 0)
        if w.key in result.passed:
            assert w.passed_over + result.passed[w.key] <= bound
    # Nobody left out fits in what is left, unless passing it would break someone's bound or the
    # walk stopped at an entry at its bound.
    if result.units_left > 0:
        for w in queue:
            if w.key in keys or w.units > result.units_left:
                continue
            ahead = [s for s in queue if s.key < w.key and s.key not in keys]
            assert any(s.passed_over + result.passed.get(s.key, 0) >= bound for s in ahead)


@given(st.integers(1, 10), waiters)
def test_strict_fifo_and_first_fit_agree_when_every_entry_fits(
    free: int, drawn: list[tuple[int, int]]
) -> None:
    queue = [Waiter(i, 1, passed) for i, (_, passed) in enumerate(drawn)]
    assert _keys(offers(STRICT, free, queue, 3)) == _keys(offers(FIRST, free, queue, 3))
