"""The ASGI app over HTTP, as a GraphQL client sees it."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from slotengine.api.auth import issue_token
from slotengine.config import Settings
from slotengine.service.engine import Engine
from tests.conftest import TEST_JWT_SECRET
from tests.e2e.browser import (  # noqa: F401 (fixtures)
    artifacts,
    browsers,
    chromium,
    chromium_executable,
)
from tests.processes import ApiProcess, running_apis, running_workers

BOOKING_FIELDS = """
  __typename
  ... on Booking { id slotId holder state expiresAt queuePosition }
  ... on Error { message }
"""


def token(name: str, *, admin: bool = False) -> str:
    return issue_token(TEST_JWT_SECRET, name, admin=admin, ttl_seconds=3600)


ADMIN = token("admin", admin=True)


class GraphQL:
    """Posts operations to /graphql and hands back `data`, failing loudly on top-level errors."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, *, as_: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {as_}"} if as_ else {}
        return await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )

    async def run(
        self, query: str, variables: dict[str, Any] | None = None, *, as_: str | None = None
    ) -> dict[str, Any]:
        response = await self.post(query, variables, as_=as_)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    async def create_slot(
        self,
        *,
        capacity: int = 1,
        hold_seconds: int = 120,
        starts_in: timedelta = timedelta(days=1),
        resource: str = "dr-lee",
    ) -> str:
        starts = datetime.now(UTC) + starts_in
        data = await self.run(
            """mutation($input: CreateSlotInput!) {
                 createSlot(input: $input) { __typename ... on Slot { id } ... on Error { message } }
               }""",
            {
                "input": {
                    "resource": resource,
                    "startsAt": starts.isoformat(),
                    "endsAt": (starts + timedelta(minutes=30)).isoformat(),
                    "capacity": capacity,
                    "holdSeconds": hold_seconds,
                }
            },
            as_=ADMIN,
        )
        assert data["createSlot"]["__typename"] == "Slot", data
        slot_id: str = data["createSlot"]["id"]
        return slot_id

    async def reserve(self, holder_token: str, slot_id: str, key: str) -> dict[str, Any]:
        data = await self.run(
            f"""mutation($s: ID!, $k: String!) {{
                  reserveSlot(slotId: $s, idempotencyKey: $k) {{ {BOOKING_FIELDS} }} }}""",
            {"s": slot_id, "k": key},
            as_=holder_token,
        )
        result: dict[str, Any] = data["reserveSlot"]
        return result

    async def confirm(self, holder_token: str, booking_id: str) -> dict[str, Any]:
        data = await self.run(
            f"""mutation($b: ID!) {{ confirmBooking(bookingId: $b) {{ {BOOKING_FIELDS}
                  ... on InvalidTransition {{ fromState event }}
                  ... on HoldExpired {{ bookingId expiredAt }} }} }}""",
            {"b": booking_id},
            as_=holder_token,
        )
        result: dict[str, Any] = data["confirmBooking"]
        return result

    async def cancel(self, holder_token: str, booking_id: str, reason: str | None = None) -> dict[str, Any]:
        data = await self.run(
            f"""mutation($b: ID!, $r: String) {{ cancelBooking(bookingId: $b, reason: $r) {{
                  {BOOKING_FIELDS} ... on InvalidTransition {{ fromState event }} }} }}""",
            {"b": booking_id, "r": reason},
            as_=holder_token,
        )
        result: dict[str, Any] = data["cancelBooking"]
        return result

    async def booking(self, holder_token: str, booking_id: str) -> dict[str, Any] | None:
        data = await self.run(
            """query($b: ID!) { booking(id: $b) {
                 id state expiresAt queuePosition holder
                 history { fromState toState event actor reason at } } }""",
            {"b": booking_id},
            as_=holder_token,
        )
        result: dict[str, Any] | None = data["booking"]
        return result

    async def slot(self, slot_id: str) -> dict[str, Any] | None:
        data = await self.run(
            """query($s: ID!) { slot(id: $s) {
                 id capacity holdSeconds available held confirmed queueLength closed } }""",
            {"s": slot_id},
            as_=ADMIN,
        )
        result: dict[str, Any] | None = data["slot"]
        return result


@pytest.fixture(scope="session")
async def gql(app: Starlette) -> AsyncIterator[GraphQL]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://slotengine.test") as http:
        yield GraphQL(http)


@pytest.fixture(scope="module")
async def workers(settings: Settings, engine: Engine) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """A worker and a scheduler, real processes, for the tests of one module: they expire and
    promote whatever the suite's database holds, so tests elsewhere that drive expiry themselves
    (tests/integration, in whatever order or process pytest-xdist runs them) never meet them."""
    async with running_workers(settings, engine.redis) as running:
        yield running


@pytest.fixture(scope="session")
async def api_processes(settings: Settings) -> AsyncIterator[list[ApiProcess]]:
    """Two `slotengine serve` processes on the suite's PostgreSQL and Redis."""
    async with running_apis(settings, 2) as running:
        yield running
