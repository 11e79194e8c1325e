"""Lua scripts: read from their .lua files once, called by SHA, reloaded when Redis forgot them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


class LuaScript:
    """One .lua file beside this module, run with EVALSHA."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (resources.files("slotengine.redis") / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, redis: Redis, keys: list[str], args: list[Any]) -> Any:
        """Run the script; a Redis that lost its script cache (restart, SCRIPT FLUSH) gets it again."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)

    async def run_many(self, redis: Redis, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run the script once per (keys, args), all in one pipelined round trip."""
        try:
            return await self._pipelined(redis, calls)
        except NoScriptError:
            # Redis lost the script before the pipeline arrived, so every call failed alike.
            await redis.script_load(self.source)
            return await self._pipelined(redis, calls)

    async def _pipelined(self, redis: Redis, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            return list(await pipe.execute())

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r}, sha={self.sha[:8]})"


reserve = LuaScript("reserve")
sync_slot = LuaScript("sync_slot")
slot_status = LuaScript("slot_status")
queue_position = LuaScript("queue_position")
claim_due = LuaScript("claim_due")
