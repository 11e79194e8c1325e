"""Subscription cursors: opaque, stable, of one slot; anything else is CursorExpired, never a crash."""

from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slotengine.domain.errors import CursorExpired
from slotengine.service import stream_cursor

SLOT = uuid.UUID("8f0c2a4e-2b1d-4c59-9a3e-0d6f1b7c5e21")


def test_a_cursor_names_its_slot_and_version_and_is_the_same_each_time() -> None:
    cursor = stream_cursor.encode(SLOT, 1234)
    assert cursor == stream_cursor.encode(SLOT, 1234)
    assert stream_cursor.decode(cursor, SLOT) == 1234
    assert str(SLOT) not in cursor and "1234" not in cursor  # opaque
    assert stream_cursor.decode(stream_cursor.encode(SLOT, 0), SLOT) == 0


def test_a_cursor_of_another_slot_is_expired() -> None:
    with pytest.raises(CursorExpired, match="another slot"):
        stream_cursor.decode(stream_cursor.encode(uuid.uuid4(), 7), SLOT)


def _forged(body: str) -> str:
    return base64.urlsafe_b64encode(body.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "====",
        "\x00\ud800",
        "é" * 10,
        "A" * 10_000,
        _forged(f"{SLOT.hex}:-1"),
        _forged(f"{SLOT.hex}:01"),
        _forged(f"{SLOT.hex}:{2**63}"),
        _forged(f"{SLOT.hex}:1:2"),
        _forged(f"{SLOT}:1"),  # the hyphenated spelling is not what the engine writes
        _forged(f"{SLOT.hex.upper()}:1"),
        stream_cursor.encode(SLOT, 5) + "=",  # padded: another spelling of a real cursor
    ],
)
def test_anything_the_engine_did_not_write_is_expired(cursor: str) -> None:
    with pytest.raises(CursorExpired, match="not a cursor this engine gave out"):
        stream_cursor.decode(cursor, SLOT)


@given(st.text(max_size=120))
def test_no_text_makes_decoding_fail_otherwise(cursor: str) -> None:
    try:
        version = stream_cursor.decode(cursor, SLOT)
    except CursorExpired:
        return
    assert stream_cursor.encode(SLOT, version) == cursor  # only the engine's own spelling is read


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_every_version_round_trips(version: int) -> None:
    assert stream_cursor.decode(stream_cursor.encode(SLOT, version), SLOT) == version


def test_the_window_refuses_cursors_too_old_or_ahead_of_the_slot() -> None:
    stream_cursor.check_window(90, 100, 10)
    stream_cursor.check_window(100, 100, 0)
    with pytest.raises(CursorExpired, match="more than 10 changes behind"):
        stream_cursor.check_window(89, 100, 10)
    with pytest.raises(CursorExpired, match="ahead of the slot's history"):
        stream_cursor.check_window(101, 100, 10)
