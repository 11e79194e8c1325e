"""Service-level helpers on the real PostgreSQL and Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from slotengine.domain.policy import SlotSpec
from slotengine.service import queries
from slotengine.service.engine import Engine
from slotengine.service.views import Caller
from slotengine.store.database import connection

ADMIN = Caller("admin", admin=True)


async def new_slot(
    engine: Engine, *, capacity: int = 1, hold_seconds: int = 120, starts_in: timedelta = timedelta(days=1)
) -> str:
    starts = datetime.now(UTC) + starts_in
    view = await queries.create_slot(
        engine,
        ADMIN,
        SlotSpec("integration", starts, starts + timedelta(minutes=30), capacity, hold_seconds),
    )
    return view.id


async def sql(query: str, *args: Any) -> list[dict[str, Any]]:
    return await connection().execute_query_dict(query, list(args))


async def db_clock_passed(moment: datetime) -> bool:
    rows = await sql("SELECT now() > $1::timestamptz AS passed", moment)
    return bool(rows[0]["passed"])


async def events_of(booking_id: str) -> list[str]:
    rows = await sql("SELECT event FROM transitions WHERE booking_id = $1 ORDER BY id", booking_id)
    return [r["event"] for r in rows]
