"""Putting a slot's announcements back in version order before listeners see them.

Transactions on one slot commit in order, but each publishes after its commit on a connection
of its own, so two quick changes can reach Redis' channel swapped. A listener that sees a gap
re-reads the slot from PostgreSQL; with a thousand listeners that is a thousand reads at the
busiest moment. Holding a too-early announcement back until the one before it arrives (it is
normally milliseconds behind) spares them, once per process instead of once per listener.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


T = TypeVar("T", bound=Versioned)


@dataclass
class VersionOrder(Generic[T]):
    """The announcements of one slot, released in version order; gaps are held back."""

    last: int | None = None
    held: dict[int, T] = field(default_factory=dict)

    def accept(self, announcement: T) -> list[T]:
        """What to deliver now that `announcement` arrived (possibly nothing)."""
        if self.last is not None and announcement.version <= self.last:
            return []  # already delivered, or older than what was: listeners have it
        if self.last is not None and announcement.version > self.last + 1:
            self.held[announcement.version] = announcement
            return []
        released = [announcement]
        self.last = announcement.version
        while self.last + 1 in self.held:
            released.append(self.held.pop(self.last + 1))
            self.last += 1
        return released

    @property
    def waiting(self) -> bool:
        """Whether announcements are held back behind a missing version."""
        return bool(self.held)

    def give_up(self) -> list[T]:
        """The missing version is not coming: release what is held, listeners see the gap."""
        released = [self.held[version] for version in sorted(self.held)]
        if released:
            self.last = released[-1].version
        self.held.clear()
        return released
