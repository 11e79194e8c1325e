"""The GraphQL edge under abuse: each limit is hit and answers with a clear error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import strawberry
import websockets
from websockets.exceptions import InvalidStatus

from slotengine.api.schema import build_schema, edge_extensions
from slotengine.config import Settings
from slotengine.embedded import free_port
from tests.e2e.conftest import ADMIN, ApiProcess, GraphQL, token
from tests.e2e.ws import PROTOCOL, GraphQLWebSocket
from tests.processes import served, spawn


def _errors(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["message"] for e in response.json()["errors"]]


@strawberry.type
class Person:
    name: str

    @strawberry.field
    def friend(self) -> Person:
        return Person(name=self.name)


@strawberry.type
class Circle:
    @strawberry.field
    def person(self) -> Person:
        return Person(name="ann")


async def test_a_query_deeper_than_ten_levels_is_refused() -> None:
    # The engine's types nest three levels today, so the limit is shown on types that recurse,
    # with exactly the extensions the engine's schema runs.
    recursive = strawberry.Schema(query=Circle, extensions=edge_extensions())
    ten = "{ person " + "{ friend " * 9 + "{ name }" + " }" * 9 + " }"
    eleven = "{ person " + "{ friend " * 10 + "{ name }" + " }" * 10 + " }"
    assert (await recursive.execute(ten)).errors is None
    refused = await recursive.execute(eleven)
    assert refused.errors and "exceeds maximum operation depth of 10" in refused.errors[0].message


async def test_more_than_thirty_aliases_are_refused(gql: GraphQL) -> None:
    aliases = " ".join(f'a{i}: slot(id: "{i}") {{ id }}' for i in range(31))
    messages = _errors(await gql.post(f"{{ {aliases} }}"))
    assert any("aliases found. Allowed: 30" in m for m in messages), messages


async def test_a_query_of_more_than_2000_tokens_is_refused(gql: GraphQL) -> None:
    fields = " ".join(["id"] * 2100)
    messages = _errors(await gql.post(f'{{ slot(id: "x") {{ {fields} }} }}'))
    assert any("2000" in m and "token" in m.lower() for m in messages), messages


async def test_a_body_over_the_limit_is_refused_with_413_before_graphql_runs(gql: GraphQL) -> None:
    padding = "#" + "x" * (64 * 1024) + "\n"
    response = await gql.http.post("/graphql", json={"query": padding + "{ slots { id } }"})
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"query": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    streamed = await gql.http.post("/graphql", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


async def test_introspection_is_answered_only_when_configured() -> None:
    query = "{ __schema { queryType { name } } }"
    closed = await build_schema(introspection=False).execute(query)
    assert closed.errors and "introspection" in closed.errors[0].message.lower()
    opened = await build_schema(introspection=True).execute(query)
    assert opened.errors is None and opened.data == {"__schema": {"queryType": {"name": "Query"}}}


@pytest.fixture
async def limited_api(settings: Settings) -> AsyncIterator[str]:
    """A `slotengine serve` allowing each holder three reserveSlot calls a minute."""
    port = free_port()
    process = spawn(settings, "serve", "--port", str(port), env={"SLOTENGINE_RESERVE_RATE_PER_MINUTE": "3"})
    async with served(process, port) as base:
        yield base


async def test_a_holder_over_the_reserve_rate_gets_rate_limited_and_others_do_not(
    gql: GraphQL, limited_api: str
) -> None:
    slot_id = await gql.create_slot(capacity=5)
    eager, calm = token("rate-eager"), token("rate-calm")
    async with httpx.AsyncClient(base_url=limited_api) as http:
        limited = GraphQL(http)
        answers = [
            await limited.run(
                """mutation($s: ID!, $k: String!) { reserveSlot(slotId: $s, idempotencyKey: $k) {
                     __typename ... on RateLimited { message retryAfterSeconds } } }""",
                {"s": slot_id, "k": f"k{i}"},
                as_=eager,
            )
            for i in range(4)
        ]
        kinds = [a["reserveSlot"]["__typename"] for a in answers]
        assert kinds == ["Booking", "Booking", "Booking", "RateLimited"], kinds
        assert 0 < answers[3]["reserveSlot"]["retryAfterSeconds"] <= 60
        assert (await limited.reserve(calm, slot_id, "k0"))["__typename"] == "Booking"


async def test_websockets_from_another_sites_page_are_refused(api_processes: list[ApiProcess]) -> None:
    url = api_processes[0].ws
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(url, subprotocols=[PROTOCOL], origin="http://evil.example")  # type: ignore[list-item, arg-type]
    assert refused.value.response.status_code == 403
    own_origin = api_processes[0].base
    async with websockets.connect(url, subprotocols=[PROTOCOL], origin=own_origin) as ws:  # type: ignore[list-item, arg-type]
        assert ws.subprotocol == PROTOCOL
    async with GraphQLWebSocket(url, token("no-origin")):  # no Origin header: not a browser
        pass


async def test_subscriptions_per_connection_are_capped_at_twenty(
    gql: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await gql.create_slot()
    query = "subscription($s: ID!) { slotStatus(slotId: $s) { held } }"
    async with GraphQLWebSocket(api_processes[0].ws, ADMIN) as ws:
        operations = [await ws.subscribe(query, {"s": slot_id}) for _ in range(20)]
        for operation in operations:
            await ws.next(operation)
        refused = await ws.message(await ws.subscribe(query, {"s": slot_id}))
    assert refused["type"] == "error"
    assert refused["payload"][0]["message"] == "Subscription limit reached"
