"""WebSockets follow the HTTP rules: ids in any spelling, message size, token expiry, origins,
caps per holder, and idle sockets that never say hello."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.conftest import ApiProcess, GraphQL, token
from tests.e2e.ws import GraphQLWebSocket

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
