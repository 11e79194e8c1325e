"""The rules behind bounded reads and the policy gaps: pure functions, no servers."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from slotengine.domain import policy
from slotengine.domain.errors import TooManyBookings, ValidationError
from slotengine.service import slot_cursor

NOW = datetime(2031, 3, 1, 10, 0, tzinfo=UTC)


def test_a_hold_never_outlives_its_slot() -> None:
    ends = NOW + timedelta(seconds=30)
    assert policy.hold_expiry(NOW, 120, ends) == ends
    assert policy.hold_expiry(NOW, 10, ends) == NOW + timedelta(seconds=10)
    assert policy.hold_expiry(NOW, 120) == NOW + timedelta(seconds=120)


def test_a_slot_has_ended_from_its_end_instant_on() -> None:
    assert not policy.slot_has_ended(NOW, NOW - timedelta(microseconds=1))
    assert policy.slot_has_ended(NOW, NOW)


@pytest.mark.parametrize(
    ("live", "cap", "refused"), [(0, 1, False), (19, 20, False), (20, 20, True), (500, 0, False)]
)
def test_the_live_booking_cap(live: int, cap: int, refused: bool) -> None:
    if refused:
        with pytest.raises(TooManyBookings) as caught:
            policy.check_live_booking_cap(live, cap)
        assert caught.value.limit == cap
    else:
        policy.check_live_booking_cap(live, cap)


@pytest.mark.parametrize(
    ("actor", "viewer_is_admin", "shown"),
    [
        ("alice", False, "alice"),
        ("system", False, "system"),
        ("ops-carol", False, "admin"),
        ("ops-carol", True, "ops-carol"),
        ("alice", True, "alice"),
    ],
)
def test_holders_see_an_admin_as_admin(actor: str, viewer_is_admin: bool, shown: str) -> None:
    assert policy.visible_actor(actor, "alice", viewer_is_admin, "system") == shown


def test_a_cursor_round_trips() -> None:
    slot_id = uuid.uuid4()
    assert slot_cursor.decode(slot_cursor.encode(NOW, slot_id)) == (NOW, slot_id)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        base64.urlsafe_b64encode(b"2031-03-01T10:00:00|not-a-uuid").decode(),
        base64.urlsafe_b64encode(f"2031-03-01T10:00:00|{uuid.UUID(int=7)}".encode()).decode(),  # naive
        base64.urlsafe_b64encode(f"0001-01-01T00:00:00+00:00|{uuid.UUID(int=8)}".encode()).decode(),
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
        base64.urlsafe_b64encode(b"a|b|c").decode(),
        "\ud800",
    ],
)
def test_a_cursor_the_engine_did_not_write_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(ValidationError) as caught:
        slot_cursor.decode(cursor)
    assert caught.value.field == "after"


def test_readers_may_not_be_given_the_whole_pool() -> None:
    from pydantic import ValidationError as SettingsError

    from slotengine.config import Settings

    assert Settings(db_pool_size=20, read_db_connections=19).read_db_connections == 19
    with pytest.raises(SettingsError, match="SLOTENGINE_READ_DB_CONNECTIONS"):
        Settings(db_pool_size=5, read_db_connections=5)
