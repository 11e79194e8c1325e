"""createSlots: a weekly pattern becomes slots, right across daylight-saving changes, all or none."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from slotengine.domain.recurrence import RecurrencePattern, Weekday
from slotengine.redis.clock import epoch_ms
from slotengine.service import mirror, slot_generation
from slotengine.service.engine import Engine
from slotengine.service.views import Caller
from slotengine.store.database import connection
from tests.e2e.conftest import ADMIN, GraphQL, token

CREATE_SLOTS = """mutation($input: CreateSlotsInput!) { createSlots(input: $input) {
  __typename
  ... on SlotBatch { count slots { id resource startsAt endsAt capacity holdSeconds available closed } }
  ... on Error { message }
  ... on ValidationError { field } } }"""
LIST = """query($r: String!) { slots(resource: $r, first: 200) { id startsAt } }"""
BERLIN = ZoneInfo("Europe/Berlin")
WORKDAYS = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]


def resource() -> str:
    return f"berlin-room-{uuid.uuid4().hex[:8]}"


def week_input(name: str, first: date, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "resource": name,
        "timeZone": "Europe/Berlin",
        "firstDate": first.isoformat(),
        "lastDate": (first + timedelta(days=6)).isoformat(),
        "weekdays": WORKDAYS,
        "windowStart": "09:00",
        "windowEnd": "17:00",
        "slotMinutes": 30,
        "everyMinutes": 30,
    }
    values.update(overrides)
    return values


async def create(gql: GraphQL, values: dict[str, Any], as_: str | None = ADMIN) -> dict[str, Any]:
    data = await gql.run(CREATE_SLOTS, {"input": values}, as_=as_)
    result: dict[str, Any] = data["createSlots"]
    return result


def utc_starts(days: list[tuple[str, int]]) -> list[str]:
    """Sixteen half-hour starts a day from 09:00 local, given each day and its UTC hour for 09:00."""
    return [
        (datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC) + timedelta(minutes=30 * k)).isoformat()
        for day, hour in days
        for k in range(16)
    ]


def next_berlin_fall_back(today: date) -> date:
    """The last Sunday of October still at least a week away."""
    for year in (today.year, today.year + 1):
        october_31 = date(year, 10, 31)
        change = october_31 - timedelta(days=(october_31.weekday() - 6) % 7)
        if change - today >= timedelta(days=7):
            return change
    raise AssertionError("unreachable")


async def test_a_working_week_across_berlins_fall_back_keeps_local_times(gql: GraphQL) -> None:
    # Thursday 2026-10-22 to Wednesday 2026-10-28; clocks go back on Sunday the 25th.
    name = resource()
    batch = await create(gql, week_input(name, date(2026, 10, 22)))

    assert batch["__typename"] == "SlotBatch"
    assert batch["count"] == len(batch["slots"]) == 5 * 16
    assert [s["startsAt"] for s in batch["slots"]] == utc_starts(
        [("2026-10-22", 7), ("2026-10-23", 7), ("2026-10-26", 8), ("2026-10-27", 8), ("2026-10-28", 8)]
    )
    for slot in batch["slots"]:
        starts, ends = datetime.fromisoformat(slot["startsAt"]), datetime.fromisoformat(slot["endsAt"])
        assert ends - starts == timedelta(minutes=30)
        assert time(9) <= starts.astimezone(BERLIN).time() <= time(16, 30)
        assert (slot["resource"], slot["capacity"], slot["holdSeconds"]) == (name, 1, 120)
        assert (slot["available"], slot["closed"]) == (1, False)


async def test_created_slots_are_listed_by_the_slots_query(gql: GraphQL) -> None:
    name = resource()
    batch = await create(gql, week_input(name, date(2026, 10, 22)))

    listed = (await gql.run(LIST, {"r": name}, as_=ADMIN))["slots"]

    assert [s["id"] for s in listed] == [s["id"] for s in batch["slots"]]
    assert [s["startsAt"] for s in listed] == [s["startsAt"] for s in batch["slots"]]


async def test_created_slots_take_the_fill_policy_given_else_strict_fifo(gql: GraphQL) -> None:
    terms = "query($r: String!) { slots(resource: $r, first: 200) { fillPolicy maxPassOvers } }"
    first_fit, plain = resource(), resource()
    batch = await create(
        gql, week_input(first_fit, date(2031, 3, 3), fillPolicy="FIRST_FIT", maxPassOvers=2, capacity=4)
    )
    assert batch["__typename"] == "SlotBatch"
    await create(gql, week_input(plain, date(2031, 3, 3)))

    assert {
        (s["fillPolicy"], s["maxPassOvers"])
        for s in (await gql.run(terms, {"r": first_fit}, as_=ADMIN))["slots"]
    } == {("FIRST_FIT", 2)}
    assert {
        (s["fillPolicy"], s["maxPassOvers"]) for s in (await gql.run(terms, {"r": plain}, as_=ADMIN))["slots"]
    } == {("STRICT_FIFO", 3)}


async def test_a_slot_that_ended_days_ago_still_reads_its_counts(gql: GraphQL) -> None:
    # Its Redis mirror expires as soon as it is written: the counts come from PostgreSQL.
    slot_id = await gql.create_slot(starts_in=-timedelta(days=3))

    slot = await gql.slot(slot_id)

    assert slot is not None
    assert (slot["available"], slot["held"], slot["confirmed"], slot["queueLength"]) == (1, 0, 0, 0)


async def test_created_slots_take_reservations_and_are_mirrored_in_redis(
    gql: GraphQL, engine: Engine
) -> None:
    change = next_berlin_fall_back(datetime.now(UTC).date())
    name = resource()
    batch = await create(gql, week_input(name, change - timedelta(days=3), capacity=2))
    slots = batch["slots"]
    offsets = {datetime.fromisoformat(s["startsAt"]).astimezone(BERLIN).utcoffset() for s in slots}
    assert batch["count"] == 80 and offsets == {timedelta(hours=2), timedelta(hours=1)}
    # Written with the batch, not on first use.
    meta = await engine.redis.hgetall(engine.keys(slots[-1]["id"]).meta)
    ends_at = datetime.fromisoformat(slots[-1]["endsAt"])
    assert meta == {
        "capacity": "2",
        "confirmed": "0",
        "closed": "0",
        "version": "0",  # a new slot's version: the mirror follows it by deltas from here
        "drop_at": str(epoch_ms(ends_at + timedelta(days=1))),  # the mirror outlives the slot by a day
    }

    alice, bob = token("batch-alice"), token("batch-bob")
    first = await gql.reserve(alice, slots[0]["id"], "k")
    after_change = await gql.reserve(bob, slots[-1]["id"], "k")
    confirmed = await gql.confirm(alice, first["id"])

    assert (first["state"], after_change["state"], confirmed["state"]) == (
        "RESERVED",
        "RESERVED",
        "CONFIRMED",
    )
    slot = await gql.slot(slots[0]["id"])
    assert slot is not None
    assert (slot["available"], slot["confirmed"]) == (1, 1)


@pytest.mark.parametrize("caller", [token("not-admin"), None])
async def test_only_an_admin_can_create_slots_in_bulk(gql: GraphQL, caller: str | None) -> None:
    name = resource()
    refused = await create(gql, week_input(name, date(2031, 3, 3)), as_=caller)

    assert refused["__typename"] == "NotAuthorized"
    assert (await gql.run(LIST, {"r": name}, as_=ADMIN))["slots"] == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"timeZone": "Europe/Atlantis"}, "timeZone"),
        ({"timeZone": "localtime"}, "timeZone"),
        # 1-minute slots, 8 hours a day, 5 days: 2,400 slots, over the cap of 2,000.
        ({"slotMinutes": 1, "everyMinutes": 1}, "lastDate"),
        ({"lastDate": "2032-03-08"}, "lastDate"),
        ({"lastDate": "2031-03-02"}, "lastDate"),
        ({"weekdays": []}, "weekdays"),
        ({"windowEnd": "08:00"}, "windowEnd"),
        ({"windowStart": "09:00+02:00"}, "windowStart"),
        ({"slotMinutes": 0}, "slotMinutes"),
        ({"everyMinutes": -5}, "everyMinutes"),
        ({"capacity": 0}, "capacity"),
        ({"holdSeconds": 0}, "holdSeconds"),
        ({"maxPassOvers": -1}, "maxPassOvers"),
        ({"maxPassOvers": 1001}, "maxPassOvers"),
    ],
)
async def test_a_bad_pattern_is_a_validation_error_naming_the_field(
    gql: GraphQL, overrides: dict[str, Any], field: str
) -> None:
    name = resource()
    refused = await create(gql, week_input(name, date(2031, 3, 3), **overrides))

    assert refused["__typename"] == "ValidationError"
    assert refused["field"] == field
    assert (await gql.run(LIST, {"r": name}, as_=ADMIN))["slots"] == []


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"windowStart": "9am"}, "Time"),
        ({"firstDate": "next monday"}, "Date"),
        ({"weekdays": ["FUNDAY"]}, "Weekday"),
    ],
)
async def test_malformed_values_are_client_errors_not_500s(
    gql: GraphQL, overrides: dict[str, Any], says: str
) -> None:
    response = await gql.post(CREATE_SLOTS, {"input": week_input(resource(), date(2031, 3, 3), **overrides)})

    assert response.status_code == 200
    assert says in response.json()["errors"][0]["message"]
    assert "Traceback" not in response.text


async def test_a_batch_interrupted_before_commit_leaves_no_slot_and_no_mirror(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirrored: list[UUID] = []
    real_mirror = mirror.mirror_new_slots

    async def mirror_then_cancel(engine: Engine, slots: list[tuple[UUID, int, datetime]]) -> None:
        await real_mirror(engine, slots)
        mirrored.extend(slot_id for slot_id, _, _ in slots)
        raise asyncio.CancelledError

    monkeypatch.setattr(slot_generation, "mirror_new_slots", mirror_then_cancel)
    name = resource()
    pattern = RecurrencePattern(
        resource=name,
        time_zone="Europe/Berlin",
        first_date=date(2031, 3, 3),
        last_date=date(2031, 3, 7),
        weekdays=frozenset(Weekday),
        window_start=time(9),
        window_end=time(17),
        slot_minutes=30,
    )

    with pytest.raises(asyncio.CancelledError):
        await slot_generation.create_slots(engine, Caller("admin", admin=True), pattern)

    rows = await connection().execute_query_dict(
        "SELECT count(*) AS n FROM slots WHERE resource = $1", [name]
    )
    assert len(mirrored) == 5 * 16
    assert rows[0]["n"] == 0
    assert await engine.redis.exists(*(key for i in mirrored for key in engine.keys(str(i)).all())) == 0
