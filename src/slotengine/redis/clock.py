"""Redis' clock: the one clock every engine process shares for timing that Redis keeps.

PostgreSQL's now() decides every state change; Redis' TIME times what lives in Redis (when a
timer is due, whether a mirrored hold has lapsed). No process's own clock decides either.
"""

from __future__ import annotations

from datetime import UTC, datetime


def epoch_ms(moment: datetime) -> int:
    """A datetime as epoch milliseconds, the unit of every score and time the scripts keep."""
    return int(moment.timestamp() * 1000)


def time_reply_ms(time_reply: tuple[int | str, int | str]) -> int:
    """Epoch milliseconds from a TIME reply (seconds, microseconds)."""
    seconds, microseconds = time_reply
    return int(seconds) * 1000 + int(microseconds) // 1000


def from_epoch_ms(moment_ms: int) -> datetime:
    """A UTC datetime from epoch milliseconds (what the scripts report as Redis' now)."""
    return datetime.fromtimestamp(int(moment_ms) / 1000, UTC)
