"""Resume scenario: a client drops, 1,000 changes happen, it comes back with its last cursors.

One slot of capacity 1: a hold, 200 waiters, then the follower's booking at place 201. The client
follows the slot (slotStatus) and its booking (queuePosition), then drops. While it is away the
200 waiters ahead leave and 400 newcomers join and leave behind it: 1,000 changes, each its own
version. Back on a fresh socket it resumes both subscriptions `after` its last cursors: timed from
sending the subscription to the last replayed message (1,000 slot states; the 200 moves of its
place, for which the API walks the same 1,000 versions). Beside it, in the same round, the same
subscriptions started without a cursor: the time to their first message (the slot read fresh).
Every replayed message is checked: versions one by one for the slot, places 200..1 for the booking.
The same replay run in process (read the trail, rebuild the views) shows how much of the catch-up
is the engine's reading and how much is delivering 1,200 messages over the socket.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from bench.harness import bench_engine, spawn_api, summary, wait_until_serving
from slotengine.api.auth import issue_token
from slotengine.config import get_settings
from slotengine.domain.policy import SlotSpec
from slotengine.embedded import free_port
from slotengine.service import live, queries, reservations, stream_cursor
from slotengine.service.engine import Engine
from slotengine.service.views import Caller

AHEAD = 200
NEWCOMERS = 400  # each joins and leaves: two changes
MISSED = AHEAD + 2 * NEWCOMERS
SLOT_STATUS = "subscription($s: ID!, $a: String) { slotStatus(slotId: $s, after: $a) { queueLength cursor } }"
QUEUE_POSITION = (
    "subscription($b: ID!, $a: String) { queuePosition(bookingId: $b, after: $a) { position cursor } }"
)


async def run(quick: bool = False) -> None:
    async with bench_engine() as (engine, _settings):
        port = free_port()
        api = spawn_api(port)
        try:
            await wait_until_serving(port)
            await _scenario(engine, port, rounds=1 if quick else 5)
        finally:
            api.send_signal(signal.SIGTERM)
            api.wait(30)


class _Socket:
    """A graphql-transport-ws connection, initialised; operations by id."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = 0

    async def subscribe(self, query: str, variables: dict[str, Any]) -> str:
        self.ids += 1
        payload = {"query": query, "variables": variables}
        await self.ws.send(json.dumps({"id": str(self.ids), "type": "subscribe", "payload": payload}))
        return str(self.ids)

    async def next(self) -> tuple[str, dict[str, Any]]:
        while True:
            message = json.loads(await self.ws.recv())
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif message["type"] == "next":
                assert "errors" not in message["payload"], message
                return message["id"], message["payload"]["data"]
            else:
                raise AssertionError(message)


async def _connect(port: int, token: str) -> tuple[ClientConnection, _Socket]:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        max_queue=None,
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws, _Socket(ws)


async def _scenario(engine: Engine, port: int, rounds: int) -> None:
    secret = get_settings().jwt_secret
    admin = Caller("bench-admin", admin=True)
    catch_up: list[float] = []
    fresh: list[float] = []
    reading: list[float] = []  # of those, reading the trail and replaying it, in process
    for round_number in range(rounds):
        starts = datetime.now(UTC) + timedelta(hours=1)
        spec = SlotSpec("bench-resume", starts, starts + timedelta(minutes=30), 1, 3600)
        slot_id = (await queries.create_slot(engine, admin, spec)).id
        run_id = uuid.uuid4().hex[:6]
        await reservations.reserve_slot(engine, Caller(f"holder-{run_id}"), slot_id, "k")
        ahead = [
            await reservations.reserve_slot(engine, Caller(f"ahead-{run_id}-{i}"), slot_id, "k")
            for i in range(AHEAD)
        ]
        follower = Caller(f"follower-{run_id}")
        mine = await reservations.reserve_slot(engine, follower, slot_id, "k")
        token = issue_token(secret, follower.holder)

        ws, socket = await _connect(port, token)
        status_op = await socket.subscribe(SLOT_STATUS, {"s": slot_id})
        queue_op = await socket.subscribe(QUEUE_POSITION, {"b": mine.id})
        firsts = dict([await socket.next(), await socket.next()])
        slot_cursor = firsts[status_op]["slotStatus"]["cursor"]
        queue_cursor = firsts[queue_op]["queuePosition"]["cursor"]
        assert firsts[queue_op]["queuePosition"]["position"] == AHEAD + 1
        await ws.close()  # dropped

        for booking in ahead:
            await reservations.cancel_booking(engine, Caller(booking.holder), booking.id, None)
        for i in range(NEWCOMERS):
            newcomer = Caller(f"newcomer-{run_id}-{i}")
            late = await reservations.reserve_slot(engine, newcomer, slot_id, "k")
            await reservations.cancel_booking(engine, newcomer, late.id, None)

        ws, socket = await _connect(port, token)
        began = time.perf_counter()
        status_op = await socket.subscribe(SLOT_STATUS, {"s": slot_id, "a": slot_cursor})
        queue_op = await socket.subscribe(QUEUE_POSITION, {"b": mine.id, "a": queue_cursor})
        slot_versions: list[int] = []
        places: list[int] = []
        while len(slot_versions) < MISSED or len(places) < AHEAD:
            op, data = await socket.next()
            if op == status_op:
                slot_versions.append(stream_cursor.decode(data["slotStatus"]["cursor"], uuid.UUID(slot_id)))
            else:
                places.append(data["queuePosition"]["position"])
        catch_up.append((time.perf_counter() - began) * 1000)
        first = stream_cursor.decode(slot_cursor, uuid.UUID(slot_id))
        assert slot_versions == list(range(first + 1, first + MISSED + 1)), "replay missed or repeated"
        assert places == list(range(AHEAD, 0, -1)), places

        began = time.perf_counter()
        await live.slot_since(engine, uuid.UUID(slot_id), first)
        await live.booking_since(engine, follower, mine.id, first)
        reading.append((time.perf_counter() - began) * 1000)

        began = time.perf_counter()
        await socket.subscribe(SLOT_STATUS, {"s": slot_id})
        await socket.subscribe(QUEUE_POSITION, {"b": mine.id})
        await socket.next()
        await socket.next()
        fresh.append((time.perf_counter() - began) * 1000)
        await ws.close()
        print(
            f"round {round_number + 1}: catch-up {catch_up[-1]:.0f} ms, fresh {fresh[-1]:.0f} ms",
            flush=True,
        )

    print(summary(f"catch up after {MISSED} missed changes", catch_up))
    print(summary("  of which trail read + replay", reading))
    print(summary("subscribe fresh (first message)", fresh))
    ratios = [c / f for c, f in zip(catch_up, fresh, strict=True)]
    print(f"catch-up / fresh, per round: {' '.join(f'{r:.1f}' for r in ratios)}")
    print(f"per missed change: {sorted(catch_up)[len(catch_up) // 2] / MISSED * 1000:.0f} us (median round)")
