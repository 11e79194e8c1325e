"""The opaque cursor of an operator's listing: which listing it belongs to, and the sequence number
(a booking's arrival, an audit row's id) of the last row a page showed.

The listing's name is part of the cursor, so a cursor of one listing handed to another is refused
rather than read as a position it never meant.
"""

from __future__ import annotations

import base64
import binascii

from slotengine.domain.errors import ValidationError

_FIELD = "after"
# PostgreSQL's bigint: a sequence number can be no larger.
_LARGEST = 2**63 - 1


def encode(listing: str, sequence: int) -> str:
    """A cursor that resumes `listing` right after the row numbered `sequence`."""
    return base64.urlsafe_b64encode(f"{listing}|{sequence}".encode()).decode()


def decode(listing: str, cursor: str) -> int:
    """The sequence number a cursor of `listing` names, or ValidationError when this engine did not
    write it for that listing."""
    refusal = ValidationError(_FIELD, f"is not a cursor {listing} gave out")
    try:
        name, number = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        sequence = int(number)
    except (ValueError, UnicodeError, binascii.Error):
        raise refusal from None
    if name != listing or not 0 <= sequence <= _LARGEST or number != str(sequence):
        raise refusal
    return sequence
