"""When this process lets CPython's cyclic collector stop the world: as listeners leave.

A full collection scans every tracked object; with a thousand subscriptions open that is some
400,000 objects and a 250 ms stall, and CPython starts one after the long-lived heap grows by a
quarter: right after a burst of people subscribing, which is when a slot's changes fan out to
all of them. Subscriptions live long, so each one's objects are frozen out of the collector as
it starts (gc.freeze is a constant-time list splice). Frozen objects are still freed by
reference counting; only cycles among them wait, so the frozen set is collected once enough
listeners have left for its garbage to matter, when fewer are waiting on a fan-out.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

MIN_DEPARTURES = 100
DEPARTED_FRACTION = 0.25


@dataclass
class CollectOnDepartures:
    """Freezes the heap as subscriptions start; collects it after a quarter of them ended."""

    freeze: Callable[[], None] = gc.freeze
    unfreeze: Callable[[], None] = gc.unfreeze
    collect: Callable[[], object] = gc.collect
    live: int = 0
    departed: int = 0
    peak: int = field(default=0)

    def subscription_started(self) -> None:
        self.live += 1
        self.peak = max(self.peak, self.live)
        self.freeze()

    def subscription_ended(self) -> None:
        self.live -= 1
        self.departed += 1
        if self.departed >= max(MIN_DEPARTURES, DEPARTED_FRACTION * self.peak):
            self.unfreeze()
            self.collect()
            self.freeze()
            self.departed = 0
            self.peak = self.live


POLICY = CollectOnDepartures()
