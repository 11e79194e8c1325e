"""Counting round trips to PostgreSQL and Redis, client side, by wrapping the drivers' send calls.

Nothing is mocked: every call goes to the real server as before and is only counted. asyncpg
sends one message per fetch/execute (a transaction's BEGIN and COMMIT are executes too); redis-py
sends one packed buffer per command or per pipeline.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from redis.asyncio.connection import AbstractConnection

_POSTGRES_CALLS = ("fetch", "fetchrow", "fetchval", "execute", "executemany")


@dataclass
class RoundTrips:
    postgres: int = 0
    redis: int = 0
    statements: list[str] | None = None

    def reset(self) -> None:
        self.postgres = self.redis = 0
        self.statements = []


def _counting(original: Callable[..., Any], count: Callable[[tuple[Any, ...]], None]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def counted(*args: Any, **kwargs: Any) -> Any:
        count(args)
        return await original(*args, **kwargs)

    return counted


@contextlib.contextmanager
def counting_round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    """Count every PostgreSQL and Redis round trip this process makes inside the block."""
    trips = RoundTrips(statements=[])

    def postgres(args: tuple[Any, ...]) -> None:
        trips.postgres += 1
        assert trips.statements is not None
        trips.statements.append(str(args[1])[:80] if len(args) > 1 else "?")

    def redis(args: tuple[Any, ...]) -> None:
        trips.redis += 1

    for name in _POSTGRES_CALLS:
        monkeypatch.setattr(
            asyncpg.connection.Connection,
            name,
            _counting(getattr(asyncpg.connection.Connection, name), postgres),
        )
    monkeypatch.setattr(
        AbstractConnection, "send_packed_command", _counting(AbstractConnection.send_packed_command, redis)
    )
    try:
        yield trips
    finally:
        monkeypatch.undo()
