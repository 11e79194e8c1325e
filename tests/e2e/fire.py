"""Helpers of the proof-under-fire tests: engines of their own, recorded load, the checks.

Each test runs real `slotengine serve`, `worker` and `scheduler` processes on a database of its
own (the session's workers sweep the session's database, and would settle these slots while
writing their mirrors to another Redis), and records every request it makes with its timing.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from slotengine.config import Settings
from slotengine.embedded import free_port
from slotengine.redis.keys import slot_keys
from slotengine.store.database import create_database, migrate
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, BOOKING_FIELDS
from tests.processes import kill_tree, serving, spawn, wait_for_consumers, wait_for_scheduler

MASKED = "Internal error."

RESERVE = f"""mutation($s: ID!, $k: String!) {{
  reserveSlot(slotId: $s, idempotencyKey: $k) {{ {BOOKING_FIELDS} }} }}"""
CONFIRM = f"""mutation($b: ID!) {{ confirmBooking(bookingId: $b) {{ {BOOKING_FIELDS}
  ... on HoldExpired {{ bookingId expiredAt }} }} }}"""
CANCEL = f"""mutation($b: ID!) {{ cancelBooking(bookingId: $b) {{ {BOOKING_FIELDS} }} }}"""
CREATE_SLOT = """mutation($input: CreateSlotInput!) {
  createSlot(input: $input) { __typename ... on Slot { id } ... on Error { message } } }"""
READ_SLOT = """query($s: ID!) { slot(id: $s) { id capacity held confirmed queueLength } }"""


async def fresh_database(server_url: str) -> str:
    """A migrated database of the caller's own on the suite's PostgreSQL server."""
    url = await create_database(server_url, f"slotengine_fire_{uuid.uuid4().hex[:12]}")
    await migrate(url)
    return url


@dataclass
class Call:
    """One request as the client saw it."""

    op: str
    began: float  # time.monotonic()
    ended: float
    kind: str  # "answer" (data, typed errors included), "masked", "leak", "http <status>", "transport"
    typename: str | None = None
    detail: str = ""


@dataclass
class Recorder:
    """Sends GraphQL requests and keeps a record of every one."""

    calls: list[Call] = field(default_factory=list)

    async def send(
        self,
        http: httpx.AsyncClient,
        op: str,
        query: str,
        variables: dict[str, Any],
        bearer: str,
    ) -> dict[str, Any] | None:
        """The operation's result object, or None when the request failed (recorded either way)."""
        began = time.monotonic()
        try:
            response = await http.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {bearer}"},
            )
        except httpx.HTTPError as exc:
            self.calls.append(Call(op, began, time.monotonic(), "transport", detail=repr(exc)))
            return None
        ended = time.monotonic()
        if response.status_code != 200:
            self.calls.append(Call(op, began, ended, f"http {response.status_code}", detail=response.text))
            return None
        body = response.json()
        if body.get("errors"):
            masked = all(
                e.get("message") == MASKED and set(e) <= {"message", "locations", "path"}
                for e in body["errors"]
            )
            self.calls.append(Call(op, began, ended, "masked" if masked else "leak", detail=response.text))
            return None
        result: dict[str, Any] = next(iter(body["data"].values()))
        self.calls.append(Call(op, began, ended, "answer", typename=(result or {}).get("__typename")))
        return result

    def tally(self, calls: Sequence[Call] | None = None) -> Counter[str]:
        return Counter(c.kind for c in (self.calls if calls is None else calls))


@dataclass
class Stack:
    """Engine processes on one database and one Redis: API servers, a worker, a scheduler."""

    settings: Settings
    apis: list[str]
    processes: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for process in self.processes:
            kill_tree(process, signal.SIGTERM)


async def start_stack(
    settings: Settings,
    redis: Redis,
    *,
    apis: int = 1,
    api_env: dict[str, str] | None = None,
    worker_env: dict[str, str] | None = None,
    scheduler_env: dict[str, str] | None = None,
) -> Stack:
    """Start the processes and wait until each answers (APIs healthy, worker and scheduler seen)."""
    ports = [free_port() for _ in range(apis)]
    processes = [spawn(settings, "serve", "--port", str(port), env=api_env) for port in ports]
    processes.append(spawn(settings, "worker", "--workers", "1", env=worker_env))
    processes.append(spawn(settings, "scheduler", env=scheduler_env))
    stack = Stack(settings, [f"http://127.0.0.1:{port}" for port in ports], processes)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            for base in stack.apis:
                await eventually(lambda base=base: serving(http, base), bool, within=60)  # type: ignore[misc]
        await wait_for_consumers(redis, settings, at_least=1)
        await wait_for_scheduler(redis, settings)
    except BaseException:
        stack.stop()
        raise
    return stack


async def create_slot(
    recorder: Recorder,
    http: httpx.AsyncClient,
    *,
    capacity: int,
    hold_seconds: int,
    starts_in: timedelta = timedelta(days=1),
) -> str:
    starts = datetime.now(UTC) + starts_in
    variables = {
        "input": {
            "resource": "fire",
            "startsAt": starts.isoformat(),
            "endsAt": (starts + timedelta(minutes=30)).isoformat(),
            "capacity": capacity,
            "holdSeconds": hold_seconds,
        }
    }
    created = await recorder.send(http, "createSlot", CREATE_SLOT, variables, ADMIN)
    assert created is not None and created["__typename"] == "Slot", recorder.calls[-1]
    slot_id: str = created["id"]
    return slot_id


async def over_bookings(db: asyncpg.Pool) -> list[dict[str, Any]]:
    """Slots whose occupying bookings exceed capacity, share a unit, or use a unit out of range."""
    rows = await db.fetch(
        "SELECT b.slot_id, s.capacity, count(*) AS active, count(DISTINCT b.unit) AS units,"
        " count(*) FILTER (WHERE b.unit IS NULL OR b.unit < 1 OR b.unit > s.capacity) AS out_of_range"
        " FROM bookings b JOIN slots s ON s.id = b.slot_id"
        " WHERE b.state IN ('RESERVED', 'CONFIRMED', 'COMPLETED') GROUP BY b.slot_id, s.capacity"
    )
    return [
        dict(r) for r in rows if r["active"] > r["capacity"] or r["units"] != r["active"] or r["out_of_range"]
    ]


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def mirror_mismatch(db: asyncpg.Pool, redis: Redis, prefix: str, slot_id: str) -> str | None:
    """How the slot's Redis mirror differs from PostgreSQL, read under the slot's row lock (which
    every writer of the mirror holds, so neither side changes meanwhile)."""
    keys = slot_keys(prefix, slot_id)
    async with db.acquire() as conn, conn.transaction():
        slot = await conn.fetchrow(
            "SELECT capacity, closed FROM slots WHERE id = $1 FOR UPDATE", uuid.UUID(slot_id)
        )
        rows = await conn.fetch(
            "SELECT id::text, state, expires_at, queue_seq FROM bookings WHERE slot_id = $1"
            " AND state IN ('RESERVED', 'PENDING', 'CONFIRMED', 'COMPLETED')",
            uuid.UUID(slot_id),
        )
        meta = await redis.hgetall(keys.meta)
        holds = dict(await redis.zrange(keys.holds, 0, -1, withscores=True))
        queue = dict(await redis.zrange(keys.queue, 0, -1, withscores=True))
    assert slot is not None
    want_meta = {
        "capacity": str(slot["capacity"]),
        "confirmed": str(sum(r["state"] in ("CONFIRMED", "COMPLETED") for r in rows)),
        "closed": str(int(slot["closed"])),
    }
    want_holds = {r["id"]: float(_epoch_ms(r["expires_at"])) for r in rows if r["state"] == "RESERVED"}
    want_queue = {r["id"]: float(r["queue_seq"]) for r in rows if r["state"] == "PENDING"}
    # The mirror's own bookkeeping (its version, when Redis may drop it) is not PostgreSQL's state.
    meta = {name: value for name, value in meta.items() if name not in ("version", "drop_at")}
    if (meta, holds, queue) == (want_meta, want_holds, want_queue):
        return None
    return (
        f"slot {slot_id}: Redis meta={meta} holds={holds} queue={queue};"
        f" PostgreSQL meta={want_meta} holds={want_holds} queue={want_queue}"
    )
