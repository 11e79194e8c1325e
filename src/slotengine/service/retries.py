"""Running a whole slot transaction again after PostgreSQL aborted it in a conflict."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from slotengine.metrics import TRANSACTION_RETRIES

log = logging.getLogger(__name__)

# PostgreSQL aborts one side of a conflict with these (serialization_failure,
# deadlock_detected); the same transaction run again normally succeeds.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
TRANSACTION_ATTEMPTS = 5
_BACKOFF_FIRST_SECONDS = 0.01
_BACKOFF_CAP_SECONDS = 0.25

P = ParamSpec("P")
T = TypeVar("T")


def retryable_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE if `exc` (or what it was raised from) is a conflict worth running again."""
    seen: BaseException | None = exc
    while seen is not None:
        sqlstate = getattr(seen, "sqlstate", None)
        if sqlstate in RETRYABLE_SQLSTATES:
            return str(sqlstate)
        seen = seen.__cause__  # Tortoise wraps driver errors with `raise … from exc`
    return None


def retry_conflicts(work: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run `work` (whole slot transactions) again, with jittered backoff, after a conflict abort;
    only a committed attempt sets timers and announces changes, so retries never double them."""

    @functools.wraps(work)
    async def attempts(*args: P.args, **kwargs: P.kwargs) -> T:
        attempt = 1
        while True:
            try:
                return await work(*args, **kwargs)
            except Exception as exc:
                sqlstate = retryable_sqlstate(exc)
                if sqlstate is None or attempt >= TRANSACTION_ATTEMPTS:
                    raise
                TRANSACTION_RETRIES.labels(sqlstate).inc()
                log.warning(
                    "%s aborted by PostgreSQL (%s), attempt %d of %d: running it again",
                    work.__qualname__,
                    sqlstate,
                    attempt,
                    TRANSACTION_ATTEMPTS,
                )
                # Full jitter: the transactions that collided do not collide again in lockstep.
                ceiling = min(_BACKOFF_CAP_SECONDS, _BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(0, ceiling))
                attempt += 1

    return attempts
