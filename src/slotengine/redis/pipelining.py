"""One round trip for many callers: concurrent pipelines of one process sent to Redis as one.

Each reservation makes two small pipelines (its rate-limit turn, then its after-commit work), and
under load most of a pipeline's cost is its own: a pooled connection taken and given back, the
retry wrapper, the write and the read. While one merged pipeline is out, the next one gathers, so
a lone call goes at once and a rush shares round trips. Only commands that are independent of one
another's callers belong here (no WATCH, no MULTI): the merged pipeline is not a transaction.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

# A caller's queued commands: redis-py's pipeline entries, (args, options).
Commands = list[tuple[Any, Any]]


class PipelineBatcher:
    """Sends callers' pipelines merged into one, one merged pipeline at a time."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiting: list[tuple[Commands, asyncio.Future[list[Any]]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.round_trips = 0  # merged pipelines sent, for tests and benchmarks
        self.pipelines = 0  # callers' pipelines they carried

    async def execute(self, pipe: Pipeline) -> list[Any]:
        """Run `pipe`'s commands with whatever else is waiting; their replies in order, a command's
        error as its reply (redis-py's raise_on_error=False). `pipe` is left empty."""
        commands: Commands = list(pipe.command_stack)
        pipe.command_stack.clear()
        if not commands:
            return []
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((commands, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                merged = self.redis.pipeline(transaction=False)
                for commands, _ in batch:
                    merged.command_stack.extend(commands)
                self.round_trips += 1
                self.pipelines += len(batch)
                try:
                    replies = await merged.execute(raise_on_error=False)
                except Exception as failure:  # the round trip failed: every caller learns why
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                start = 0
                for commands, future in batch:
                    if not future.done():  # the caller went away; its commands ran anyway
                        future.set_result(list(replies[start : start + len(commands)]))
                    start += len(commands)
        finally:
            self._sender = None
