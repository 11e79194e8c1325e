"""admit_reservations() (migration 0005) decides as the domain does: policy.admit, free_units,
hold_expiry, accepts_reservations and settled_already, each checked on the real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from slotengine.domain import policy
from slotengine.domain.errors import TooManyBookings
from slotengine.domain.states import BookingState, Event, Role, transition
from slotengine.service.admission_function import ADMIT_SQL, admit_args
from slotengine.service.engine import Engine
from slotengine.service.reserve_request import ReserveRequest
from slotengine.service.settlement import settled_already
from slotengine.store.database import connection, create_database, migrate

HELD = transition(None, Event.HOLD, Role.HOLDER)
QUEUED = transition(None, Event.QUEUE, Role.HOLDER)


async def _slot(capacity: int, *, starts_in: timedelta, closed: bool = False) -> uuid.UUID:
    slot_id = uuid.uuid4()
    starts = datetime.now(UTC) + starts_in
    await connection().execute_query(
        "INSERT INTO slots (id, resource, starts_at, ends_at, capacity, hold_seconds, closed, fence)"
        " VALUES ($1, 'admission', $2, $3, $4, 60, $5, 7)",
        [slot_id, starts, starts + timedelta(minutes=30), capacity, closed],
    )
    return slot_id


async def _booking(slot_id: uuid.UUID, state: BookingState, unit: int | None, expires_in: float) -> None:
    booking_id = uuid.uuid4()
    await connection().execute_query(
        "INSERT INTO bookings (id, slot_id, holder, state, unit, fence, expires_at, idempotency_key)"
        " VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7::float8), 'k')",
        [booking_id, slot_id, f"seed-{booking_id}", state.value, unit, 1 if unit else None, expires_in],
    )
    if state is QUEUED:
        await connection().execute_query("UPDATE slots SET waiting = waiting + 1 WHERE id = $1", [slot_id])


async def _admit(slot_id: uuid.UUID, holders: list[str]) -> list[dict[str, Any]]:
    """Each holder's first reservation (keys are the holder's, and holders new to this slot)."""
    requests = [ReserveRequest(f"{holder}-{slot_id}", "key") for holder in holders]
    rows = await connection().execute_query_dict(ADMIT_SQL, admit_args(slot_id, requests))
    return sorted(rows, key=lambda row: row["ord"])


def _expected(
    capacity: int, taken: list[int], waiting: int, refusal: str | None, newcomers: int
) -> list[tuple[str, int | None, int | None]]:
    """The domain's answer for each newcomer: (state or "refused", unit, place)."""
    taken, answers = list(taken), []
    for _ in range(newcomers):
        if refusal is not None:
            answers.append(("refused", None, None))
        elif policy.admit(capacity, len(taken), waiting) is policy.Admission.HOLD:
            unit = policy.free_units(capacity, taken)[0]
            taken.append(unit)
            answers.append((HELD.value, unit, None))
        else:
            waiting += 1
            answers.append((QUEUED.value, None, waiting))
    return answers


@pytest.mark.parametrize(
    ("capacity", "held_units", "waiting", "closed", "starts_in_minutes"),
    [
        (3, [], 0, False, 60),  # three hold, the fourth queues
        (3, [2], 0, False, 60),  # the lowest free units first
        (2, [1, 2], 2, False, 60),  # full with a queue: everyone queues behind it
        (1, [1], 0, False, 60),  # full, nobody waiting yet
        (2, [], 0, True, 60),  # closed
        (2, [1], 0, False, -1),  # started, nobody waiting
    ],
)
async def test_admission_follows_the_domain(
    engine: Engine, capacity: int, held_units: list[int], waiting: int, closed: bool, starts_in_minutes: int
) -> None:
    slot_id = await _slot(capacity, starts_in=timedelta(minutes=starts_in_minutes), closed=closed)
    for unit in held_units:
        await _booking(slot_id, HELD, unit, 600)
    for _ in range(waiting):
        await _booking(slot_id, QUEUED, None, 0)

    rows = await _admit(slot_id, ["a", "b", "c", "d"])

    slot, answers = rows[0], rows[1:]
    assert slot["outcome"] == "slot"
    refusal = policy.accepts_reservations(closed, slot["starts_at"], slot["db_now"])
    expected = _expected(capacity, held_units, waiting, refusal, 4)
    got = [("refused" if a["outcome"] == "refused" else a["state"], a["unit"], a["place"]) for a in answers]
    assert got == expected
    holds = [a for a in answers if a["state"] == HELD.value]
    # Hold k of the batch gets the slot's fence (7) + k, and the domain's expiry.
    assert [a["fence"] for a in holds] == list(range(8, 8 + len(holds)))
    expiry = policy.hold_expiry(slot["db_now"], slot["hold_seconds"], slot["ends_at"])
    assert {a["expires_at"] for a in holds} <= {expiry}
    admitted = sum(1 for a in answers if a["outcome"] == "new")
    assert slot["version"] == slot["locked_version"] + (1 if admitted else 0)
    assert slot["waiting"] == waiting + sum(1 for a in answers if a["state"] == QUEUED.value)


@pytest.mark.parametrize(
    ("capacity", "held_units", "lapsed", "waiting", "starts_in_minutes"),
    [
        (2, [1], False, 1, 60),  # a free unit and someone waiting for it
        (1, [1], True, 0, 60),  # a hold past its expiry
        (1, [1], False, 1, -1),  # the slot started with people waiting
        (1, [1], False, 1, 60),  # full, waiting: nothing due
        (2, [1], False, 0, 60),  # a free unit, nobody waiting: nothing due
    ],
)
async def test_the_function_settles_first_exactly_when_the_domain_would(
    engine: Engine, capacity: int, held_units: list[int], lapsed: bool, waiting: int, starts_in_minutes: int
) -> None:
    slot_id = await _slot(capacity, starts_in=timedelta(minutes=starts_in_minutes))
    for unit in held_units:
        await _booking(slot_id, HELD, unit, -1 if lapsed else 600)
    for _ in range(waiting):
        await _booking(slot_id, QUEUED, None, 0)

    rows = await _admit(slot_id, ["a"])

    slot = rows[0]
    tx: Any = SimpleNamespace(
        waiting=waiting, starts_at=slot["starts_at"], now=slot["db_now"], capacity=capacity, taken=[]
    )
    due = not settled_already(tx, held_units, lapsed)
    assert slot["outcome"] == ("due" if due else "slot")
    if due:  # nothing was written
        assert len(rows) == 1
        bookings = await connection().execute_query_dict(
            "SELECT count(*) AS n FROM bookings WHERE slot_id = $1", [slot_id]
        )
        assert bookings[0]["n"] == len(held_units) + waiting


async def test_keys_replay_and_a_holder_gets_one_booking(engine: Engine) -> None:
    slot_id = await _slot(1, starts_in=timedelta(hours=1))
    other = await _slot(1, starts_in=timedelta(hours=1))
    a, x = f"a-{slot_id}", f"x-{other}"
    await _admit(other, ["x"])  # x's key now names a booking of another slot
    requests = [ReserveRequest(a, "1"), ReserveRequest(a, "2"), ReserveRequest(x, "key")]
    rows = await connection().execute_query_dict(ADMIT_SQL, admit_args(slot_id, requests))
    answers = sorted((r for r in rows if r["ord"]), key=lambda r: r["ord"])
    assert [a["outcome"] for a in answers] == ["new", "new", "reused"]
    assert answers[0]["id"] == answers[1]["id"]

    again = [ReserveRequest(a, "2"), ReserveRequest(a, "3"), ReserveRequest(a, "3")]
    rows = await connection().execute_query_dict(ADMIT_SQL, admit_args(slot_id, again))
    answers = sorted((r for r in rows if r["ord"]), key=lambda r: r["ord"])
    # A known key replays; a new key finds the live booking and is known from then on.
    assert [a["outcome"] for a in answers] == ["replay", "row", "replay"]
    assert {a["id"] for a in answers} == {answers[0]["id"]}
    slot = next(r for r in rows if r["ord"] == 0)
    assert slot["version"] == slot["locked_version"]  # no booking changed: no new version
    keys = await connection().execute_query_dict(
        "SELECT key FROM idempotency_keys WHERE holder = $1 ORDER BY key", [a]
    )
    assert [k["key"] for k in keys] == ["1", "2", "3"]
    trail = await connection().execute_query_dict(
        "SELECT to_state, event FROM transitions WHERE booking_id = $1", [answers[0]["id"]]
    )
    assert trail == [{"to_state": HELD.value, "event": Event.HOLD.value}]


@pytest.mark.parametrize(("claims_elsewhere", "cap"), [(0, 1), (1, 1), (1, 2), (2, 2), (3, 0)])
async def test_the_cap_on_live_bookings_is_the_domains(
    engine: Engine, claims_elsewhere: int, cap: int
) -> None:
    holder = f"capped-{uuid.uuid4()}"
    for _ in range(claims_elsewhere):
        elsewhere = await _slot(1, starts_in=timedelta(hours=1))
        await connection().execute_query_dict(
            ADMIT_SQL, admit_args(elsewhere, [ReserveRequest(holder, f"k-{elsewhere}")])
        )
    slot_id = await _slot(1, starts_in=timedelta(hours=1))
    rows = await connection().execute_query_dict(
        ADMIT_SQL, admit_args(slot_id, [ReserveRequest(holder, "here")], cap)
    )
    answer = next(r for r in rows if r["ord"] == 1)
    try:
        policy.check_live_booking_cap(claims_elsewhere, cap)
        refused = False
    except TooManyBookings:
        refused = True
    assert answer["outcome"] == ("capped" if refused else "new")


async def test_its_audit_rows_carry_the_slot_and_the_version_they_committed_at() -> None:
    """A resuming subscription replays the trail by (slot_id, slot_version): the function writes
    both, at the slot's bumped version, for every booking it made (0009 makes them NOT NULL)."""
    slot_id = await _slot(1, starts_in=timedelta(hours=1))
    first = await _admit(slot_id, ["trail-a", "trail-b"])
    second = await _admit(slot_id, ["trail-c"])
    assert [first[0]["version"], second[0]["version"]] == [1, 2]
    trail = await connection().execute_query_dict(
        "SELECT t.booking_id, t.event, t.slot_id, t.slot_version FROM transitions t"
        " JOIN bookings b ON b.id = t.booking_id WHERE b.slot_id = $1 ORDER BY t.id",
        [slot_id],
    )
    assert [(r["booking_id"], r["event"], r["slot_id"], r["slot_version"]) for r in trail] == [
        (first[1]["id"], Event.HOLD.value, slot_id, 1),
        (first[2]["id"], Event.QUEUE.value, slot_id, 1),
        (second[1]["id"], Event.QUEUE.value, slot_id, 2),
    ]


async def test_a_live_booking_found_again_names_its_group() -> None:
    """A holder whose group holds this slot gets that booking back, with its group (bookings of a
    group move with it: the API needs to know it is one)."""
    slot_id = await _slot(2, starts_in=timedelta(hours=1))
    holder, group_id, booking_id = f"member-{slot_id}", uuid.uuid4(), uuid.uuid4()
    await connection().execute_query(
        "INSERT INTO booking_groups (id, holder, idempotency_key, slot_ids, state, expires_at)"
        " VALUES ($1, $2, 'g', ARRAY[$3::uuid], 'RESERVED', now() + interval '1 minute')",
        [group_id, holder, slot_id],
    )
    await connection().execute_query(
        "INSERT INTO bookings (id, slot_id, holder, state, unit, fence, expires_at, idempotency_key,"
        " group_id) VALUES ($1, $2, $3, $4, 1, 1, now() + interval '1 minute', 'g', $5)",
        [booking_id, slot_id, holder, HELD.value, group_id],
    )
    requests = [ReserveRequest(holder, "single"), ReserveRequest("loner", "single")]
    rows = sorted(
        await connection().execute_query_dict(ADMIT_SQL, admit_args(slot_id, requests)),
        key=lambda row: row["ord"],
    )
    assert [(r["outcome"], r["id"], r["group_id"]) for r in rows[1:]] == [
        ("row", booking_id, group_id),
        ("new", rows[2]["id"], None),
    ]


async def test_a_plan_made_on_an_empty_table_still_probes_when_the_table_has_grown(
    postgres_server_url: str,
) -> None:
    """The function runs on generic plans cached per connection: one made while `bookings` was
    empty must not scan the whole table once it holds thousands of bookings (0014)."""
    url = await create_database(postgres_server_url, f"slotengine_plan_{uuid.uuid4().hex[:12]}")
    await migrate(url)
    early, other = await asyncpg.connect(url.split("?")[0]), await asyncpg.connect(url.split("?")[0])
    try:
        starts = datetime.now(UTC) + timedelta(hours=1)
        slots = [uuid.uuid4() for _ in range(20)]
        await other.executemany(
            "INSERT INTO slots (id, resource, starts_at, ends_at, capacity, hold_seconds)"
            " VALUES ($1, 'plan', $2, $3, 500, 60)",
            [(slot, starts, starts + timedelta(minutes=30)) for slot in slots],
        )
        batch = lambda slot, tag, n: admit_args(  # noqa: E731
            slot, [ReserveRequest(f"{tag}-{i}", "key") for i in range(n)]
        )
        await early.fetch(ADMIT_SQL, *batch(slots[0], "early", 1))  # its plans are made now
        for i, slot in enumerate(slots):
            await other.fetch(ADMIT_SQL, *batch(slot, f"grow{i}", 250))
        async with early.transaction():
            await early.fetch(ADMIT_SQL, *batch(slots[1], "late", 3))
            scans = await early.fetchval(
                "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'bookings'"
            )
        assert await other.fetchval("SELECT count(*) FROM bookings") == 5004
        assert scans == 0
    finally:
        await early.close()
        await other.close()
