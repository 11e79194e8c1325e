"""Reading a slot's audit trail back as its announcements: one per version, or CursorExpired."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from slotengine.domain.errors import CursorExpired
from slotengine.domain.states import BookingState
from slotengine.service.announcements import SlotTerms
from slotengine.service.live import apply_to_slot, unapply_from_slot
from slotengine.service.replay import HoldRecord, trail_of
from slotengine.service.views import SlotView

S = BookingState
AT = datetime(2026, 12, 1, 9, tzinfo=UTC)
SLOT = str(uuid.uuid4())


def _row(
    version: int, booking: str, from_state: S | None, to_state: S, event: str, held: float | None = None
) -> dict[str, Any]:
    return {
        "slot_version": version,
        "booking_id": booking,
        "from_state": from_state,
        "to_state": to_state,
        "event": event,
        "queue_seq": {"a": 1, "b": 2, "c": 3}[booking],
        "expires_at": AT + timedelta(minutes=2),
        "held_seconds": held,
    }


ROWS = [
    _row(4, "a", None, S.RESERVED, "hold"),
    _row(5, "b", None, S.PENDING, "queue"),
    _row(5, "c", None, S.PENDING, "queue"),
    _row(6, "a", S.RESERVED, S.EXPIRED, "expire", held=120.0),
    _row(6, "b", S.PENDING, S.RESERVED, "promote"),
]


def test_rows_become_one_announcement_per_version_in_order() -> None:
    trail = trail_of(SLOT, 3, 6, ROWS)
    assert [a.version for a in trail.announcements] == [4, 5, 6]
    assert [[c.booking_id for c in a.changes] for a in trail.announcements] == [["a"], ["b", "c"], ["a", "b"]]
    hold, _, (expired, promoted) = (a.changes for a in trail.announcements)
    assert hold[0].expires_at is not None and promoted.expires_at is not None  # holds granted
    assert expired.expires_at is None and expired.from_state is S.RESERVED
    assert trail.queue_seqs == {"a": 1, "b": 2, "c": 3}
    assert trail.holds_ended == {6: [(120.0, True)]}


def test_a_version_without_audit_rows_is_a_hole_the_trail_cannot_replay() -> None:
    with pytest.raises(CursorExpired, match="no longer all kept"):
        trail_of(SLOT, 2, 6, ROWS)  # version 3 left no row (written before the trail was kept)
    with pytest.raises(CursorExpired):
        trail_of(SLOT, 3, 6, [r for r in ROWS if r["slot_version"] != 5])


def test_undoing_then_redoing_the_trail_gives_the_slot_back() -> None:
    now = SlotView(SLOT, "r", AT, AT + timedelta(hours=1), 1, 120, False, held=1, confirmed=0, queue_length=1)
    trail = trail_of(SLOT, 3, 6, ROWS)
    before = unapply_from_slot(now, trail.announcements)
    assert (before.held, before.confirmed, before.queue_length) == (0, 0, 0)
    view = before
    for announcement in trail.announcements:
        view = apply_to_slot(view, announcement)
    assert view == now


def test_the_hold_record_gives_the_estimate_once_a_hold_was_released() -> None:
    record = HoldRecord()
    assert record.seconds_per_place(1) is None
    record = record.plus(60.0, released=False).plus(30.0, released=True)
    assert (record.ended, record.released) == (2, 1)
    assert record.seconds_per_place(1) == 90.0  # mean 45 s, half of the holds give their unit back


def test_a_change_of_the_slots_terms_is_a_version_of_its_own_in_the_trail() -> None:
    closed = SlotTerms(capacity=2, hold_seconds=120, closed=True, max_extensions=1, max_hold_seconds=None)
    opened = SlotTerms(capacity=1, hold_seconds=120, closed=False, max_extensions=1, max_hold_seconds=None)
    # Version 7 closed the slot (and grew it) without a booking moving: only the terms trail has it.
    terms_rows = [{"slot_version": 7, "terms": json.dumps(closed.to_dict()), "previous": opened.to_dict()}]
    trail = trail_of(SLOT, 3, 7, ROWS, terms_rows)
    assert [a.version for a in trail.announcements] == [4, 5, 6, 7]
    assert trail.announcements[-1].changes == () and trail.announcements[-1].terms == closed
    assert trail.terms_before == opened
    with pytest.raises(CursorExpired):
        trail_of(SLOT, 3, 7, ROWS)  # without the terms row, version 7 is a hole
