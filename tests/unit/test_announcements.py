"""A slot's announcement survives its trip through Redis, with the slot's terms when an admin
changed them, and listeners apply those terms to the slot they show."""

from __future__ import annotations

from datetime import UTC, datetime

from slotengine.domain.states import BookingState, Event
from slotengine.service.announcements import Change, SlotAnnouncement, SlotTerms
from slotengine.service.live import apply_to_slot
from slotengine.service.views import SlotView

NOW = datetime(2030, 1, 7, 10, 30, tzinfo=UTC)
S = BookingState


def test_an_announcement_reads_back_as_written_with_or_without_terms() -> None:
    changes = (
        Change("b1", S.RESERVED, S.RESERVED, Event.EXTEND, None, NOW),
        Change("b2", S.PENDING, S.EXPIRED, Event.CLOSE, 1),
    )
    plain = SlotAnnouncement("s", 7, changes)
    assert SlotAnnouncement.parse(plain.to_json()) == plain
    assert "terms" not in plain.to_json()  # the hot path's messages stay as they were
    closed = SlotAnnouncement("s", 8, changes, SlotTerms(3, 60, True, 2, None))
    assert SlotAnnouncement.parse(closed.to_json()) == closed


def test_listeners_take_the_slots_new_terms_and_counts_from_one_announcement() -> None:
    view = SlotView("s", "dr-lee", NOW, NOW, 1, 120, False, held=1, confirmed=0, queue_length=2)
    grown = SlotAnnouncement(
        "s",
        2,
        (Change("w1", S.PENDING, S.RESERVED, Event.PROMOTE, 1, NOW),),
        SlotTerms(capacity=2, hold_seconds=60, closed=True, max_extensions=3, max_hold_seconds=600),
    )
    after = apply_to_slot(view, grown)
    assert (after.capacity, after.hold_seconds, after.closed) == (2, 60, True)
    assert (after.max_extensions, after.max_hold_seconds) == (3, 600)
    assert (after.held, after.queue_length, after.available) == (2, 1, 0)
    extended = SlotAnnouncement("s", 3, (Change("w1", S.RESERVED, S.RESERVED, Event.EXTEND, None, NOW),))
    assert apply_to_slot(after, extended) == after  # an extension moves no count
