"""Issue 4: live slot status, queue positions and booking updates over graphql-transport-ws,
against two real API processes sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from slotengine.service.engine import Engine
from tests.deadlines import eventually
from tests.e2e.conftest import ApiProcess, GraphQL, token
from tests.e2e.ws import PROTOCOL, GraphQLWebSocket

SLOT_STATUS = "subscription($s: ID!) { slotStatus(slotId: $s) { held confirmed queueLength available } }"
QUEUE_POSITION = """subscription($b: ID!) { queuePosition(bookingId: $b) {
  state position ahead estimatedWaitSeconds expiresAt } }"""
BOOKING_UPDATES = (
    "subscription($b: ID!) { bookingUpdates(bookingId: $b) { id state expiresAt queuePosition } }"
)


@pytest.fixture
async def via_a(api_processes: list[ApiProcess]) -> AsyncIterator[GraphQL]:
    async with httpx.AsyncClient(base_url=api_processes[0].base, timeout=30) as http:
        yield GraphQL(http)


async def test_a_waiter_sees_3_2_1_then_their_hold_as_people_ahead_cancel(
    via_a: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await via_a.create_slot()
    people = [token(f"line3-{i}") for i in range(4)]
    bookings = [await via_a.reserve(t, slot_id, "k") for t in people]
    waiter_token, waiter = people[3], bookings[3]
    assert waiter["queuePosition"] == 3

    async with GraphQLWebSocket(api_processes[1].ws, waiter_token) as ws:
        op = await ws.subscribe(QUEUE_POSITION, {"b": waiter["id"]})
        seen = [(await ws.next(op))["queuePosition"]]
        for who in (1, 2, 0):  # the two waiting ahead leave, then the holder cancels
            await via_a.cancel(people[who], bookings[who]["id"])
            seen.append((await ws.next(op))["queuePosition"])

    assert [(s["state"], s["position"], s["ahead"]) for s in seen] == [
        ("PENDING", 3, 2),
        ("PENDING", 2, 1),
        ("PENDING", 1, 0),
        ("RESERVED", None, None),
    ]
    assert seen[-1]["expiresAt"] is not None
    assert all(s["expiresAt"] is None for s in seen[:-1])


@pytest.mark.usefixtures("workers")
async def test_a_waiter_is_offered_the_hold_when_the_one_ahead_lapses(
    via_a: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await via_a.create_slot(hold_seconds=2)
    await via_a.reserve(token("lapse-holder"), slot_id, "k")
    waiter_token = token("lapse-waiter")
    waiter = await via_a.reserve(waiter_token, slot_id, "k")

    async with GraphQLWebSocket(api_processes[1].ws, waiter_token) as ws:
        op = await ws.subscribe(QUEUE_POSITION, {"b": waiter["id"]})
        first = (await ws.next(op))["queuePosition"]
        offer = (await ws.next(op, within=20))["queuePosition"]

    assert (first["state"], first["position"]) == ("PENDING", 1)
    assert offer["state"] == "RESERVED" and offer["expiresAt"]


async def test_slot_status_listeners_on_both_processes_see_every_change_in_order(
    via_a: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await via_a.create_slot()
    alice, bob = token("status-alice"), token("status-bob")
    listeners = [GraphQLWebSocket(p.ws, token("status-watcher")) for p in api_processes]
    async with listeners[0] as on_a, listeners[1] as on_b:
        ops = [await ws.subscribe(SLOT_STATUS, {"s": slot_id}) for ws in (on_a, on_b)]
        firsts = [await ws.next(op) for ws, op in zip((on_a, on_b), ops, strict=True)]
        held = await via_a.reserve(alice, slot_id, "k")
        queued = await via_a.reserve(bob, slot_id, "k")
        await via_a.confirm(alice, held["id"])
        await via_a.cancel(alice, held["id"])
        await via_a.cancel(bob, queued["id"])
        seen = [
            [firsts[i]["slotStatus"]] + [(await ws.next(op))["slotStatus"] for _ in range(5)]
            for i, (ws, op) in enumerate(zip((on_a, on_b), ops, strict=True))
        ]

    expected = [
        (0, 0, 0, 1),  # (held, confirmed, queueLength, available)
        (1, 0, 0, 0),  # alice holds
        (1, 0, 1, 0),  # bob queues
        (0, 1, 1, 0),  # alice confirms
        (1, 0, 0, 0),  # alice cancels: bob is offered the unit
        (0, 0, 0, 1),  # bob cancels
    ]
    for stream in seen:
        assert [(s["held"], s["confirmed"], s["queueLength"], s["available"]) for s in stream] == expected


async def test_booking_updates_emit_each_state_change(
    via_a: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await via_a.create_slot()
    first, second = token("upd-first"), token("upd-second")
    held = await via_a.reserve(first, slot_id, "k")
    queued = await via_a.reserve(second, slot_id, "k")

    async with GraphQLWebSocket(api_processes[1].ws, second) as ws:
        op = await ws.subscribe(BOOKING_UPDATES, {"b": queued["id"]})
        states = [(await ws.next(op))["bookingUpdates"]["state"]]
        await via_a.cancel(first, held["id"])
        states.append((await ws.next(op))["bookingUpdates"]["state"])
        await via_a.confirm(second, queued["id"])
        states.append((await ws.next(op))["bookingUpdates"]["state"])
        await via_a.cancel(second, queued["id"])
        states.append((await ws.next(op))["bookingUpdates"]["state"])
        done = await ws.message(op)

    assert states == ["PENDING", "RESERVED", "CONFIRMED", "CANCELLED"]
    assert done["type"] == "complete"


async def test_the_estimated_wait_comes_from_the_slots_own_record(
    via_a: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await via_a.create_slot()
    first = token("est-first")
    fresh = await via_a.reserve(first, slot_id, "k")
    waiter_token = token("est-waiter")
    waiter = await via_a.reserve(waiter_token, slot_id, "k")

    async with GraphQLWebSocket(api_processes[1].ws, waiter_token) as ws:
        op = await ws.subscribe(QUEUE_POSITION, {"b": waiter["id"]})
        before = (await ws.next(op))["queuePosition"]
    await via_a.cancel(first, fresh["id"])  # one released hold: now there is a record
    late = token("est-late")
    behind = await via_a.reserve(late, slot_id, "k")
    async with GraphQLWebSocket(api_processes[1].ws, late) as ws:
        op = await ws.subscribe(QUEUE_POSITION, {"b": behind["id"]})
        after = (await ws.next(op))["queuePosition"]

    assert before["estimatedWaitSeconds"] is None  # no hold has ended on this slot yet
    assert after["position"] == 1
    assert after["estimatedWaitSeconds"] is not None and after["estimatedWaitSeconds"] >= 0


async def test_connections_without_a_valid_token_are_refused(api_processes: list[ApiProcess]) -> None:
    for credentials in (None, "not-a-token"):
        async with websockets.connect(api_processes[0].ws, subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
            payload = {"Authorization": f"Bearer {credentials}"} if credentials else {}
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_a_holder_cannot_watch_someone_elses_booking(
    via_a: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await via_a.create_slot()
    owner = await via_a.reserve(token("private-owner"), slot_id, "k")

    async with GraphQLWebSocket(api_processes[1].ws, token("nosy")) as ws:
        refused = [
            await ws.message(await ws.subscribe(query, {"b": owner["id"]}))
            for query in (QUEUE_POSITION, BOOKING_UPDATES)
        ]

    for message in refused:
        assert message["payload"]["data"] is None, message
        assert message["payload"]["errors"][0]["extensions"]["code"] == "BookingNotFound"


async def test_a_thousand_listeners_coming_and_going_leave_no_redis_subscription(
    via_a: GraphQL, api_processes: list[ApiProcess], engine: Engine
) -> None:
    slot_id = await via_a.create_slot()
    channel = engine.channel(slot_id)
    watcher = token("churn")

    async def cycle(i: int) -> None:
        async with GraphQLWebSocket(api_processes[i % 2].ws, watcher) as ws:
            op = await ws.subscribe(SLOT_STATUS, {"s": slot_id})
            await ws.next(op)

    for start in range(0, 1000, 50):
        await asyncio.gather(*(cycle(i) for i in range(start, start + 50)))

    async def subscribers() -> int:
        counts = dict(await engine.redis.pubsub_numsub(channel))
        return int(counts.get(channel, 0))

    assert await eventually(subscribers, lambda n: n == 0, within=10) == 0
