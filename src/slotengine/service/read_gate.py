"""A budget of database connections for reads, so readers can never take every connection a reserve needs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from slotengine.domain.errors import Busy


class ReadGate:
    """At most `connections` reads run at once in this process; a read waits `wait_seconds` at most."""

    def __init__(self, connections: int, wait_seconds: float) -> None:
        self.connections = connections
        self.wait_seconds = wait_seconds
        self._free = asyncio.Semaphore(connections)

    @contextlib.asynccontextmanager
    async def entered(self) -> AsyncIterator[None]:
        """Run the block as one of the budgeted reads, or raise Busy when none came free in time."""
        try:
            await asyncio.wait_for(self._free.acquire(), self.wait_seconds)
        except TimeoutError:
            raise Busy(retry_after_seconds=self.wait_seconds) from None
        try:
            yield
        finally:
            self._free.release()

    def __repr__(self) -> str:
        return f"ReadGate(connections={self.connections}, wait_seconds={self.wait_seconds})"
