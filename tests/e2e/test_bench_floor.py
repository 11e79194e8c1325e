"""The benchmark's floor (bench/floor.py) still runs on the engine's schema and answers like it.

`make bench` divides the engine's figures by the floor's; a floor that rotted would make every
ratio meaningless, so it runs here once against the suite's servers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench.floor import PATH
from slotengine.config import Settings
from slotengine.embedded import free_port
from slotengine.store.database import connection
from tests.e2e.conftest import GraphQL, token
from tests.processes import engine_env, served

REPO = Path(__file__).resolve().parents[2]


def start_floor(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--port", str(port)],
        env=engine_env(settings),
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )


@pytest.fixture
async def floor_base(settings: Settings) -> AsyncIterator[str]:
    port = free_port()
    process = start_floor(settings, port)
    async with served(process, port) as base:
        yield base


async def test_floor_holds_then_queues_and_writes_the_engines_rows(gql: GraphQL, floor_base: str) -> None:
    slot_id = await gql.create_slot(capacity=1)
    answers = []
    async with httpx.AsyncClient(base_url=floor_base) as http:
        for holder in ("floor-first", "floor-second"):
            response = await http.post(
                PATH,
                json={"query": "ignored by the floor", "variables": {"s": slot_id, "k": f"{holder}-key"}},
                headers={"Authorization": f"Bearer {token(holder)}"},
            )
            assert response.status_code == 200, response.text
            answers.append(response.json()["data"]["reserveSlot"])
        refused = await http.post(PATH, json={"variables": {"s": slot_id, "k": "x"}})
    assert refused.status_code == 401
    assert [(a["__typename"], a["state"], a["queuePosition"]) for a in answers] == [
        ("Booking", "RESERVED", None),
        ("Booking", "PENDING", 1),
    ]
    assert answers[0]["expiresAt"] is not None
    rows = await connection().execute_query_dict(
        "SELECT b.holder, b.state, b.unit, b.fence, t.to_state, t.event, s.fence AS slot_fence"
        " FROM bookings b JOIN transitions t ON t.booking_id = b.id JOIN slots s ON s.id = b.slot_id"
        " WHERE b.slot_id = $1 ORDER BY b.queue_seq",
        [slot_id],
    )
    assert [(r["holder"], r["state"], r["unit"], r["to_state"], r["event"]) for r in rows] == [
        ("floor-first", "RESERVED", 1, "RESERVED", "hold"),
        ("floor-second", "PENDING", None, "PENDING", "queue"),
    ]
    # Both reserves took the slot's row lock through the fence bump; only the hold keeps a fence.
    assert rows[0]["slot_fence"] == 2 and rows[0]["fence"] == 1 and rows[1]["fence"] is None
