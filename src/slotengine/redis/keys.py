"""Every Redis key and channel name, built in one place.

All keys of one slot carry the hash tag {slot:<id>}, so each script touches one cluster slot.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SlotKeys:
    meta: str  # hash: capacity, confirmed, closed
    holds: str  # sorted set: one member per held unit (mirror.hold_members) -> hold expiry (epoch ms)
    queue: str  # sorted set: booking id -> arrival sequence

    def all(self) -> list[str]:
        return [self.meta, self.holds, self.queue]


def slot_keys(prefix: str, slot_id: str) -> SlotKeys:
    """The keys that mirror one slot's state."""
    tag = f"{prefix}{{slot:{slot_id}}}"
    return SlotKeys(meta=f"{tag}:meta", holds=f"{tag}:holds", queue=f"{tag}:queue")


def slot_channel(prefix: str, slot_id: str) -> str:
    """The pub/sub channel on which a slot's changes are announced after commit."""
    return f"{prefix}{{slot:{slot_id}}}:events"


@dataclass(frozen=True, slots=True)
class ScheduleKeys:
    """One timer shard's keys; they share a hash tag, so claim_due.lua touches one cluster slot."""

    due: str  # sorted set: schedule id -> due time (epoch ms)
    tasks: str  # hash: schedule id -> the ScheduledTask as JSON
    claimed: str  # sorted set: schedule id -> lease deadline (epoch ms) of the scheduler sending it
    armed: str  # present while Redis still holds this shard's timers; gone after a restart or flush

    def all(self) -> list[str]:
        """The keys claim_due.lua takes, in its order."""
        return [self.due, self.tasks, self.claimed]


# On a cluster timers are spread over this many shards, each its own hash tag, so no one node
# carries every timer; a schedule's shard follows from its id alone. One Redis has one shard.
CLUSTER_TIMER_SHARDS = 8


def schedule_keys(prefix: str, shard: int) -> ScheduleKeys:
    """The keys of one shard of the one-off task schedule (hold expiries, queue lapses)."""
    tag = f"{prefix}{{timers:{shard}}}"
    return ScheduleKeys(
        due=f"{tag}:due", tasks=f"{tag}:tasks", claimed=f"{tag}:claimed", armed=f"{tag}:armed"
    )


def timers_wake_channel(prefix: str) -> str:
    """Pub/sub channel: the due time (epoch ms) of each timer armed, to wake sleeping schedulers."""
    return f"{prefix}{{timers}}:wake"


def schedule_shard(schedule_id: str, shards: int) -> int:
    """The timer shard holding `schedule_id` (stable across processes: CRC32, not hash())."""
    return zlib.crc32(schedule_id.encode()) % shards


def task_stream(prefix: str) -> str:
    """The Redis stream Taskiq's broker carries tasks on (tagged: it and its group are one slot)."""
    return f"{prefix}{{tasks}}"


def expiry_lateness_key(prefix: str) -> str:
    """The hash holding the engine-wide expiry lateness histogram (bucket -> count, sum, count)."""
    return f"{prefix}{{metrics}}:expiry_lateness"


def reserve_rate_key(prefix: str, holder: str) -> str:
    """The log of one holder's reserveSlot calls in the sliding rate-limit window."""
    # Its own hash tag: a script may touch this key alone on a cluster.
    return f"{prefix}{{rate:{holder}}}:reserve:log"


def read_rate_key(prefix: str, client: str) -> str:
    """The log of one client's reads (a holder, or an anonymous caller's address) in the window."""
    return f"{prefix}{{rate:{client}}}:read:log"
