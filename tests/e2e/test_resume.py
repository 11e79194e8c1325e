"""Issue 13 item 3: subscriptions resume from a cursor, over real WebSockets, with workers.

A listener that stays connected is the reference: a listener that drops and comes back with the
cursor of the last message it had receives exactly the messages the reference received in
between (same contents, same cursors, in order), then the live ones, none twice.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from slotengine.config import Settings
from slotengine.embedded import free_port
from slotengine.service import stream_cursor
from tests.e2e.conftest import GraphQL, token
from tests.e2e.ws import GraphQLWebSocket
from tests.processes import ApiProcess, served, spawn

EXPIRED = "cursorExpired { message }"
SLOT_STATUS = f"""subscription($s: ID!, $a: String) {{ slotStatus(slotId: $s, after: $a) {{
  held confirmed queueLength available cursor {EXPIRED} }} }}"""
QUEUE_POSITION = f"""subscription($b: ID!, $a: String) {{ queuePosition(bookingId: $b, after: $a) {{
  state position ahead estimatedWaitSeconds expiresAt cursor {EXPIRED} }} }}"""
BOOKING_UPDATES = f"""subscription($b: ID!, $a: String) {{ bookingUpdates(bookingId: $b, after: $a) {{
  id state expiresAt queuePosition cursor {EXPIRED} }} }}"""


@pytest.fixture
async def via_a(api_processes: list[ApiProcess]) -> AsyncIterator[GraphQL]:
    async with httpx.AsyncClient(base_url=api_processes[0].base, timeout=30) as http:
        yield GraphQL(http)


def version(slot_id: str, message: dict[str, Any]) -> int:
    return stream_cursor.decode(message["cursor"], uuid.UUID(slot_id))


class Stream:
    """One subscription's messages on a socket, kept in order."""

    def __init__(self, ws: GraphQLWebSocket, field: str) -> None:
        self.ws, self.field = ws, field
        self.op = ""
        self.seen: list[dict[str, Any]] = []

    async def start(self, document: str, variables: dict[str, Any]) -> Stream:
        self.op = await self.ws.subscribe(document, variables)
        return self

    async def take(self, count: int = 1, within: float = 20) -> list[dict[str, Any]]:
        taken = [(await self.ws.next(self.op, within))[self.field] for _ in range(count)]
        self.seen += taken
        return taken

    async def until(self, done: Any, within: float = 20) -> None:
        while not self.seen or not done(self.seen[-1]):
            await self.take(within=within)

    async def completes(self) -> bool:
        message = await self.ws.message(self.op)
        return bool(message["type"] == "complete")


async def follow(ws: GraphQLWebSocket, field: str, document: str, variables: dict[str, Any]) -> Stream:
    return await Stream(ws, field).start(document, variables)


async def first_of(
    ws: GraphQLWebSocket, field: str, document: str, variables: dict[str, Any]
) -> dict[str, Any]:
    return (await (await follow(ws, field, document, variables)).take())[0]


@pytest.mark.usefixtures("workers")
async def test_a_dropped_listener_gets_exactly_what_it_missed_then_live_changes_none_twice(
    via_a: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await via_a.create_slot(hold_seconds=2)
    holder, *waiters = (token(f"resume-{name}") for name in ("holder", "w1", "w2", "w3"))
    await via_a.reserve(holder, slot_id, "k")
    w1, _w2, w3 = [await via_a.reserve(t, slot_id, "k") for t in waiters]
    assert w3["queuePosition"] == 3
    ids = {"s": slot_id, "b": w3["id"]}

    async with GraphQLWebSocket(api_processes[0].ws, waiters[2]) as on_a:
        status_a = await follow(on_a, "slotStatus", SLOT_STATUS, ids)
        queue_a = await follow(on_a, "queuePosition", QUEUE_POSITION, ids)
        updates_a = await follow(on_a, "bookingUpdates", BOOKING_UPDATES, ids)
        # The one that drops: it saw the first message of each, on the other API process.
        async with GraphQLWebSocket(api_processes[1].ws, waiters[2]) as on_b:
            status_b = await first_of(on_b, "slotStatus", SLOT_STATUS, ids)
            queue_b = await first_of(on_b, "queuePosition", QUEUE_POSITION, ids)
            updates_b = await first_of(on_b, "bookingUpdates", BOOKING_UPDATES, ids)
        for stream in (status_a, queue_a, updates_a):
            await stream.take()

        # Missed: w1 leaves; the holder's hold lapses (the worker expires it, w2 is promoted);
        # w2's hold lapses too (w3 is promoted). Nobody touches the slot but the worker.
        await via_a.cancel(waiters[0], w1["id"])
        await queue_a.until(lambda m: m["state"] == "RESERVED")
        promoted = version(slot_id, queue_a.seen[-1])
        await status_a.until(lambda m: version(slot_id, m) == promoted)
        await updates_a.until(lambda m: m["state"] == "RESERVED")

        missed = {
            "slotStatus": [m for m in status_a.seen if version(slot_id, m) > version(slot_id, status_b)],
            "queuePosition": [m for m in queue_a.seen if version(slot_id, m) > version(slot_id, queue_b)],
            "bookingUpdates": [
                m for m in updates_a.seen if version(slot_id, m) > version(slot_id, updates_b)
            ],
        }
        assert [m["position"] for m in missed["queuePosition"]] == [2, 1, None]
        assert [m["state"] for m in missed["bookingUpdates"]] == ["RESERVED"]
        assert len(missed["slotStatus"]) >= 3  # the cancel, then one version per expiry + promotion

        async with GraphQLWebSocket(api_processes[1].ws, waiters[2]) as back:
            resumed = {
                "slotStatus": await follow(back, "slotStatus", SLOT_STATUS, {**ids, "a": status_b["cursor"]}),
                "queuePosition": await follow(
                    back, "queuePosition", QUEUE_POSITION, {**ids, "a": queue_b["cursor"]}
                ),
                "bookingUpdates": await follow(
                    back, "bookingUpdates", BOOKING_UPDATES, {**ids, "a": updates_b["cursor"]}
                ),
            }
            for field, stream in resumed.items():
                assert await stream.take(len(missed[field])) == missed[field], field

            # Live from there: w3 confirms, then cancels; a newcomer marks the end of the slot's stream.
            await via_a.confirm(waiters[2], w3["id"])
            await via_a.cancel(waiters[2], w3["id"])
            await via_a.reserve(token("resume-late"), slot_id, "k")
            live = {"slotStatus": 3, "queuePosition": 1, "bookingUpdates": 2}
            reference = {"slotStatus": status_a, "queuePosition": queue_a, "bookingUpdates": updates_a}
            for field, count in live.items():
                assert await resumed[field].take(count) == await reference[field].take(count), field
            assert await resumed["queuePosition"].completes()  # confirmed: nothing more to wait for
            assert await resumed["bookingUpdates"].completes()  # cancelled: final

    assert [m["state"] for m in resumed["bookingUpdates"].seen] == ["RESERVED", "CONFIRMED", "CANCELLED"]
    assert [m["state"] for m in resumed["queuePosition"].seen][-2:] == ["RESERVED", "CONFIRMED"]
    for stream in resumed.values():
        versions = [version(slot_id, m) for m in stream.seen]
        assert versions == sorted(set(versions)), "a message came twice or out of order"
        assert all(m["cursorExpired"] is None for m in stream.seen)
    # The slot's stream missed no version at all: one message per committed change.
    slot_versions = [version(slot_id, m) for m in resumed["slotStatus"].seen]
    assert slot_versions == list(range(version(slot_id, status_b) + 1, slot_versions[-1] + 1))


@pytest.fixture
async def short_memory(settings: Settings) -> AsyncIterator[ApiProcess]:
    """An API process that replays at most 3 changes."""
    port = free_port()
    process = spawn(settings, "serve", "--port", str(port), env={"SLOTENGINE_RESUME_WINDOW_VERSIONS": "3"})
    async with served(process, port) as base:
        yield ApiProcess(base, f"ws://127.0.0.1:{port}/graphql")


async def test_a_cursor_too_old_or_hostile_answers_cursor_expired_with_the_state_now_then_live(
    short_memory: ApiProcess,
) -> None:
    async with httpx.AsyncClient(base_url=short_memory.base, timeout=30) as http:
        api = GraphQL(http)
        slot_id = await api.create_slot()
        other_slot = await api.create_slot()
        owner = token("old-owner")
        async with GraphQLWebSocket(short_memory.ws, owner) as ws:
            first = await first_of(ws, "slotStatus", SLOT_STATUS, {"s": slot_id})
            foreign = await first_of(ws, "slotStatus", SLOT_STATUS, {"s": other_slot})
        held = await api.reserve(owner, slot_id, "k")
        async with GraphQLWebSocket(short_memory.ws, owner) as ws:
            booking_first = await first_of(ws, "bookingUpdates", BOOKING_UPDATES, {"b": held["id"]})
        queued = [await api.reserve(token(f"old-w{i}"), slot_id, "k") for i in range(4)]
        await api.cancel(token("old-w0"), queued[0]["id"])  # six changes since `first`, five since the hold
        now = {"held": 1, "confirmed": 0, "queueLength": 3, "available": 0}

        hostile = [
            first["cursor"],  # too old: 6 changes behind, 3 are kept
            foreign["cursor"],  # another slot's
            "not-a-cursor",
            "",
            "\u00e9\u0000" * 20,
            "A" * 5000,
            stream_cursor.encode(uuid.UUID(slot_id), 10**6),  # ahead of the slot's history
            first["cursor"] + "=",
        ]
        async with GraphQLWebSocket(short_memory.ws, owner) as ws:
            for cursor in hostile:
                stream = await follow(ws, "slotStatus", SLOT_STATUS, {"s": slot_id, "a": cursor})
                answer = (await stream.take())[0]
                assert answer["cursorExpired"]["message"], (cursor, answer)
                assert {k: answer[k] for k in now} == now
                assert version(slot_id, answer) == version(slot_id, first) + 6
                await ws.stop(stream.op)
            too_old = await first_of(ws, "slotStatus", SLOT_STATUS, {"s": slot_id, "a": first["cursor"]})
            assert "more than 3 changes" in too_old["cursorExpired"]["message"]
            # The booking's streams too: the state now, marked, then live.
            updates = await follow(
                ws, "bookingUpdates", BOOKING_UPDATES, {"b": held["id"], "a": booking_first["cursor"]}
            )
            queue = await follow(ws, "queuePosition", QUEUE_POSITION, {"b": held["id"], "a": "\U0001f600"})
            (marked,) = await updates.take()
            assert marked["state"] == "RESERVED" and marked["cursorExpired"]["message"]
            (place,) = await queue.take()
            assert place["state"] == "RESERVED" and place["cursorExpired"]["message"]
            await api.confirm(owner, held["id"])
            (live,) = await updates.take()
            assert live["state"] == "CONFIRMED" and live["cursorExpired"] is None
            assert version(slot_id, live) == version(slot_id, marked) + 1

        # A cursor is no key: someone else's booking stays out of reach with one.
        async with GraphQLWebSocket(short_memory.ws, token("old-nosy")) as ws:
            refused = await ws.message(
                await ws.subscribe(BOOKING_UPDATES, {"b": held["id"], "a": booking_first["cursor"]})
            )
        assert refused["payload"]["errors"][0]["extensions"]["code"] == "BookingNotFound"
