"""Proof under fire, PostgreSQL: serialization failures (40001) and deadlocks (40P01) raised by the
real server are retried around the whole slot transaction, after-commit work happens once, and a
failure that never clears ends after bounded attempts with a masked error."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio.client import PubSub

from slotengine.config import Settings
from slotengine.service.engine import Engine
from slotengine.service.slot_transaction import TRANSACTION_ATTEMPTS
from slotengine.store.database import connection
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, BOOKING_FIELDS, GraphQL, token

# A fault fires on INSERT or UPDATE of a booking of its slot (only when the row's new state is
# `only_state`, if set) until it has failed `failures` times. Its counter is a sequence because
# nextval survives the rollback the fault causes; a counter column would be rolled back with it.
_INSTALL = [
    "CREATE TABLE test_injected_faults ("
    " slot_id uuid PRIMARY KEY, sqlstate text NOT NULL, failures int NOT NULL,"
    " only_state text, fired regclass NOT NULL)",
    """CREATE FUNCTION test_inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
       DECLARE fault test_injected_faults%ROWTYPE;
       BEGIN
         SELECT * INTO fault FROM test_injected_faults WHERE slot_id = NEW.slot_id;
         IF FOUND AND (fault.only_state IS NULL OR fault.only_state = NEW.state)
            AND nextval(fault.fired) <= fault.failures THEN
           RAISE EXCEPTION 'injected fault on slot %', NEW.slot_id USING ERRCODE = fault.sqlstate;
         END IF;
         RETURN NEW;
       END $$""",
    "CREATE TRIGGER test_inject_fault BEFORE INSERT OR UPDATE ON bookings"
    " FOR EACH ROW EXECUTE FUNCTION test_inject_fault()",
    # The deadlock test's trigger: updating a booking of slot `slot_id` also locks slot `other`.
    "CREATE TABLE test_lock_other (slot_id uuid PRIMARY KEY, other uuid NOT NULL)",
    """CREATE FUNCTION test_lock_other() RETURNS trigger LANGUAGE plpgsql AS $$
       DECLARE target uuid;
       BEGIN
         SELECT other INTO target FROM test_lock_other WHERE slot_id = NEW.slot_id;
         IF FOUND THEN PERFORM 1 FROM slots WHERE id = target FOR UPDATE; END IF;
         RETURN NEW;
       END $$""",
    "CREATE TRIGGER test_lock_other BEFORE UPDATE ON bookings"
    " FOR EACH ROW EXECUTE FUNCTION test_lock_other()",
]
_REMOVE = [
    "DROP TRIGGER IF EXISTS test_inject_fault ON bookings",
    "DROP FUNCTION IF EXISTS test_inject_fault()",
    "DROP TABLE IF EXISTS test_injected_faults",
    "DROP TRIGGER IF EXISTS test_lock_other ON bookings",
    "DROP FUNCTION IF EXISTS test_lock_other()",
    "DROP TABLE IF EXISTS test_lock_other",
]


async def sql(query: str, *args: Any) -> list[dict[str, Any]]:
    return await connection().execute_query_dict(query, list(args))


@pytest.fixture(scope="module")
async def faults(engine: Engine) -> AsyncIterator[list[str]]:
    """Install the fault triggers for this module only; yields the list of counters to drop."""
    counters: list[str] = []
    try:
        for statement in _INSTALL:
            await connection().execute_script(statement)
        yield counters
    finally:
        for statement in _REMOVE:
            await connection().execute_script(statement)
        for counter in counters:
            await connection().execute_script(f"DROP SEQUENCE IF EXISTS {counter}")


async def inject(
    counters: list[str], slot_id: str, sqlstate: str, failures: int, only_state: str | None = None
) -> str:
    counter = f"test_fault_{uuid.uuid4().hex}"
    counters.append(counter)
    await connection().execute_script(f"CREATE SEQUENCE {counter}")
    await sql(
        "INSERT INTO test_injected_faults (slot_id, sqlstate, failures, only_state, fired)"
        " VALUES ($1, $2, $3, $4, $5::regclass)",
        slot_id,
        sqlstate,
        failures,
        only_state,
        counter,
    )
    return counter


async def fired(counter: str) -> int:
    """How many times the fault's trigger ran (failed or not)."""
    row = (await sql(f"SELECT last_value, is_called FROM {counter}"))[0]
    return int(row["last_value"]) if row["is_called"] else 0


async def retries(gql: GraphQL, sqlstate: str) -> float:
    page = (await gql.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})).text
    return sum(
        s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "slotengine_transaction_retries_total" and s.labels.get("sqlstate") == sqlstate
    )


async def events_of(booking_id: str) -> list[str]:
    rows = await sql("SELECT event FROM transitions WHERE booking_id = $1 ORDER BY id", booking_id)
    return [r["event"] for r in rows]


class Announcements:
    """A test's own subscription to a slot's channel, read up to a sentinel change."""

    def __init__(self, engine: Engine, slot_id: str) -> None:
        self.pubsub: PubSub = engine.redis.pubsub()
        self.channel = engine.channel(slot_id)

    async def __aenter__(self) -> Announcements:
        await self.pubsub.subscribe(self.channel)
        await eventually(lambda: self.pubsub.get_message(timeout=0.2), lambda m: m is not None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]

    async def until(self, booking_id: str, within: float = 10.0) -> list[dict[str, Any]]:
        """Every announcement up to and including the first that changes `booking_id`."""
        read: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is None:
                continue
            read.append(json.loads(message["data"]))
            if any(c["bookingId"] == booking_id for c in read[-1]["changes"]):
                return read
        raise AssertionError(f"no announcement of {booking_id} within {within}s; read {read}")


async def expiry_schedules(engine: Engine) -> set[str]:
    return {k for k in await engine.redis.hkeys(engine.timers.source.keys.tasks) if k.startswith("expire:")}


async def leaked(engine: Engine, before: set[str]) -> list[str]:
    """Expiry timers set since `before` for bookings that do not exist (a rolled-back attempt's)."""
    new = await expiry_schedules(engine) - before
    ids = [k.split(":")[1] for k in new]
    rows = await sql("SELECT id::text FROM bookings WHERE id = ANY($1::uuid[])", ids)
    known = {r["id"] for r in rows}
    return [k for k in new if k.split(":")[1] not in known]


async def test_a_reserve_aborted_twice_by_serialization_failures_succeeds_and_is_announced_once(
    gql: GraphQL, engine: Engine, faults: list[str]
) -> None:
    slot_id = await gql.create_slot(capacity=1)
    counter = await inject(faults, slot_id, "40001", failures=2, only_state="RESERVED")
    before_retries, before_timers = await retries(gql, "40001"), await expiry_schedules(engine)

    async with Announcements(engine, slot_id) as announced:
        held = await gql.reserve(token("pg-ser-a"), slot_id, "k")
        sentinel = await gql.reserve(token("pg-ser-b"), slot_id, "k")
        seen = await announced.until(sentinel["id"])

    assert (held["__typename"], held["state"], sentinel["state"]) == ("Booking", "RESERVED", "PENDING")
    assert await fired(counter) == 3  # two aborted attempts, then the one that committed
    assert await retries(gql, "40001") - before_retries == 2
    assert await events_of(held["id"]) == ["hold"]
    rows = await sql("SELECT count(*) AS n FROM bookings WHERE slot_id = $1", slot_id)
    assert rows[0]["n"] == 2
    # One announcement per committed transaction, versions without gaps or repeats.
    assert [[c["bookingId"] for c in a["changes"]] for a in seen] == [[held["id"]], [sentinel["id"]]]
    assert seen[1]["version"] == seen[0]["version"] + 1
    fence = (await sql("SELECT fence FROM bookings WHERE id = $1", held["id"]))[0]["fence"]
    assert f"expire:{held['id']}:{fence}" in await expiry_schedules(engine)
    assert await leaked(engine, before_timers) == []
    print(f"\nreserve: {await fired(counter) - 1} serialization failures retried, committed once")


async def test_a_confirm_aborted_three_times_by_deadlocks_succeeds(
    gql: GraphQL, engine: Engine, faults: list[str]
) -> None:
    alice = token("pg-dead-a")
    slot_id = await gql.create_slot(capacity=1)
    held = await gql.reserve(alice, slot_id, "k")
    counter = await inject(faults, slot_id, "40P01", failures=3)
    before = await retries(gql, "40P01")

    async with Announcements(engine, slot_id) as announced:
        confirmed = await gql.confirm(alice, held["id"])
        seen = await announced.until(held["id"])

    assert confirmed["state"] == "CONFIRMED"
    assert await fired(counter) == 4
    assert await retries(gql, "40P01") - before == 3
    assert await events_of(held["id"]) == ["hold", "confirm"]
    assert [c["event"] for a in seen for c in a["changes"]] == ["confirm"]


async def test_a_cancel_whose_promotion_fails_is_rerun_whole_and_promotes_once(
    gql: GraphQL, engine: Engine, faults: list[str]
) -> None:
    alice, bob = token("pg-cancel-a"), token("pg-cancel-b")
    slot_id = await gql.create_slot(capacity=1)
    held = await gql.reserve(alice, slot_id, "k")
    waiter = await gql.reserve(bob, slot_id, "k")
    # Only the promotion fails: the cancel before it in the same transaction must roll back too.
    counter = await inject(faults, slot_id, "40001", failures=2, only_state="RESERVED")
    before_timers = await expiry_schedules(engine)

    async with Announcements(engine, slot_id) as announced:
        cancelled = await gql.cancel(alice, held["id"], "changed my mind")
        seen = await announced.until(waiter["id"])

    assert cancelled["state"] == "CANCELLED"
    assert await fired(counter) == 3
    assert await events_of(held["id"]) == ["hold", "cancel"]
    assert await events_of(waiter["id"]) == ["queue", "promote"]
    assert [(c["bookingId"], c["event"]) for a in seen for c in a["changes"]] == [
        (held["id"], "cancel"),
        (waiter["id"], "promote"),
    ]
    new_timers = await expiry_schedules(engine) - before_timers
    assert [k for k in new_timers if waiter["id"] in k] != []
    assert await leaked(engine, before_timers) == []


async def test_a_failure_that_never_clears_ends_after_bounded_attempts_with_a_masked_error(
    gql: GraphQL, engine: Engine, faults: list[str]
) -> None:
    slot_id = await gql.create_slot(capacity=1)
    counter = await inject(faults, slot_id, "40001", failures=1_000)
    mutation = f"""mutation($s: ID!, $k: String!) {{
        reserveSlot(slotId: $s, idempotencyKey: $k) {{ {BOOKING_FIELDS} }} }}"""
    holder = token("pg-stuck")

    began = time.monotonic()
    response = await gql.post(mutation, {"s": slot_id, "k": "k"}, as_=holder)
    took = time.monotonic() - began

    assert response.status_code == 200
    body = response.json()
    assert [e["message"] for e in body["errors"]] == ["Internal error."]
    for leak in ("injected", "serialization", "Traceback", "asyncpg", "40001"):
        assert leak not in response.text
    assert await fired(counter) == TRANSACTION_ATTEMPTS
    assert (await sql("SELECT count(*) AS n FROM bookings WHERE slot_id = $1", slot_id))[0]["n"] == 0
    assert await engine.redis.zcard(engine.keys(slot_id).holds) == 0  # no hold left behind in Redis

    await sql("DELETE FROM test_injected_faults WHERE slot_id = $1", slot_id)
    again = await gql.reserve(holder, slot_id, "k")
    assert again["state"] == "RESERVED"
    print(f"\npersistent 40001: gave up after {TRANSACTION_ATTEMPTS} attempts in {took * 1000:.0f} ms")


async def test_a_real_deadlock_between_two_transactions_is_retried(
    gql: GraphQL, engine: Engine, settings: Settings, faults: list[str]
) -> None:
    alice = token("pg-real-deadlock")
    slot_a, slot_b = await gql.create_slot(capacity=1), await gql.create_slot(capacity=1)
    held = await gql.reserve(alice, slot_a, "k")
    # The engine's confirm locks slot A, then (through the trigger) wants slot B; the other
    # transaction holds B and then wants A: a cycle PostgreSQL must break.
    await sql("INSERT INTO test_lock_other (slot_id, other) VALUES ($1, $2)", slot_a, slot_b)
    before = await retries(gql, "40P01")
    assert settings.database_url
    other = await asyncpg.connect(settings.database_url)
    try:
        transaction = other.transaction()
        await transaction.start()
        # The engine's session (deadlock_timeout 1 s) must be the one that notices the cycle.
        await other.execute("SET LOCAL deadlock_timeout = '20s'")
        await other.execute("SELECT 1 FROM slots WHERE id = $1 FOR UPDATE", uuid.UUID(slot_b))
        began = time.monotonic()
        confirming = asyncio.create_task(gql.confirm(alice, held["id"]))
        await eventually(
            lambda: other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND pid <> pg_backend_pid()"
            ),
            lambda waiting: waiting >= 1,
        )
        await other.execute("SELECT 1 FROM slots WHERE id = $1 FOR UPDATE", uuid.UUID(slot_a))
        await transaction.commit()
        confirmed = await asyncio.wait_for(confirming, 30)
        took = time.monotonic() - began
    finally:
        await other.close()
        await sql("DELETE FROM test_lock_other WHERE slot_id = $1", slot_a)

    assert confirmed["state"] == "CONFIRMED"
    assert await retries(gql, "40P01") - before >= 1
    assert await events_of(held["id"]) == ["hold", "confirm"]
    assert (await gql.slot(slot_a) or {}).get("confirmed") == 1
    print(f"\nreal deadlock: broken by PostgreSQL, confirm retried and CONFIRMED in {took:.2f} s")
