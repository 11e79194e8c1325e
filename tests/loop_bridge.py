"""Calling the session's event loop from a thread (Hypothesis runs its tests synchronously)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Bridge:
    """Runs coroutines on `loop` from another thread, each within `timeout` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 60.0) -> None:
        self.loop = loop
        self.timeout = timeout

    def run(self, awaitable: Awaitable[T]) -> T:
        future = asyncio.run_coroutine_threadsafe(_awaited(awaitable), self.loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
