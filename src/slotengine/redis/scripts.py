"""Lua scripts: read from their .lua files once, called by SHA, reloaded when Redis forgot them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any, NamedTuple

from redis.asyncio import RedisCluster
from redis.exceptions import NoScriptError

from slotengine.redis.connection import RedisClient


class LuaScript:
    """One .lua file beside this module, run with EVALSHA."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (resources.files("slotengine.redis") / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self.reloads = 0  # calls that found the script missing (restart, SCRIPT FLUSH)

    async def __call__(self, redis: RedisClient, keys: list[str], args: list[Any]) -> Any:
        """Run the script; a Redis that lost its script cache (restart, SCRIPT FLUSH) gets it again."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # EVAL sends the source and caches it in one step: a flush between a SCRIPT LOAD
            # and the next EVALSHA cannot make this call fail again.
            self.reloads += 1
            return await redis.eval(self.source, len(keys), *keys, *args)

    async def run_many(self, redis: RedisClient, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run the script once per (keys, args): one pipelined round trip (concurrent calls on a cluster)."""
        if isinstance(redis, RedisCluster):
            # A cluster pipeline refuses EVALSHA: one call per key set, each to its own node.
            return list(await asyncio.gather(*(self(redis, keys, args) for keys, args in calls)))
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            results = list(await pipe.execute(raise_on_error=False))
        # A pipeline is not atomic: a flush can land between its calls, so only some may have
        # found the script missing. Only those run again; the others ran once already.
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            self.reloads += len(missing)
            async with redis.pipeline(transaction=False) as pipe:
                for i in missing:
                    keys, args = calls[i]
                    pipe.eval(self.source, len(keys), *keys, *args)
                for i, result in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                    results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r}, sha={self.sha[:8]})"


class ChangesApplied(NamedTuple):
    """apply_changes.lua's answer: whether the mirror took the changes, and the places it reported."""

    applied: bool
    missing: bool  # the slot was not mirrored at all (else, when not applied: it disagreed)
    places: list[int]  # for each queue- and rank operation, in order (0 = not waiting)


async def apply_changes(redis: RedisClient, keys: list[str], args: list[Any]) -> ChangesApplied:
    """Run apply_changes.lua (see its header) and read its answer."""
    answer = await apply_changes_script(redis, keys, args)
    status = answer[0]
    return ChangesApplied(status == "OK", status == "MISSING", [int(place) for place in answer[1:]])


apply_changes_script = LuaScript("apply_changes")
reserve = LuaScript("reserve")
sync_slot = LuaScript("sync_slot")
slot_status = LuaScript("slot_status")
queue_position = LuaScript("queue_position")
claim_due = LuaScript("claim_due")
take_turn = LuaScript("take_turn")
schedule_in = LuaScript("schedule_in")
