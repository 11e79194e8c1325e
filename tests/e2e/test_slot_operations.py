"""Issue 12, items 1-3: extendHold, closeSlot / reopenSlot and updateSlot on the running engine,
with a worker and a scheduler ending holds, and listeners on a served API process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from slotengine.config import Settings
from slotengine.service.engine import Engine
from slotengine.service.timers import expire_hold_schedule
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, BOOKING_FIELDS, GraphQL, token
from tests.e2e.test_workers import sql, state_of, stream_drained, trail, wait_for_event
from tests.e2e.ws import GraphQLWebSocket
from tests.processes import ApiProcess

pytestmark = pytest.mark.usefixtures("workers")

EXTEND = f"""mutation($b: ID!, $s: Int) {{ extendHold(bookingId: $b, seconds: $s) {{ {BOOKING_FIELDS}
  ... on ExtensionLimitReached {{ maxExtensions maxHoldSeconds }}
  ... on InvalidTransition {{ fromState event }}
  ... on HoldExpired {{ expiredAt }}
  ... on ValidationError {{ field }} }} }}"""
SLOT_FIELDS = """__typename
  ... on Slot { id capacity holdSeconds available held queueLength closed maxExtensions maxHoldSeconds }
  ... on ValidationError { field message }
  ... on Error { message }"""
CLOSE = f"mutation($s: ID!, $r: String) {{ closeSlot(slotId: $s, reason: $r) {{ {SLOT_FIELDS} }} }}"
REOPEN = f"mutation($s: ID!) {{ reopenSlot(slotId: $s) {{ {SLOT_FIELDS} }} }}"
UPDATE = f"""mutation($s: ID!, $i: UpdateSlotInput!) {{ updateSlot(slotId: $s, input: $i) {{
  {SLOT_FIELDS} }} }}"""
QUEUE_POSITION = """subscription($b: ID!) { queuePosition(bookingId: $b) {
  state position estimatedWaitSeconds expiresAt } }"""
BOOKING_UPDATES = "subscription($b: ID!) { bookingUpdates(bookingId: $b) { state expiresAt } }"
SLOT_STATUS = "subscription($s: ID!) { slotStatus(slotId: $s) { capacity available queueLength closed } }"


@pytest.fixture
async def api(api_processes: list[ApiProcess]) -> AsyncIterator[ApiProcess]:
    """A served API process, for listeners over WebSocket (mutations go through the in-process app)."""
    yield api_processes[0]


async def extend(
    gql: GraphQL, holder_token: str, booking_id: str, seconds: int | None = None
) -> dict[str, Any]:
    data = await gql.run(EXTEND, {"b": booking_id, "s": seconds}, as_=holder_token)
    result: dict[str, Any] = data["extendHold"]
    return result


async def slot_call(gql: GraphQL, query: str, variables: dict[str, Any], as_: str = ADMIN) -> dict[str, Any]:
    data = await gql.run(query, variables, as_=as_)
    result: dict[str, Any] = next(iter(data.values()))
    return result


async def fence_of(booking_id: str) -> int:
    return int((await sql("SELECT fence FROM bookings WHERE id = $1", booking_id))[0]["fence"])


async def timer_pending(engine: Engine, booking_id: str, fence: int, expires_at: datetime) -> bool:
    """Whether the expiry timer of this hold and fence is still set (not yet sent to a worker)."""
    schedule_id = expire_hold_schedule(booking_id, fence, expires_at).schedule_id  # type: ignore[arg-type]
    keys = engine.timers.source.keys_of(schedule_id)
    return bool(await engine.redis.hexists(keys.tasks, schedule_id))


async def test_an_extended_hold_outlives_its_old_timer_then_lapses_on_its_new_expiry(
    gql: GraphQL, engine: Engine, settings: Settings
) -> None:
    slot_id = await gql.create_slot(hold_seconds=3)  # maxHoldSeconds: 9 by default
    alice = token("ext-alice")
    held = await gql.reserve(alice, slot_id, "k")
    waiter = await gql.reserve(token("ext-bob"), slot_id, "k")
    old_fence, old_expiry = await fence_of(held["id"]), datetime.fromisoformat(held["expiresAt"])
    assert await timer_pending(engine, held["id"], old_fence, old_expiry)

    extended = await extend(gql, alice, held["id"], 60)  # cut to the slot's cap: 9 s in all
    assert extended["__typename"] == "Booking", extended
    new_expiry = datetime.fromisoformat(extended["expiresAt"])
    assert extended["state"] == "RESERVED" and new_expiry > old_expiry
    assert await fence_of(held["id"]) > old_fence

    # The old timer fires (the scheduler sends it, a worker runs it) and the hold stays.
    await eventually(
        lambda: timer_pending(engine, held["id"], old_fence, old_expiry), lambda p: not p, within=20
    )
    await eventually(lambda: stream_drained(engine.redis, settings), bool, within=20)
    assert datetime.now(new_expiry.tzinfo) < new_expiry, "the test ran too slowly to tell"
    assert await state_of(held["id"]) == "RESERVED"
    assert await state_of(waiter["id"]) == "PENDING"

    # The new timer ends it, never before its new expiry, and the waiter gets the unit.
    await wait_for_event(waiter["id"], "promote", within=30)
    steps = await trail(held["id"])
    assert [(t["from_state"], t["to_state"], t["event"]) for t in steps] == [
        (None, "RESERVED", "hold"),
        ("RESERVED", "RESERVED", "extend"),
        ("RESERVED", "EXPIRED", "expire"),
    ]
    assert steps[1]["actor"] == "ext-alice"
    assert steps[2]["at"] >= steps[2]["expires_at"] == new_expiry


async def test_extension_refusals_are_typed_answers(gql: GraphQL) -> None:
    slot_id = await gql.create_slot(hold_seconds=120)
    alice, bob = token("extr-alice"), token("extr-bob")
    held = await gql.reserve(alice, slot_id, "k")
    waiting = await gql.reserve(bob, slot_id, "k")

    assert (await extend(gql, bob, held["id"]))["__typename"] == "BookingNotFound"
    assert (await extend(gql, ADMIN, held["id"]))["__typename"] == "NotHolder"
    pending = await extend(gql, bob, waiting["id"])
    assert (pending["__typename"], pending["fromState"], pending["event"]) == (
        "InvalidTransition",
        "PENDING",
        "extend",
    )
    assert (await extend(gql, alice, held["id"], 0))["field"] == "seconds"
    response = await gql.post(EXTEND, {"b": held["id"], "s": None})
    assert response.json()["data"]["extendHold"]["__typename"] == "NotAuthorized"

    first = await extend(gql, alice, held["id"])  # the slot's holdSeconds from now
    assert first["__typename"] == "Booking"
    again = await extend(gql, alice, held["id"], 300)
    assert (again["__typename"], again["maxExtensions"], again["maxHoldSeconds"]) == (
        "ExtensionLimitReached",
        1,
        360,
    )
    history = (await gql.booking(alice, held["id"]))["history"]  # type: ignore[index]
    assert [t["event"] for t in history] == ["hold", "extend"]  # refusals change nothing

    # A hold that lapsed cannot be extended: HoldExpired, as for confirm.
    short = await gql.create_slot(hold_seconds=1)
    carol = token("extr-carol")
    lapsing = await gql.reserve(carol, short, "k")
    await wait_for_event(lapsing["id"], "expire")
    assert (await extend(gql, carol, lapsing["id"], 60))["__typename"] == "HoldExpired"


async def test_closing_a_slot_expires_its_waiters_who_hear_it_and_holds_may_still_confirm(
    gql: GraphQL, api: ApiProcess
) -> None:
    slot_id = await gql.create_slot(capacity=1)
    alice, bob, carol = token("close-alice"), token("close-bob"), token("close-carol")
    held = await gql.reserve(alice, slot_id, "k")
    bob_booking = await gql.reserve(bob, slot_id, "k")
    carol_booking = await gql.reserve(carol, slot_id, "k")

    async with (
        GraphQLWebSocket(api.ws, bob) as bob_ws,
        GraphQLWebSocket(api.ws, carol) as carol_ws,
        GraphQLWebSocket(api.ws, ADMIN) as board,
    ):
        bob_op = await bob_ws.subscribe(QUEUE_POSITION, {"b": bob_booking["id"]})
        carol_op = await carol_ws.subscribe(BOOKING_UPDATES, {"b": carol_booking["id"]})
        board_op = await board.subscribe(SLOT_STATUS, {"s": slot_id})
        assert (await bob_ws.next(bob_op))["queuePosition"]["position"] == 1
        assert (await carol_ws.next(carol_op))["bookingUpdates"]["state"] == "PENDING"
        assert (await board.next(board_op))["slotStatus"]["closed"] is False

        closed = await slot_call(gql, CLOSE, {"s": slot_id, "r": "storm warning"})
        assert (closed["__typename"], closed["closed"], closed["queueLength"]) == ("Slot", True, 0)

        assert (await bob_ws.next(bob_op))["queuePosition"]["state"] == "EXPIRED"
        assert (await carol_ws.next(carol_op))["bookingUpdates"]["state"] == "EXPIRED"
        status = (await board.next(board_op))["slotStatus"]
        assert (status["closed"], status["queueLength"]) == (True, 0)

    history = (await gql.booking(bob, bob_booking["id"]))["history"]  # type: ignore[index]
    assert [(t["event"], t["toState"], t["actor"], t["reason"]) for t in history][-1] == (
        "close",
        "EXPIRED",
        "admin",
        "storm warning",
    )
    refused = await gql.reserve(token("close-dave"), slot_id, "k")
    assert refused["__typename"] == "SlotClosed"
    assert (await gql.confirm(alice, held["id"]))["state"] == "CONFIRMED"

    reopened = await slot_call(gql, REOPEN, {"s": slot_id})
    assert (reopened["__typename"], reopened["closed"]) == ("Slot", False)
    again = await gql.reserve(token("close-dave"), slot_id, "k2")
    assert (again["state"], again["queuePosition"]) == ("PENDING", 1)


async def test_growing_the_capacity_offers_the_new_units_to_the_queue_in_fifo_order(
    gql: GraphQL, api: ApiProcess
) -> None:
    slot_id = await gql.create_slot(capacity=1)
    await gql.reserve(token("grow-holder"), slot_id, "k")
    waiters = [await gql.reserve(token(f"grow-w{i}"), slot_id, "k") for i in range(3)]
    async with GraphQLWebSocket(api.ws, ADMIN) as board:
        op = await board.subscribe(SLOT_STATUS, {"s": slot_id})
        assert (await board.next(op))["slotStatus"]["capacity"] == 1

        grown = await slot_call(gql, UPDATE, {"s": slot_id, "i": {"capacity": 3}})
        assert (grown["capacity"], grown["available"], grown["queueLength"]) == (3, 0, 1)
        status = (await board.next(op))["slotStatus"]
        assert (status["capacity"], status["available"], status["queueLength"]) == (3, 0, 1)

    states = [await state_of(w["id"]) for w in waiters]
    assert states == ["RESERVED", "RESERVED", "PENDING"]
    promoted = await sql(
        "SELECT t.booking_id::text AS booking, t.actor FROM transitions t"
        " WHERE t.booking_id = ANY($1::uuid[]) AND t.event = 'promote' ORDER BY t.id",
        [w["id"] for w in waiters],
    )
    assert [(p["booking"], p["actor"]) for p in promoted] == [(w["id"], "system") for w in waiters[:2]]
    last = await gql.booking(token("grow-w2"), waiters[2]["id"])
    assert last is not None and last["queuePosition"] == 1


async def test_shrinking_below_the_units_in_use_is_refused_naming_the_count(gql: GraphQL) -> None:
    slot_id = await gql.create_slot(capacity=3)
    people = [token(f"shrink-{i}") for i in range(3)]
    bookings = [await gql.reserve(t, slot_id, "k") for t in people]
    await gql.cancel(people[1], bookings[1]["id"])  # units 1 and 3 stay in use

    refused = await slot_call(gql, UPDATE, {"s": slot_id, "i": {"capacity": 1}})
    assert (refused["__typename"], refused["field"]) == ("ValidationError", "capacity")
    assert "2 units" in refused["message"]

    shrunk = await slot_call(gql, UPDATE, {"s": slot_id, "i": {"capacity": 2, "holdSeconds": 60}})
    assert (shrunk["capacity"], shrunk["holdSeconds"], shrunk["available"]) == (2, 60, 0)
    assert shrunk["maxHoldSeconds"] == 180  # the default cap follows holdSeconds
    rows = await sql(
        "SELECT unit FROM bookings WHERE id = ANY($1::uuid[]) AND state = 'RESERVED' ORDER BY unit",
        [bookings[0]["id"], bookings[2]["id"]],
    )
    assert [r["unit"] for r in rows] == [1, 2]  # the unit above the new capacity moved down


async def test_slot_operations_are_for_admins_and_answer_typed_refusals(gql: GraphQL) -> None:
    slot_id = await gql.create_slot()
    holder = token("ops-holder")
    for query, variables in (
        (CLOSE, {"s": slot_id, "r": None}),
        (REOPEN, {"s": slot_id}),
        (UPDATE, {"s": slot_id, "i": {"capacity": 2}}),
    ):
        assert (await slot_call(gql, query, variables, as_=holder))["__typename"] == "NotAuthorized"
        response = await gql.post(query, variables)
        assert next(iter(response.json()["data"].values()))["__typename"] == "NotAuthorized"
    missing = "00000000-0000-4000-8000-000000000000"
    assert (await slot_call(gql, CLOSE, {"s": missing, "r": None}))["__typename"] == "SlotNotFound"
    assert (await slot_call(gql, UPDATE, {"s": "nope", "i": {}}))["field"] == "slotId"
    bad = await slot_call(gql, UPDATE, {"s": slot_id, "i": {"maxHoldSeconds": 10}})
    assert (bad["__typename"], bad["field"]) == ("ValidationError", "maxHoldSeconds")
    limits = await slot_call(gql, UPDATE, {"s": slot_id, "i": {"maxExtensions": 3, "maxHoldSeconds": 600}})
    assert (limits["maxExtensions"], limits["maxHoldSeconds"], limits["capacity"]) == (3, 600, 1)
    assert (await gql.slot(slot_id)) is not None


async def test_a_waiters_estimate_waits_for_an_extended_hold(gql: GraphQL, api: ApiProcess) -> None:
    slot_id = await gql.create_slot(hold_seconds=600)  # holds may last 1,800 s in all
    first, second, third = token("est-a"), token("est-b"), token("est-c")
    gone = await gql.reserve(first, slot_id, "k")
    held = await gql.reserve(second, slot_id, "k")
    await gql.cancel(first, gone["id"])  # a hold that ended: the slot has a record; b holds now
    waiter = await gql.reserve(third, slot_id, "k")

    async with GraphQLWebSocket(api.ws, third) as ws, GraphQLWebSocket(api.ws, second) as holder_ws:
        op = await ws.subscribe(QUEUE_POSITION, {"b": waiter["id"]})
        mine = await holder_ws.subscribe(BOOKING_UPDATES, {"b": held["id"]})
        before = (await ws.next(op))["queuePosition"]
        hold_before = (await holder_ws.next(mine))["bookingUpdates"]
        extended = await extend(gql, second, held["id"], 1_500)
        assert extended["__typename"] == "Booking"
        after = (await ws.next(op))["queuePosition"]
        hold_after = (await holder_ws.next(mine))["bookingUpdates"]

    # The holder hears the new expiry (same state): bookingUpdates follows extensions too.
    assert hold_before["state"] == hold_after["state"] == "RESERVED"
    assert hold_after["expiresAt"] == extended["expiresAt"] != hold_before["expiresAt"]

    assert before["position"] == after["position"] == 1
    # Nobody moves before the one hold ends: about 600 s left, then about 1,500 s.
    assert 500 < before["estimatedWaitSeconds"] <= 600
    assert 1_400 < after["estimatedWaitSeconds"] <= 1_500
