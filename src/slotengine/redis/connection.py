"""How every engine process talks to Redis when Redis restarts or drops connections."""

from __future__ import annotations

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

# A pooled connection to a Redis that restarted fails on its next use; without retries that
# request fails although Redis is back. Reconnect and send again a few times (about 0.4 s in
# all) before giving up: while Redis is really down, callers still fail fast.
RECONNECT_ATTEMPTS = 3


def reconnecting() -> Retry:
    """Retry policy for commands that meet a dropped connection or a timeout."""
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.25), RECONNECT_ATTEMPTS)
