"""Hostile documents over HTTP and WebSocket: refused with a code before they run; the API stays live.

The bomb is a chain of n fragments each spreading the previous one k times: under 3 KB, it
expands to k**n fields. Strawberry's limiters walked every path (n = 22 took 14.8 s with the event
loop blocked); the document budget costs it by arithmetic and refuses it before execution.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from tests.e2e.conftest import ADMIN, ApiProcess, GraphQL
from tests.e2e.ws import GraphQLWebSocket

# Liveness bounds, generous for a loaded 2-core machine: the old limiters needed hours for n = 30.
ANSWER_WITHIN = 10.0
HEALTHZ_WITHIN = 1.0
BOMBERS = 2  # connections sending bombs back to back, each as fast as it is answered


def fragment_bomb(n: int, k: int, *, root: str = "Query", leaf: str = "slots { id }") -> str:
    """n fragments, each spreading the previous one k times, and an operation spreading the last."""
    operation = "subscription" if root == "Subscription" else "query"
    lines = [f"{operation} Bomb {{ ...F{n} }}", f"fragment F0 on {root} {{ {leaf} }}"]
    lines += [f"fragment F{i} on {root} {{ {' '.join([f'...F{i - 1}'] * k)} }}" for i in range(1, n + 1)]
    return "\n".join(lines)


def _codes(errors: list[dict[str, Any]]) -> list[str]:
    return [(e.get("extensions") or {}).get("code", "") for e in errors]


async def test_fragment_bombs_are_refused_with_a_code_before_they_run(gql: GraphQL) -> None:
    rng = random.Random(9)
    for n in (30, 60, *rng.sample(range(16, 120), 4)):
        k = rng.randint(2, 5)
        bomb = fragment_bomb(n, k)
        began = time.monotonic()
        response = await asyncio.wait_for(gql.post(bomb), ANSWER_WITHIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body.get("data") is None, body  # nothing ran
        codes = _codes(body["errors"])
        assert "QUERY_TOO_COMPLEX" in codes, (n, k, body["errors"])
        if n > 20:
            assert "TOO_MANY_FRAGMENTS" in codes
        assert time.monotonic() - began < ANSWER_WITHIN


async def test_each_shape_limit_answers_with_its_code_over_http(gql: GraphQL) -> None:
    cases = {
        "TOO_MANY_ALIASES": "{ " + " ".join(f'a{i}: slot(id: "{i}") {{ id }}' for i in range(31)) + " }",
        "TOO_MANY_REPEATS": "{ slots { " + "id " * 11 + "} }",
        "TOO_MANY_DIRECTIVES": "{ slots { id " + "@include(if: true) " * 6 + "} }",
        # 29 aliases (within 30), each a list of bookings with a list of transitions: 29 x 21 > 500.
        "QUERY_TOO_COMPLEX": "{ "
        + " ".join(f"b{i}: myBookings {{ history {{ event }} }}" for i in range(29))
        + " }",
    }
    # Depth: the engine's types nest two levels; test_hardening shows it on types that recurse.
    for code, query in cases.items():
        body = (await gql.post(query)).json()
        assert code in _codes(body["errors"]), (code, body)


async def test_healthz_answers_promptly_while_bombs_keep_arriving(api_processes: list[ApiProcess]) -> None:
    base = api_processes[0].base
    stop, arriving = asyncio.Event(), asyncio.Event()
    refused: list[int] = []
    rng = random.Random(22)

    async def fire(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            bomb = fragment_bomb(rng.randint(18, 80), rng.randint(2, 4))
            response = await http.post("/graphql", json={"query": bomb})
            assert "QUERY_TOO_COMPLEX" in _codes(response.json()["errors"]), response.text
            refused.append(response.status_code)
            arriving.set()

    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as bomber,
        httpx.AsyncClient(base_url=base, timeout=30) as prober,
    ):
        firing = [asyncio.create_task(fire(bomber)) for _ in range(BOMBERS)]
        try:
            await asyncio.wait_for(arriving.wait(), ANSWER_WITHIN)  # bombs land before the probes start
            waits = []
            for _ in range(25):
                began = time.monotonic()
                health = await asyncio.wait_for(prober.get("/healthz"), 10)
                waits.append(time.monotonic() - began)
                assert health.status_code == 200, health.text
        finally:
            stop.set()
            await asyncio.gather(*firing)
    print(f"healthz under bombs: max {max(waits):.3f}s, {len(refused)} bombs refused meanwhile")
    assert max(waits) < HEALTHZ_WITHIN, waits
    assert len(refused) >= 8 and set(refused) == {200}


async def test_subscription_bombs_over_the_websocket_are_refused_the_same_way(
    gql: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slot_id = await gql.create_slot()
    leaf = f'slotStatus(slotId: "{slot_id}") {{ held }}'
    async with GraphQLWebSocket(api_processes[0].ws, ADMIN) as ws:
        for n, k in ((30, 2), (60, 3), (12, 2)):
            bomb = fragment_bomb(n, k, root="Subscription", leaf=leaf)
            answer = await ws.message(await ws.subscribe(bomb, {}), within=ANSWER_WITHIN)
            assert answer["type"] == "error", answer
            assert "QUERY_TOO_COMPLEX" in _codes(answer["payload"]), answer
        # The socket is still good for a document within the budget.
        operation = await ws.subscribe(
            "subscription($s: ID!) { slotStatus(slotId: $s) { held } }", {"s": slot_id}
        )
        assert (await ws.next(operation))["slotStatus"]["held"] == 0
