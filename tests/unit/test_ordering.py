"""Announcements released in version order; a gap is held back until filled or given up."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from slotengine.service.ordering import VersionOrder


@dataclass(frozen=True)
class Note:
    version: int


def _versions(notes: list[Note]) -> list[int]:
    return [n.version for n in notes]


def test_in_order_announcements_pass_straight_through() -> None:
    order: VersionOrder[Note] = VersionOrder()
    assert [_versions(order.accept(Note(v))) for v in (4, 5, 6)] == [[4], [5], [6]]
    assert not order.waiting


def test_an_early_announcement_waits_for_the_one_before_it() -> None:
    order: VersionOrder[Note] = VersionOrder()
    order.accept(Note(1))
    assert order.accept(Note(3)) == [] and order.waiting
    assert _versions(order.accept(Note(2))) == [2, 3]
    assert not order.waiting


def test_old_and_repeated_announcements_are_dropped() -> None:
    order: VersionOrder[Note] = VersionOrder()
    order.accept(Note(7))
    assert order.accept(Note(7)) == [] and order.accept(Note(6)) == []


def test_giving_up_releases_what_was_held_in_order() -> None:
    order: VersionOrder[Note] = VersionOrder()
    order.accept(Note(1))
    order.accept(Note(4))
    order.accept(Note(3))
    assert _versions(order.give_up()) == [3, 4]
    assert _versions(order.accept(Note(5))) == [5]


@given(st.permutations(list(range(1, 30))))
def test_any_arrival_order_after_the_first_is_released_exactly_in_order(arrival: list[int]) -> None:
    order: VersionOrder[Note] = VersionOrder()
    released = _versions(order.accept(Note(0)))
    for version in arrival:
        released += _versions(order.accept(Note(version)))
    assert released == list(range(30)) and not order.waiting
