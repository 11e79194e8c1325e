"""Fill policies: which waiting entries are offered the units that are free, in queue order.

STRICT_FIFO: the head of the queue blocks everyone behind it until enough units are free.
FIRST_FIT: an entry behind may take units the entries ahead of it cannot use, but an entry is
passed over at most `max_pass_overs` times; from then on it blocks everyone behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from slotengine.domain.errors import ValidationError

T = TypeVar("T")

DEFAULT_MAX_PASS_OVERS = 3
MAX_PASS_OVERS = 1000
# FIRST_FIT looks this many entries beyond the free units into the queue for one that fits, so a
# settlement never walks a long queue; entries further back are looked at as the queue moves.
LOOKAHEAD = 100


class FillPolicy(StrEnum):
    STRICT_FIFO = "STRICT_FIFO"
    FIRST_FIT = "FIRST_FIT"


DEFAULT_FILL_POLICY = FillPolicy.STRICT_FIFO


@dataclass(frozen=True, slots=True)
class Waiter(Generic[T]):
    """A waiting entry as the policy sees it: who, how many units, how often passed over so far."""

    key: T
    units: int
    passed_over: int = 0


@dataclass(frozen=True, slots=True)
class Offers(Generic[T]):
    """What one settlement does: entries offered units, in order, and who was passed how often."""

    offered: list[Waiter[T]] = field(default_factory=list)
    passed: dict[T, int] = field(default_factory=dict)  # key -> pass-overs added now
    units_left: int = 0


def validate_units(units: int, capacity: int | None = None) -> None:
    """Raise ValidationError unless a booking may take `units` units (of a slot of `capacity`)."""
    if units < 1:
        raise ValidationError("units", "must be at least 1")
    if capacity is not None and units > capacity:
        raise ValidationError("units", f"must be at most the slot's capacity ({capacity})")


def validate_max_pass_overs(max_pass_overs: int) -> None:
    """Raise ValidationError unless `max_pass_overs` is a usable pass-over bound."""
    if not 0 <= max_pass_overs <= MAX_PASS_OVERS:
        raise ValidationError("maxPassOvers", f"must be between 0 and {MAX_PASS_OVERS}")


def queue_window(policy: FillPolicy, free: int) -> int:
    """How many entries from the head of the queue the policy may need to look at."""
    return free if policy is FillPolicy.STRICT_FIFO else free + LOOKAHEAD


def offers(policy: FillPolicy, free: int, queue: Sequence[Waiter[T]], max_pass_overs: int) -> Offers[T]:
    """Who among `queue` (in order, head first) is offered units now that `free` units are free.

    An entry is offered only whole (all its units). STRICT_FIFO stops at the first entry that does
    not fit. FIRST_FIT skips it and goes on, each entry offered behind it passing it over once;
    it stops at a skipped entry already passed over `max_pass_overs` times (that entry blocks).
    """
    offered: list[Waiter[T]] = []
    passed: dict[T, int] = {}
    skipped: list[Waiter[T]] = []
    left = free
    for waiter in queue:
        if left <= 0:
            break
        if waiter.units <= left:
            offered.append(waiter)
            left -= waiter.units
            for s in skipped:
                passed[s.key] = passed.get(s.key, 0) + 1
            if any(s.passed_over + passed[s.key] >= max_pass_overs for s in skipped):
                break  # a skipped entry reached its bound: it blocks everyone behind it now
            continue
        if policy is FillPolicy.STRICT_FIFO or waiter.passed_over >= max_pass_overs:
            break
        skipped.append(waiter)
    return Offers(offered, passed, left)
