"""The opaque cursor of a slot listing: the (startsAt, id) of the last slot a page looked at."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from uuid import UUID

from slotengine.domain.errors import ValidationError
from slotengine.domain.policy import validate_instant

_FIELD = "after"


def encode(starts_at: datetime, slot_id: UUID) -> str:
    """A cursor that resumes a listing right after this slot."""
    return base64.urlsafe_b64encode(f"{starts_at.isoformat()}|{slot_id}".encode()).decode()


def decode(cursor: str) -> tuple[datetime, UUID]:
    """The (startsAt, id) a cursor names, or ValidationError when this engine did not write it."""
    try:
        starts_at, slot_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        position = datetime.fromisoformat(starts_at), UUID(slot_id)
    except (ValueError, UnicodeError, binascii.Error):
        raise ValidationError(_FIELD, "is not a cursor a slot listing gave out") from None
    if position[0].utcoffset() is None:
        raise ValidationError(_FIELD, "is not a cursor a slot listing gave out")
    validate_instant(_FIELD, position[0])
    return position
