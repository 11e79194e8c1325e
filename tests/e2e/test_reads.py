"""Reads are bounded and cheap: keyset pages, a bounded onlyAvailable scan, a fixed number of round
trips whatever the page size, no lock to read a slot that ended, audit trails as a holder may see them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from slotengine.config import Settings
from slotengine.store.database import connection
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, GraphQL, token
from tests.round_trips import counting_round_trips

PAGE = """query($r: String, $first: Int!, $after: String, $only: Boolean!) {
  slotPage(resource: $r, first: $first, after: $after, onlyAvailable: $only) {
    items { id startsAt available held confirmed queueLength closed } endCursor hasNextPage } }"""
SLOTS = """query($r: String, $first: Int!, $after: String, $only: Boolean!) {
  slots(resource: $r, first: $first, after: $after, onlyAvailable: $only) {
    id available held confirmed queueLength } }"""
MY_BOOKINGS = """query($first: Int!) { myBookings(first: $first) {
  id state queuePosition history { fromState toState event actor at } } }"""


def resource() -> str:
    return f"reads-{uuid.uuid4().hex[:8]}"


async def create_slots(
    gql: GraphQL, name: str, count: int, *, first_in: timedelta = timedelta(days=1)
) -> list[str]:
    ids = []
    for i in range(count):  # one after another: start order is creation order
        ids.append(await gql.create_slot(resource=name, starts_in=first_in + timedelta(minutes=i)))
    return ids


async def page(
    gql: GraphQL, name: str, first: int, after: str | None = None, *, only: bool = False
) -> dict[str, Any]:
    data = await gql.run(PAGE, {"r": name, "first": first, "after": after, "only": only}, as_=ADMIN)
    result: dict[str, Any] = data["slotPage"]
    return result


async def test_pages_walk_every_slot_once_in_start_order(gql: GraphQL) -> None:
    name = resource()
    created = await create_slots(gql, name, 7)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        current = await page(gql, name, 3, after)
        seen += [s["id"] for s in current["items"]]
        pages += 1
        if not current["hasNextPage"]:
            break
        after = current["endCursor"]
    listed = await gql.run(SLOTS, {"r": name, "first": 3, "after": after, "only": False}, as_=ADMIN)

    assert seen == created and pages == 3
    assert [s["id"] for s in listed["slots"]] == created[6:]  # `slots` takes the same cursor


@pytest.mark.parametrize(
    "cursor", ["", "not-a-cursor", "Zm9vfGJhcg==", "\x00", "é" * 10, "A" * 5_000, "MjAyNi0wMS0wMXx4"]
)
async def test_a_cursor_the_engine_did_not_give_out_is_a_validation_error(gql: GraphQL, cursor: str) -> None:
    response = await gql.post(PAGE, {"r": "x", "first": 3, "after": cursor, "only": False}, as_=ADMIN)
    body = response.json()
    assert response.status_code == 200
    assert body["errors"][0]["extensions"]["code"] == "ValidationError"
    assert body["errors"][0]["message"].startswith("after: ")


async def test_only_available_leaves_out_full_closed_and_started_slots(gql: GraphQL) -> None:
    name = resource()
    started = await gql.create_slot(resource=name, starts_in=-timedelta(minutes=5))
    full, free = await create_slots(gql, name, 2)
    await gql.reserve(token("reads-full"), full, "k")

    available = await page(gql, name, 10, only=True)

    assert [s["id"] for s in available["items"]] == [free]
    everything = [s["id"] for s in (await page(gql, name, 10))["items"]]
    assert everything == [started, full, free]


async def test_only_available_scans_a_bounded_window_and_hands_out_a_cursor_past_it(gql: GraphQL) -> None:
    name = resource()
    full = await create_slots(gql, name, 9)
    free = await gql.create_slot(resource=name, starts_in=timedelta(days=2))
    for i, slot_id in enumerate(full):
        await gql.reserve(token(f"reads-filler-{i}"), slot_id, "k")

    # first=2 looks at 2 x 4 = 8 slots at most: all full, so an empty page that says "go on".
    first = await page(gql, name, 2, only=True)
    second = await page(gql, name, 2, first["endCursor"], only=True)

    assert first["items"] == [] and first["hasNextPage"] is True
    assert [s["id"] for s in second["items"]] == [free]
    assert second["hasNextPage"] is False


async def test_slots_of_a_page_of_fifty_cost_one_postgres_and_one_redis_round_trip(
    gql: GraphQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = resource()
    slots = await create_slots(gql, name, 51)
    for i, slot_id in enumerate(slots[:10]):
        await gql.reserve(token(f"reads-rt-{i}"), slot_id, "k")

    with counting_round_trips(monkeypatch) as trips:
        data = await gql.run(SLOTS, {"r": name, "first": 50, "after": None, "only": False}, as_=ADMIN)
        listed = (trips.postgres, trips.redis)
        trips.reset()
        await gql.run(SLOTS, {"r": name, "first": 50, "after": None, "only": True}, as_=ADMIN)
        available = (trips.postgres, trips.redis)

    assert len(data["slots"]) == 50 and sum(s["held"] for s in data["slots"]) == 10
    # PostgreSQL: the page with its counts. Redis: the caller's read allowance.
    assert listed == (1, 1), trips.statements
    assert available == (1, 1), trips.statements


async def test_my_bookings_with_history_cost_two_postgres_round_trips_for_fifty(
    gql: GraphQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = resource()
    slots = await create_slots(gql, name, 50)
    holder = token(f"reads-many-{uuid.uuid4().hex[:6]}")
    for slot_id in slots:
        await gql.reserve(holder, slot_id, f"k-{slot_id}")
    for slot_id in slots[:25]:
        await gql.reserve(token("reads-ahead"), slot_id, f"k-{slot_id}")  # some of ours wait

    with counting_round_trips(monkeypatch) as trips:
        data = await gql.run(MY_BOOKINGS, {"first": 50}, as_=holder)

    assert len(data["myBookings"]) == 50
    assert all(b["history"] and b["history"][0]["fromState"] is None for b in data["myBookings"])
    # The bookings with queue positions, then every audit trail in one batch.
    assert (trips.postgres, trips.redis) == (2, 1), trips.statements


async def test_a_slot_that_ended_is_read_without_taking_its_lock(gql: GraphQL, settings: Settings) -> None:
    slot_id = await gql.create_slot(starts_in=-timedelta(days=2))
    # A hold nobody expired (no worker ran): reading it must not try to settle it.
    await connection().execute_query(
        "INSERT INTO bookings (id, slot_id, holder, state, unit, fence, expires_at, idempotency_key)"
        " VALUES ($1, $2, 'reads-stranded', 'RESERVED', 1, 1, now() - interval '2 days', 'k')",
        [uuid.uuid4(), uuid.UUID(slot_id)],
    )
    assert settings.database_url is not None
    locker = await asyncpg.connect(settings.database_url.replace("postgres://", "postgresql://", 1))
    try:
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM slots WHERE id = $1 FOR UPDATE", uuid.UUID(slot_id))
            # Had the read wanted the lock, it would wait for this transaction until the deadline.
            slot = await asyncio.wait_for(gql.slot(slot_id), timeout=20)
            listed = await asyncio.wait_for(page(gql, "dr-lee", 200), timeout=20)
    finally:
        await locker.close()

    assert slot is not None
    assert (slot["held"], slot["confirmed"], slot["available"], slot["queueLength"]) == (0, 0, 1, 0)
    assert listed is not None


async def test_a_holder_sees_an_admins_actions_as_admin_and_an_admin_sees_the_name(gql: GraphQL) -> None:
    alice, ops = token("reads-actor-alice"), token("ops-carol", admin=True)
    slot_id = await gql.create_slot()
    held = await gql.reserve(alice, slot_id, "k")
    await gql.cancel(ops, held["id"], "room flooded")

    as_holder = await gql.booking(alice, held["id"])
    as_admin = await gql.booking(ops, held["id"])

    assert as_holder is not None and as_admin is not None
    assert [h["actor"] for h in as_holder["history"]] == ["reads-actor-alice", "admin"]
    assert [h["actor"] for h in as_admin["history"]] == ["reads-actor-alice", "ops-carol"]
    assert as_holder["history"][-1]["reason"] == "room flooded"


async def test_a_lapsed_hold_on_a_live_slot_still_reads_as_expired_and_promotes_the_queue(
    gql: GraphQL,
) -> None:
    slot_id = await gql.create_slot(hold_seconds=1)
    first = await gql.reserve(token("reads-lapse-a"), slot_id, "k")
    waiter = await gql.reserve(token("reads-lapse-b"), slot_id, "k")
    deadline = datetime.fromisoformat(first["expiresAt"])

    async def now_past() -> bool:
        rows = await connection().execute_query_dict("SELECT now() > $1::timestamptz AS p", [deadline])
        return bool(rows[0]["p"])

    await eventually(now_past, bool)
    promoted = await gql.booking(token("reads-lapse-b"), waiter["id"])

    assert promoted is not None and promoted["state"] == "RESERVED"
    assert datetime.fromisoformat(promoted["expiresAt"]) > datetime.now(UTC) - timedelta(seconds=5)
