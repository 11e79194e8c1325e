"""The one parser for ids the API receives: any spelling UUID accepts, one canonical form out."""

from __future__ import annotations

from uuid import UUID

from slotengine.domain.errors import ValidationError


def parse_id(field: str, raw: str) -> UUID:
    """The UUID `raw` spells (any of Python's spellings), or ValidationError naming `field`."""
    try:
        return UUID(raw)
    except (ValueError, TypeError):
        raise ValidationError(field, f"{raw[:64]!r} is not a valid id") from None
