"""A per-holder limit on reserveSlot calls, counted in Redis so that every API process shares it."""

from __future__ import annotations

from collections.abc import Sequence

from slotengine.domain.errors import RateLimited
from slotengine.redis import scripts
from slotengine.redis.keys import reserve_rate_key
from slotengine.service.engine import Engine

WINDOW_SECONDS = 60


async def take_reserve_turn(engine: Engine, holder: str) -> None:
    """Count one reserveSlot call of `holder`; RateLimited once the minute's allowance is spent."""
    limit = engine.reserve_rate_per_minute
    if limit <= 0:
        return
    # The window is timed by Redis alone: API processes with skewed clocks share one count.
    turn = await scripts.take_one_turn(
        engine.redis, reserve_rate_key(engine.prefix, holder), WINDOW_SECONDS * 1000
    )
    if turn.calls > limit:
        raise RateLimited(retry_after_seconds=turn.window_left_ms / 1000)


async def take_reserve_turns(engine: Engine, holders: Sequence[str]) -> list[RateLimited | None]:
    """take_reserve_turn for a batch of reservations in one round trip: each call's refusal or None."""
    limit = engine.reserve_rate_per_minute
    if limit <= 0:
        return [None] * len(holders)
    answers = await scripts.take_turn.run_many(
        engine.redis,
        [([reserve_rate_key(engine.prefix, holder)], [WINDOW_SECONDS * 1000]) for holder in holders],
    )
    turns = [scripts.parse_turn(answer) for answer in answers]
    return [
        RateLimited(retry_after_seconds=turn.window_left_ms / 1000) if turn.calls > limit else None
        for turn in turns
    ]
