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
from slotengine.redis.pipelining import PipelineBatcher


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

    async def run_many(
        self,
        redis: RedisClient,
        calls: Sequence[tuple[list[str], list[Any]]],
        batcher: PipelineBatcher | None = None,
    ) -> list[Any]:
        """Run the script once per (keys, args): one pipelined round trip, shared with other callers
        through `batcher` if given (concurrent calls on a cluster)."""
        if isinstance(redis, RedisCluster):
            # A cluster pipeline refuses EVALSHA: one call per key set, each to its own node.
            return list(await asyncio.gather(*(self(redis, keys, args) for keys, args in calls)))
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            sent = pipe.execute(raise_on_error=False) if batcher is None else batcher.execute(pipe)
            results = list(await sent)
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
    """apply_changes.lua's answer: what the mirror did with the changes, and the places it reported."""

    # OK (applied), MISSING (not mirrored), BEHIND (at an older version: an earlier change is on
    # its way), AHEAD (a rebuild holds these changes already), STALE (disagreed: rebuild it).
    status: str
    places: list[int]  # when OK: for each queue- and rank operation, in order (0 = not waiting)

    @property
    def applied(self) -> bool:
        return self.status == "OK"

    @property
    def missing(self) -> bool:
        return self.status == "MISSING"

    @property
    def behind(self) -> bool:
        return self.status == "BEHIND"

    @property
    def ahead(self) -> bool:
        return self.status == "AHEAD"


def parse_changes_applied(answer: Any) -> ChangesApplied:
    """Read apply_changes.lua's raw answer."""
    return ChangesApplied(str(answer[0]), [int(place) for place in answer[1:]])


async def apply_changes(redis: RedisClient, keys: list[str], args: list[Any]) -> ChangesApplied:
    """Run apply_changes.lua (see its header) and read its answer."""
    return parse_changes_applied(await apply_changes_script(redis, keys, args))


class SlotStatus(NamedTuple):
    """slot_status.lua's answer for a mirrored slot."""

    capacity: int
    confirmed: int
    live_holds: int
    lapsed_holds: int  # past their expiry in Redis' clock, not yet expired in PostgreSQL
    waiting: int
    closed: bool
    now_ms: int  # Redis' clock


async def read_slot_status(redis: RedisClient, keys: list[str]) -> SlotStatus | None:
    """The slot's counts from its mirror, or None when it is not mirrored."""
    answer = await slot_status(redis, keys, [])
    if answer[0] == "MISSING":
        return None
    capacity, confirmed, live, lapsed, waiting, closed, now_ms = (int(value) for value in answer)
    return SlotStatus(capacity, confirmed, live, lapsed, waiting, bool(closed), now_ms)


class QueuePlace(NamedTuple):
    """queue_position.lua's answer."""

    mirrored: bool
    place: int | None  # 1 = next in line; None when the booking is not waiting
    version: int  # the slot version the mirror is at (-1 when not mirrored)


def parse_queue_place(answer: Any) -> QueuePlace:
    if answer[0] == "MISSING":
        return QueuePlace(False, None, -1)
    return QueuePlace(True, int(answer[0]) or None, int(answer[1]))


async def read_queue_places(redis: RedisClient, calls: Sequence[tuple[list[str], str]]) -> list[QueuePlace]:
    """Where each (slot keys, booking id) stands in its slot's mirrored queue, in one round trip."""
    answers = await queue_position.run_many(redis, [(keys, [booking_id]) for keys, booking_id in calls])
    return [parse_queue_place(answer) for answer in answers]


async def read_queue_ahead(redis: RedisClient, keys: list[str], version: int, booking_id: str) -> int | None:
    """How many wait ahead of the booking by the slot's mirror at `version` (queue_rank.lua);
    None when the mirror is missing, at another version, or does not have the booking waiting."""
    answer = await queue_rank(redis, keys, [version, booking_id])
    if answer[0] in ("MISSING", "STALE") or int(answer[0]) < 0:
        return None
    return int(answer[0])


class Claim(NamedTuple):
    """One schedule claim_due.lua handed to this caller."""

    schedule_id: str
    task_json: str


async def claim_due_tasks(redis: RedisClient, keys: list[str], lease_ms: int, most: int) -> list[Claim]:
    """Claim the schedules due now (see claim_due.lua)."""
    flat: list[str] = await claim_due(redis, keys, [lease_ms, most])
    return [Claim(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


class Turn(NamedTuple):
    """take_turn.lua's answer."""

    allowed: bool
    wait_ms: int  # until a call would be allowed; 0 when this one was


def parse_turn(answer: Any) -> Turn:
    allowed, wait_ms = answer
    return Turn(bool(int(allowed)), int(wait_ms))


def turn_args(window_ms: int, limit: int, now_ms: int | None = None) -> list[Any]:
    """take_turn.lua's ARGV; `now_ms` None leaves the time to Redis' clock."""
    return [window_ms, limit, "" if now_ms is None else now_ms]


async def take_one_turn(
    redis: RedisClient, key: str, window_ms: int, limit: int, now_ms: int | None = None
) -> Turn:
    """Log one call under `key` in a sliding window (see take_turn.lua)."""
    return parse_turn(await take_turn(redis, [key], turn_args(window_ms, limit, now_ms)))


apply_changes_script = LuaScript("apply_changes")
sync_slot = LuaScript("sync_slot")  # answers the number of holds and queue entries written
slot_status = LuaScript("slot_status")
queue_position = LuaScript("queue_position")
queue_rank = LuaScript("queue_rank")
claim_due = LuaScript("claim_due")
take_turn = LuaScript("take_turn")
schedule_in = LuaScript("schedule_in")
