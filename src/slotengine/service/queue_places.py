"""Places in a slot's queue, for reads: the mirror's ZRANK, O(log n), when the mirror is at the
slot version the read saw; else counted in PostgreSQL (a mirror missing or a change on its way)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from slotengine.domain.states import BookingState
from slotengine.redis import scripts
from slotengine.service.engine import Engine
from slotengine.service.state_sql import PENDING
from slotengine.store.database import connection

log = logging.getLogger(__name__)


async def queue_places(engine: Engine, rows: Sequence[dict[str, Any]]) -> dict[UUID, int]:
    """The place (1 = next) of each waiting booking among `rows` (each with id, slot_id, state,
    queue_seq and slot_version, the slot's version read with it)."""
    waiting = [row for row in rows if row["state"] == BookingState.PENDING]
    if not waiting:
        return {}
    places: dict[UUID, int] = {}
    try:
        found = await scripts.read_queue_places(
            engine.redis, [(engine.keys(str(row["slot_id"])).all(), str(row["id"])) for row in waiting]
        )
    except Exception:  # Redis is a cache here: PostgreSQL can tell
        log.warning("could not read queue places from Redis: counting them", exc_info=True)
        found = [scripts.QueuePlace(False, None, -1)] * len(waiting)
    for row, place in zip(waiting, found, strict=True):
        if place.version == int(row["slot_version"]) and place.place is not None:
            places[row["id"]] = place.place
    for row in waiting:
        if row["id"] not in places:
            places[row["id"]] = await _counted(row["slot_id"], int(row["queue_seq"]))
    return places


async def _counted(slot_id: UUID, queue_seq: int) -> int:
    rows = await connection().execute_query_dict(
        f"SELECT count(*) AS n FROM bookings WHERE slot_id = $1 AND state = {PENDING} AND queue_seq <= $2",
        [slot_id, queue_seq],
    )
    return int(rows[0]["n"])
