"""WebSockets follow the HTTP rules: ids in any spelling, message size, token expiry, origins,
caps per holder, and idle sockets that never say hello."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from slotengine.api.auth import issue_token
from slotengine.config import Settings
from slotengine.embedded import free_port
from tests.conftest import TEST_JWT_SECRET
from tests.deadlines import eventually
from tests.e2e.conftest import ApiProcess, GraphQL, token
from tests.e2e.ws import PROTOCOL, GraphQLWebSocket
from tests.processes import kill_tree, serving, spawn

SLOT_STATUS = "subscription($s: ID!) { slotStatus(slotId: $s) { id held queueLength } }"
BOOKING_UPDATES = "subscription($b: ID!) { bookingUpdates(bookingId: $b) { id state } }"


def spellings(raw: str) -> list[str]:
    """Every spelling of a UUID that Python's UUID() accepts, across case and wrapping."""
    value = uuid.UUID(raw)
    bodies = [str(value), value.hex]
    cases = [
        str.lower,
        str.upper,
        lambda s: "".join(c.upper() if i % 2 else c for i, c in enumerate(s)),
        lambda s: "".join(c if i % 2 else c.upper() for i, c in enumerate(s)),
    ]
    wraps = ["{}", "{{{}}}", "urn:uuid:{}"]
    found = {wrap.format(case(body)) for body, case, wrap in itertools.product(bodies, cases, wraps)}
    found.discard(str(value))
    return sorted(found)


@pytest.fixture
async def via_a(api_processes: list[ApiProcess]) -> AsyncIterator[GraphQL]:
    async with httpx.AsyncClient(base_url=api_processes[0].base, timeout=30) as http:
        yield GraphQL(http)


async def test_a_slot_watched_under_any_spelling_of_its_id_sees_every_change(
    via_a: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await via_a.create_slot()
    names = spellings(slot_id)
    assert len(names) >= 20
    watcher = token("spelling-watcher")
    # A connection runs at most 20 operations: two connections carry them all.
    async with (
        GraphQLWebSocket(api_processes[1].ws, watcher) as first,
        GraphQLWebSocket(api_processes[1].ws, watcher) as second,
    ):
        watching = [
            (name, ws, await ws.subscribe(SLOT_STATUS, {"s": name}))
            for ws, batch in ((first, names[:20]), (second, names[20:]))
            for name in batch
        ]
        for _name, ws, operation in watching:
            assert (await ws.next(operation))["slotStatus"] == {"id": slot_id, "held": 0, "queueLength": 0}
        holder = token("spelling-holder")
        booking = await via_a.reserve(holder, slot_id, "k")
        for name, ws, operation in watching:
            assert (await ws.next(operation))["slotStatus"]["held"] == 1, name
        await via_a.cancel(holder, booking["id"])
        for name, ws, operation in watching:
            assert (await ws.next(operation))["slotStatus"]["held"] == 0, name


async def test_a_booking_followed_under_another_spelling_of_its_id_sees_its_changes(
    via_a: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await via_a.create_slot()
    holder = token("spelling-follower")
    booking = await via_a.reserve(holder, slot_id, "k")
    assert booking["__typename"] == "Booking", booking
    async with GraphQLWebSocket(api_processes[1].ws, holder) as ws:
        names = spellings(booking["id"])[:20]
        operations = [await ws.subscribe(BOOKING_UPDATES, {"b": name}) for name in names]
        for operation in operations:
            assert (await ws.next(operation))["bookingUpdates"] == {"id": booking["id"], "state": "RESERVED"}
        await via_a.confirm(holder, booking["id"])
        for operation in operations:
            assert (await ws.next(operation))["bookingUpdates"]["state"] == "CONFIRMED"


@pytest.mark.parametrize("raw", ["slot-42", "", "0" * 33, "{" + "0" * 31 + "}", "urn:uuid:", "g" * 32])
async def test_a_malformed_id_is_a_validation_error_on_both_transports(
    via_a: GraphQL, api_processes: list[ApiProcess], raw: str
) -> None:
    over_http = await via_a.run(
        'mutation($s: ID!) { reserveSlot(slotId: $s, idempotencyKey: "k") { __typename } }',
        {"s": raw},
        as_=token("malformed-ids"),
    )
    assert over_http["reserveSlot"]["__typename"] == "ValidationError"
    async with GraphQLWebSocket(api_processes[0].ws, token("malformed-ids")) as ws:
        refused = await ws.message(await ws.subscribe(SLOT_STATUS, {"s": raw}))
    assert refused["type"] in ("next", "error"), refused
    errors = refused["payload"]["errors"] if refused["type"] == "next" else refused["payload"]
    assert errors[0]["extensions"]["code"] == "ValidationError"


# ---- engines with rules of their own ---------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(settings: Settings, **env: str) -> AsyncIterator[ApiProcess]:
    """A `slotengine serve` on the suite's servers, with `env` overriding settings."""
    port = free_port()
    process = spawn(settings, "serve", "--port", str(port), env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            await eventually(lambda: serving(http, base), bool, within=60)
        yield ApiProcess(base, f"ws://127.0.0.1:{port}/graphql")
    finally:
        kill_tree(process, signal.SIGTERM)


async def _closed_with(ws: ClientConnection, within: float = 10) -> int | None:
    """The close code the server ends `ws` with, waiting at most `within` seconds."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    assert ws.close_code is not None, "the server did not close the socket"
    return ws.close_code


async def _open(url: str, token_: str | None, **connect: Any) -> ClientConnection:
    ws = await websockets.connect(url, subprotocols=[PROTOCOL], **connect)  # type: ignore[list-item]
    payload = {"Authorization": f"Bearer {token_}"} if token_ else {}
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    return ws


async def test_allowed_origins_may_open_sockets_end_to_end_and_others_may_not(settings: Settings) -> None:
    allowed = ["https://board.example.com", "http://localhost:3000"]
    async with serve(settings, SLOTENGINE_ALLOWED_ORIGINS=json.dumps(allowed)) as api:
        # Browsers spell an origin one way; a default port written out is the same origin.
        for origin in [*allowed, "https://board.example.com:443", "HTTPS://BOARD.EXAMPLE.COM"]:
            async with await _open(api.ws, token("origin-ok"), origin=origin) as ws:
                assert json.loads(await ws.recv())["type"] == "connection_ack", origin
        for origin in [
            "https://evil.example",
            "https://board.example.com.evil.example",
            "null",
            "http://board.example.com",
            "https://board.example.com:8443",
        ]:
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(api.ws, subprotocols=[PROTOCOL], origin=origin)  # type: ignore[list-item, arg-type]
            assert refused.value.response.status_code == 403, origin


async def test_a_socket_that_never_says_connection_init_is_closed_promptly(settings: Settings) -> None:
    async with (
        serve(settings, SLOTENGINE_WS_INIT_TIMEOUT_SECONDS="1") as api,
        websockets.connect(api.ws, subprotocols=[PROTOCOL]) as ws,  # type: ignore[list-item]
    ):
        began = asyncio.get_running_loop().time()
        assert await _closed_with(ws, within=10) == 4408
        assert asyncio.get_running_loop().time() - began < 5


async def test_a_holder_may_keep_only_so_many_sockets_and_subscriptions(
    settings: Settings, gql: GraphQL
) -> None:
    slot_id = await gql.create_slot()
    caps = {"SLOTENGINE_WS_MAX_SOCKETS_PER_HOLDER": "3", "SLOTENGINE_WS_MAX_SUBSCRIPTIONS_PER_HOLDER": "5"}
    async with serve(settings, **caps) as api:
        greedy, other = token("greedy"), token("modest")
        async with contextlib.AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(GraphQLWebSocket(api.ws, greedy)) for _ in range(3)]
            # The fourth socket of the same holder is refused; anyone else is not.
            async with await _open(api.ws, greedy) as fourth:
                assert await _closed_with(fourth) == 4429
            async with GraphQLWebSocket(api.ws, other) as theirs:
                assert (await theirs.next(await theirs.subscribe(SLOT_STATUS, {"s": slot_id})))["slotStatus"]

            # Five operations across the holder's sockets; the sixth is refused with a code.
            running = []
            for i in range(5):
                ws = sockets[i % 3]
                operation = await ws.subscribe(SLOT_STATUS, {"s": slot_id})
                await ws.next(operation)
                running.append((ws, operation))
            refused = await sockets[2].message(await sockets[2].subscribe(SLOT_STATUS, {"s": slot_id}))
            assert refused["type"] == "error"
            assert refused["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"

            # Ending one frees its place, on any of the holder's sockets.
            ws, operation = running.pop()
            await ws.stop(operation)

            async def subscribed_again() -> dict[str, Any]:
                return await sockets[0].message(await sockets[0].subscribe(SLOT_STATUS, {"s": slot_id}))

            assert (await eventually(subscribed_again, lambda m: m["type"] == "next"))["type"] == "next"

        # Closing the sockets frees their places too.
        async def reopened() -> int | None:
            async with await _open(api.ws, greedy) as again:
                reply = json.loads(await again.recv())
                return 0 if reply["type"] == "connection_ack" else None

        assert await eventually(reopened, lambda code: code == 0) == 0


async def test_a_socket_is_closed_with_4403_when_its_token_expires_as_http_answers_401(
    api_processes: list[ApiProcess], gql: GraphQL
) -> None:
    slot_id = await gql.create_slot()
    short = issue_token(TEST_JWT_SECRET, "short-lived", ttl_seconds=2)
    async with await _open(api_processes[0].ws, short) as ws:
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": SLOT_STATUS, "variables": {"s": slot_id}},
                }
            )
        )
        assert json.loads(await ws.recv())["type"] == "next"
        assert await _closed_with(ws, within=10) == 4403
    async with httpx.AsyncClient(base_url=api_processes[0].base) as http:
        answer = await GraphQL(http).post("{ __typename }", as_=short)
    assert answer.status_code == 401
