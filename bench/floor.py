"""The floor: a bare Starlette route doing only the I/O a reserve cannot avoid.

No GraphQL, no ORM: verify the bearer JWT (the engine's HS256 secret), one Lua call to hold a
unit or queue (floor_reserve.lua, keys of its own), and one statement (one transaction) that
bumps the slot's fence row and inserts the booking and its audit row into the engine's own
tables. It answers in the engine's JSON shape, so one client checks both. `make bench` runs it
beside `slotengine serve` (one uvicorn process each) and prints the engine's figures as ratios
to this one's: on a shared machine absolute numbers are noise, ratios in one run are not.

    python -m bench.floor --port 8100   # reads SLOTENGINE_DATABASE_URL, _REDIS_URL, _JWT_SECRET
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import uvicorn
from redis.asyncio import BlockingConnectionPool, Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slotengine.config import Settings
from slotengine.domain.states import BookingState, Event

PATH = "/reserve"
_LUA = (Path(__file__).parent / "floor_reserve.lua").read_text()

# One round trip: the fence bump takes the slot's row lock (as a hold's fence must), the booking
# and its audit row are written under it. A queued booking keeps no fence, like the engine's.
_ADMIT = (
    "WITH slot AS (UPDATE slots SET fence = fence + 1 WHERE id = $2 RETURNING fence, hold_seconds),"
    " booking AS ("
    "  INSERT INTO bookings (id, slot_id, holder, state, unit, fence, expires_at, idempotency_key)"
    "  SELECT $1, $2, $3, $4, $5::integer,"
    "         CASE WHEN $5::integer IS NULL THEN NULL ELSE fence END,"
    "         CASE WHEN $5::integer IS NULL THEN NULL ELSE now() + make_interval(secs => hold_seconds) END,"
    "         $6 FROM slot"
    "  RETURNING id, state, fence, expires_at),"
    " audit AS ("
    "  INSERT INTO transitions (booking_id, from_state, to_state, event, actor, fence, slot_id,"
    "   slot_version)"
    "  SELECT id, NULL, state, $7, $3, fence, $2, 0 FROM booking)"
    " SELECT id, state, expires_at FROM booking"
)


def floor_keys(prefix: str, slot_id: str) -> list[str]:
    """The floor's own mirror of a slot (never the engine's keys): meta, holds, queue."""
    tag = f"{prefix}floor:{{slot:{slot_id}}}"
    return [f"{tag}:meta", f"{tag}:holds", f"{tag}:queue"]


def create_floor_app(settings: Settings) -> Starlette:
    """The floor's ASGI app on the engine's PostgreSQL and Redis."""
    assert settings.database_url and settings.redis_url, "the floor needs the database and Redis URLs"
    database_url, redis_url = settings.database_url, settings.redis_url
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        state["pool"] = await asyncpg.create_pool(
            database_url.replace("postgres://", "postgresql://", 1).split("?")[0],
            min_size=1,
            max_size=settings.db_pool_size,
        )
        # Blocking, like the engine's pool: a burst waits for a connection instead of failing.
        pool = BlockingConnectionPool.from_url(
            redis_url, decode_responses=True, max_connections=settings.redis_pool_size, timeout=10
        )
        state["redis"] = Redis.from_pool(pool)
        state["admit"] = state["redis"].register_script(_LUA)
        try:
            yield
        finally:
            await state["redis"].aclose()
            await state["pool"].close()

    async def reserve(request: Request) -> Response:
        _, _, token = (request.headers.get("authorization") or "").partition(" ")
        try:
            claims = jwt.decode(
                token, settings.jwt_secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
            )
        except jwt.InvalidTokenError:
            return JSONResponse({"errors": [{"message": "not authenticated"}]}, status_code=401)
        holder = str(claims["sub"])
        try:
            variables = json.loads(await request.body())["variables"]
            slot_id, key = uuid.UUID(variables["s"]), str(variables["k"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"errors": [{"message": "bad request"}]}, status_code=400)
        booking_id = uuid.uuid4()
        keys = floor_keys(settings.redis_prefix, str(slot_id))
        expiry_ms = int(time.time() * 1000) + 120_000
        answer = await state["admit"](keys=keys, args=[str(booking_id), expiry_ms])
        if answer[0] == "MISSING":
            capacity = await state["pool"].fetchval("SELECT capacity FROM slots WHERE id = $1", slot_id)
            if capacity is None:
                return JSONResponse({"data": {"reserveSlot": {"__typename": "SlotNotFound"}}})
            await state["redis"].hsetnx(keys[0], "capacity", capacity)
            answer = await state["admit"](keys=keys, args=[str(booking_id), expiry_ms])
        holds = answer[0] == "HELD"
        booking_state = BookingState.RESERVED if holds else BookingState.PENDING
        row = await state["pool"].fetchrow(
            _ADMIT,
            booking_id,
            slot_id,
            holder,
            booking_state.value,
            int(answer[1]) if holds else None,
            key,
            (Event.HOLD if holds else Event.QUEUE).value,
        )
        booking = {
            "__typename": "Booking",
            "id": str(row["id"]),
            "state": row["state"],
            "expiresAt": row["expires_at"].isoformat() if row["expires_at"] else None,
            "queuePosition": None if holds else int(answer[1]),
        }
        return JSONResponse({"data": {"reserveSlot": booking}})

    async def healthz(_: Request) -> Response:
        await state["pool"].fetchval("SELECT 1")
        await state["redis"].ping()
        return Response("ok")

    return Starlette(
        routes=[Route(PATH, reserve, methods=["POST"]), Route("/healthz", healthz)], lifespan=lifespan
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same uvicorn defaults as `slotengine serve` (event loop and HTTP parser chosen alike).
    uvicorn.run(create_floor_app(Settings()), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
