"""Every Redis key and channel name, built in one place.

All keys of one slot carry the hash tag {slot:<id>}, so each script touches one cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SlotKeys:
    meta: str  # hash: capacity, confirmed, closed
    holds: str  # sorted set: booking id -> hold expiry (epoch ms, PostgreSQL's clock)
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
    due: str  # sorted set: schedule id -> due time (epoch ms)
    tasks: str  # hash: schedule id -> the ScheduledTask as JSON
    claimed: str  # sorted set: schedule id -> lease deadline (epoch ms) of the scheduler sending it
    wake: str  # pub/sub channel: the due time (epoch ms) of each timer armed, to wake schedulers

    def all(self) -> list[str]:
        """The keys claim_due.lua takes (not the wake-up channel)."""
        return [self.due, self.tasks, self.claimed]


def schedule_keys(prefix: str) -> ScheduleKeys:
    """The keys of the one-off task schedule (hold expiries, queue lapses)."""
    tag = f"{prefix}{{schedule}}"
    return ScheduleKeys(due=f"{tag}:due", tasks=f"{tag}:tasks", claimed=f"{tag}:claimed", wake=f"{tag}:wake")


def timers_armed_key(prefix: str) -> str:
    """Present while Redis still holds the timers it was given; gone after a restart or flush."""
    return f"{prefix}{{schedule}}:armed"


def task_stream(prefix: str) -> str:
    """The Redis stream Taskiq's broker carries tasks on."""
    return f"{prefix}tasks"


def expiry_lateness_key(prefix: str) -> str:
    """The hash holding the engine-wide expiry lateness histogram (bucket -> count, sum, count)."""
    return f"{prefix}metrics:expiry_lateness"


def reserve_rate_key(prefix: str, holder: str) -> str:
    """The log of one holder's reserveSlot calls in the sliding rate-limit window."""
    # ":log": the fixed window's counter had the bare name, and a different type.
    return f"{prefix}rate:reserve:{holder}:log"


def read_rate_key(prefix: str, client: str) -> str:
    """The log of one client's reads (a holder, or an anonymous caller's address) in the window."""
    return f"{prefix}rate:read:{client}:log"
