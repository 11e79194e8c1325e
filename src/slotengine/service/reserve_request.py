"""A reservation request of a batch, and its answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    holder: str
    key: str
    units: int = 1  # units of the slot the booking takes, as one booking


@dataclass(frozen=True, slots=True)
class Reservation:
    """A reservation's answer: the booking as of commit, its place in the queue, whether replayed."""

    row: dict[str, Any]
    position: int | None
    replayed: bool
