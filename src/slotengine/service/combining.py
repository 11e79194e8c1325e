"""Combining concurrent requests for one key into batches: while one batch runs, the next gathers.

Under a rush on one slot, a thousand reservations become a handful of transactions (one lock,
one settlement, N admissions) instead of a thousand transactions queued on the slot's row lock.
A lone request runs at once, alone: nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
T = TypeVar("T")

# Run for a whole batch: one outcome per request, in order; an exception is that request's refusal.
BatchRunner = Callable[[K, Sequence[R]], Awaitable[Sequence[T | BaseException]]]

MAX_BATCH = 1000


class Combiner(Generic[K, R, T]):
    """Per key, one batch at a time runs in this process; requests arriving meanwhile join the next."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._gathering: dict[K, list[tuple[R, asyncio.Future[T]]]] = {}
        self._draining: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, request: R, run: BatchRunner[K, R, T]) -> T:
        """The outcome of `request`, run in a batch with the other requests for `key`."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._gathering.setdefault(key, []).append((request, future))
        if key not in self._draining:
            self._draining[key] = asyncio.create_task(self._drain(key, run))
        return await future

    async def _drain(self, key: K, run: BatchRunner[K, R, T]) -> None:
        try:
            while True:
                gathered = self._gathering.pop(key, None)
                if not gathered:
                    return  # no await since the pop: a request arriving now starts a new drain
                batch, rest = gathered[: self.max_batch], gathered[self.max_batch :]
                if rest:
                    self._gathering[key] = rest
                await self._run(key, batch, run)
        finally:
            del self._draining[key]

    async def _run(self, key: K, batch: list[tuple[R, asyncio.Future[T]]], run: BatchRunner[K, R, T]) -> None:
        try:
            outcomes = await run(key, [request for request, _ in batch])
        except Exception as failure:  # the whole batch failed: every request learns why
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        except BaseException as failure:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise failure
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away; the batch committed its request anyway
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
