"""The cursor a subscription message carries: its slot and the slot version it shows.

Every committed change to a slot's bookings bumps the slot's version once, so (slot, version)
names one point in the slot's history. The cursor is opaque to clients (base64url, no padding)
and stable: the same point always gives the same cursor.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from uuid import UUID

from slotengine.domain.errors import CursorExpired

# Far above any cursor this module writes (about 50 characters): longer input is not read at all.
_LONGEST = 100
_BODY = re.compile(r"([0-9a-f]{32}):(0|[1-9][0-9]{0,18})")
_MAX_VERSION = 2**63 - 1  # a bigint


# Every listener of a slot stamps each change with the same cursor: made once, not per listener.
@functools.lru_cache(maxsize=4096)
def encode(slot_id: UUID, version: int) -> str:
    """The cursor of `slot_id` at `version`."""
    return base64.urlsafe_b64encode(f"{slot_id.hex}:{version}".encode()).rstrip(b"=").decode()


def decode(cursor: str, slot_id: UUID) -> int:
    """The version a cursor of `slot_id` names; CursorExpired when it is no cursor of this slot."""
    if len(cursor) > _LONGEST:
        raise CursorExpired("it is not a cursor this engine gave out")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeError, binascii.Error):
        raise CursorExpired("it is not a cursor this engine gave out") from None
    body = _BODY.fullmatch(raw)
    if body is None or int(body[2]) > _MAX_VERSION or encode(UUID(body[1]), int(body[2])) != cursor:
        raise CursorExpired("it is not a cursor this engine gave out")
    if UUID(body[1]) != slot_id:
        raise CursorExpired("it is a cursor of another slot")
    return int(body[2])


def check_window(after: int, current: int, window: int) -> None:
    """Refuse to resume from `after` when the slot is at `current` and keeps `window` versions."""
    if after > current:
        raise CursorExpired("it is ahead of the slot's history")
    if current - after > window:
        raise CursorExpired(f"it is more than {window} changes behind; older ones are not replayed")
