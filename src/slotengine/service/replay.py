"""A slot's changes read back from its audit trail, as the announcements that were published.

Every transaction that changes a slot's bookings bumps the slot's version once and writes its
audit rows at that version (`transitions.slot_id`, `slot_version`), and a change of the slot's own
terms writes a row of `slot_terms_trail` at its version, so the rows of versions (after, upto]
are exactly the announcements a listener would have received in between. A
subscription resuming from a cursor reads them here, then goes live (service/live.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from slotengine.domain import policy
from slotengine.domain.errors import CursorExpired
from slotengine.domain.states import BookingState, Event
from slotengine.service.announcements import Change, SlotAnnouncement, SlotTerms
from slotengine.service.state_sql import CONFIRMED, RESERVED
from slotengine.store.database import connection


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """How the slot's holds have ended so far: what its queue's estimated wait is made of."""

    seconds: float = 0.0  # total time held, over the holds that ended
    ended: int = 0
    released: int = 0  # of those, the ones that gave their unit back (not confirmed)

    def seconds_per_place(self, capacity: int) -> float | None:
        if not self.ended:
            return None
        return policy.seconds_per_place(self.seconds / self.ended, self.ended, self.released, capacity)

    def plus(self, seconds: float, released: bool) -> HoldRecord:
        return HoldRecord(self.seconds + seconds, self.ended + 1, self.released + released)


@dataclass(frozen=True, slots=True)
class Trail:
    """The announcements of versions (after, upto], one per version in order, with what a
    booking's view needs that announcements leave to the listener's own count."""

    after: int
    announcements: list[SlotAnnouncement]
    queue_seqs: dict[str, int] = field(default_factory=dict)  # arrival sequence of each booking in it
    # (seconds held, released) of each hold that ended, per version.
    holds_ended: dict[int, list[tuple[float, bool]]] = field(default_factory=dict)
    # The slot's terms before the first change of its terms in the trail (None: unchanged in it).
    terms_before: SlotTerms | None = None


_TRAIL_SQL = (
    "SELECT t.slot_version, t.booking_id, t.from_state, t.to_state, t.event, b.queue_seq, b.expires_at,"
    " b.units,"
    f" CASE WHEN t.from_state = {RESERVED} AND t.to_state <> {RESERVED}"
    # A hold lasts from its grant to its end; its extensions (RESERVED to RESERVED) are part of it.
    " THEN EXTRACT(EPOCH FROM t.at - (SELECT x.at FROM transitions x"
    "   WHERE x.booking_id = t.booking_id AND x.id < t.id"
    f"   AND x.to_state = {RESERVED} AND x.from_state IS DISTINCT FROM {RESERVED}"
    "   ORDER BY x.id DESC LIMIT 1)) END AS held_seconds"
    " FROM transitions t JOIN bookings b ON b.id = t.booking_id"
    " WHERE t.slot_id = $1 AND t.slot_version > $2 AND t.slot_version <= $3"
    " ORDER BY t.slot_version, t.id"
)


async def read_trail(slot_id: UUID, after: int, upto: int) -> Trail:
    """The slot's announcements after version `after` up to `upto` (committed: the caller read it).

    CursorExpired when a version in between left no audit row (written before the trail was kept).
    """
    if upto <= after:
        return Trail(after, [])
    db = connection()
    rows = await db.execute_query_dict(_TRAIL_SQL, [slot_id, after, upto])
    terms_rows = await db.execute_query_dict(_TERMS_SQL, [slot_id, after, upto])
    return trail_of(str(slot_id), after, upto, rows, terms_rows)


_TERMS_SQL = (
    "SELECT slot_version, terms, previous FROM slot_terms_trail"
    " WHERE slot_id = $1 AND slot_version > $2 AND slot_version <= $3 ORDER BY slot_version"
)


def trail_of(
    slot_id: str,
    after: int,
    upto: int,
    rows: list[dict[str, Any]],
    terms_rows: Sequence[dict[str, Any]] = (),
) -> Trail:
    """Group the trail's rows (in version, then audit order) and the changes of the slot's terms
    (in version order) into one announcement per version."""
    changes: dict[int, list[Change]] = defaultdict(list)
    terms: dict[int, SlotTerms] = {}
    for row in terms_rows:
        terms[int(row["slot_version"])] = SlotTerms.of_dict(_json(row["terms"]))
    terms_before = SlotTerms.of_dict(_json(terms_rows[0]["previous"])) if terms_rows else None
    trail = Trail(after, [], terms_before=terms_before)
    for row in rows:
        version = int(row["slot_version"])
        booking_id = str(row["booking_id"])
        to_state = BookingState(row["to_state"])
        changes[version].append(
            Change(
                booking_id,
                BookingState(row["from_state"]) if row["from_state"] else None,
                to_state,
                Event(row["event"]),
                # A booking is held once: its expiry is the one this change granted.
                expires_at=row["expires_at"] if to_state is BookingState.RESERVED else None,
                units=int(row.get("units") or 1),
            )
        )
        trail.queue_seqs[booking_id] = int(row["queue_seq"])
        if row["held_seconds"] is not None:
            released = to_state is not BookingState.CONFIRMED
            trail.holds_ended.setdefault(version, []).append((float(row["held_seconds"]), released))
    if len(changes.keys() | terms.keys()) != upto - after:
        raise CursorExpired("the slot's changes since then are no longer all kept")
    trail.announcements.extend(
        SlotAnnouncement(slot_id, version, tuple(changes[version]), terms.get(version))
        for version in range(after + 1, upto + 1)
    )
    return trail


def _json(value: Any) -> dict[str, Any]:
    """A jsonb column as asyncpg hands it over (text unless a codec is set)."""
    data: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
    return data


LATEST = 2**63 - 1  # a version above any: hold_record(slot, LATEST) is the record as it is now


async def hold_record(slot_id: UUID, upto: int) -> HoldRecord:
    """The slot's hold record as of version `upto`: every hold that had ended by then."""
    rows = await connection().execute_query_dict(
        "SELECT coalesce(sum(EXTRACT(EPOCH FROM l.at - r.at)), 0) AS seconds, count(*) AS ended,"
        f" count(*) FILTER (WHERE l.to_state <> {CONFIRMED}) AS released"
        " FROM transitions r"
        " JOIN LATERAL (SELECT x.at, x.to_state, x.slot_version FROM transitions x"
        f"   WHERE x.booking_id = r.booking_id AND x.id > r.id AND x.from_state = {RESERVED}"
        f"   AND x.to_state <> {RESERVED} ORDER BY x.id LIMIT 1) l ON true"
        f" WHERE r.slot_id = $1 AND r.to_state = {RESERVED} AND r.from_state IS DISTINCT FROM {RESERVED}"
        " AND l.slot_version <= $2",
        [slot_id, upto],
    )
    row = rows[0]
    return HoldRecord(float(row["seconds"]), int(row["ended"]), int(row["released"]))
