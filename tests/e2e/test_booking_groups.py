"""Issue 13 item 1: all-or-nothing holds across slots (reserveSlots, confirmGroup, cancelGroup, the
group's expiry), over HTTP, with real worker and scheduler processes and slotStatus listeners."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from slotengine.store.database import connection
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, ApiProcess, GraphQL, token
from tests.e2e.ws import GraphQLWebSocket

pytestmark = pytest.mark.usefixtures("workers")

GROUP = """... on BookingGroup { id holder state expiresAt slotIds
  bookings { id slotId state expiresAt groupId queuePosition } }"""
RESERVE_FIELDS = f"""
  __typename {GROUP}
  ... on SlotUnavailable {{ slotId reason }}
  ... on SlotClosed {{ slotId }}
  ... on SlotNotFound {{ slotId }}
  ... on Error {{ message }}
"""
GROUP_FIELDS = f"""
  __typename {GROUP}
  ... on InvalidTransition {{ fromState event }}
  ... on Error {{ message }}
"""
CONFIRM_FIELDS = f"{GROUP_FIELDS} ... on HoldExpired {{ bookingId expiredAt }}"
SLOT_STATUS = "subscription($s: ID!) { slotStatus(slotId: $s) { held confirmed queueLength available } }"
QUEUE_POSITION = "subscription($b: ID!) { queuePosition(bookingId: $b) { state position expiresAt } }"


async def reserve_slots(
    gql: GraphQL, who: str, slot_ids: list[str], key: str, *, wait: bool = False
) -> dict[str, Any]:
    data = await gql.run(
        f"""mutation($s: [ID!]!, $k: String!, $w: Boolean) {{
              reserveSlots(slotIds: $s, idempotencyKey: $k, wait: $w) {{ {RESERVE_FIELDS} }} }}""",
        {"s": slot_ids, "k": key, "w": wait},
        as_=who,
    )
    result: dict[str, Any] = data["reserveSlots"]
    return result


async def group_call(gql: GraphQL, who: str, mutation: str, group_id: str) -> dict[str, Any]:
    fields = CONFIRM_FIELDS if mutation == "confirmGroup" else GROUP_FIELDS
    data = await gql.run(
        f"mutation($g: ID!) {{ {mutation}(groupId: $g) {{ {fields} }} }}", {"g": group_id}, as_=who
    )
    result: dict[str, Any] = data[mutation]
    return result


async def read_group(gql: GraphQL, who: str, group_id: str) -> dict[str, Any] | None:
    data = await gql.run(
        "query($g: ID!) { bookingGroup(id: $g) { id state expiresAt bookings { id slotId state } } }",
        {"g": group_id},
        as_=who,
    )
    result: dict[str, Any] | None = data["bookingGroup"]
    return result


async def holder_rows(holder: str) -> list[dict[str, Any]]:
    return await connection().execute_query_dict(
        "SELECT slot_id, state FROM bookings WHERE holder = $1", [holder]
    )


async def states_of(booking_ids: list[str]) -> list[str]:
    rows = await connection().execute_query_dict(
        "SELECT id, state FROM bookings WHERE id = ANY($1::uuid[])", [booking_ids]
    )
    by_id = {str(r["id"]): r["state"] for r in rows}
    return [by_id[b] for b in booking_ids]


async def test_a_group_holds_five_slots_with_one_expiry_and_confirms_them_together(
    gql: GraphQL, api_processes: list[ApiProcess]
) -> None:
    slots = [await gql.create_slot(resource="course") for _ in range(5)]
    alice = token("group-alice")
    async with GraphQLWebSocket(api_processes[0].ws, token("group-watcher")) as ws:
        ops = [await ws.subscribe(SLOT_STATUS, {"s": s}) for s in slots]
        for op in ops:
            assert (await ws.next(op))["slotStatus"]["held"] == 0

        # Listed in any order: the answer and the locks go by slot id.
        group = await reserve_slots(gql, alice, list(reversed(slots)), "course-1")
        assert group["__typename"] == "BookingGroup", group
        assert group["state"] == "RESERVED"
        assert sorted(group["slotIds"]) == sorted(slots) == group["slotIds"]
        assert {b["state"] for b in group["bookings"]} == {"RESERVED"}
        assert {b["expiresAt"] for b in group["bookings"]} == {group["expiresAt"]}
        assert {b["groupId"] for b in group["bookings"]} == {group["id"]}
        # Every slot's listener hears its hold, after the one commit.
        for op in ops:
            assert (await ws.next(op))["slotStatus"] == {
                "held": 1,
                "confirmed": 0,
                "queueLength": 0,
                "available": 0,
            }

        # The same key replays the group; the same key for other slots is refused.
        assert (await reserve_slots(gql, alice, slots, "course-1"))["id"] == group["id"]
        other = await gql.create_slot(resource="course")
        reused = await reserve_slots(gql, alice, [*slots[:4], other], "course-1")
        assert reused["__typename"] == "IdempotencyKeyReused", reused

        # A held booking of the group does not move alone.
        member = group["bookings"][0]
        alone = await gql.confirm(alice, member["id"])
        assert (alone["__typename"], alone["fromState"], alone["event"]) == (
            "InvalidTransition",
            "RESERVED",
            "confirm",
        )
        alone = await gql.cancel(alice, member["id"])
        assert alone["__typename"] == "InvalidTransition", alone

        # Someone else's group does not exist for them.
        assert (await group_call(gql, token("group-mallory"), "confirmGroup", group["id"]))[
            "__typename"
        ] == "GroupNotFound"

        confirmed = await group_call(gql, alice, "confirmGroup", group["id"])
        assert confirmed["state"] == "CONFIRMED", confirmed
        assert {b["state"] for b in confirmed["bookings"]} == {"CONFIRMED"}
        for op in ops:
            assert (await ws.next(op))["slotStatus"]["confirmed"] == 1
        again = await group_call(gql, alice, "confirmGroup", group["id"])
        assert (again["__typename"], again["fromState"]) == ("InvalidTransition", "CONFIRMED")

    trail = await connection().execute_query_dict(
        "SELECT t.event, t.actor FROM transitions t JOIN bookings b ON b.id = t.booking_id"
        " WHERE b.group_id = $1 ORDER BY t.id",
        [group["id"]],
    )
    assert sorted((r["event"], r["actor"]) for r in trail) == sorted(
        [("hold", "group-alice")] * 5 + [("confirm", "group-alice")] * 5
    )


async def test_one_full_slot_holds_nothing_anywhere_and_the_answer_names_it(gql: GraphQL) -> None:
    slots = [await gql.create_slot(resource="course") for _ in range(5)]
    full = slots[2]
    assert (await gql.reserve(token("group-single"), full, "k"))["state"] == "RESERVED"

    refused = await reserve_slots(gql, token("group-bob"), slots, "course-2")

    assert refused["__typename"] == "SlotUnavailable", refused
    assert refused["slotId"] == full
    assert full in refused["message"] and "nothing was held" in refused["message"]
    assert await holder_rows("group-bob") == []
    for slot_id in slots:
        seen = await gql.slot(slot_id)
        assert seen is not None
        assert (seen["held"], seen["available"]) == ((1, 0) if slot_id == full else (0, 1))
    # A closed or missing slot is named the same way.
    missing = "00000000-0000-4000-8000-000000000000"
    answer = await reserve_slots(gql, token("group-bob"), [slots[0], missing], "course-3")
    assert (answer["__typename"], answer["slotId"]) == ("SlotNotFound", missing)
    assert await holder_rows("group-bob") == []


async def test_the_group_expires_together_and_every_queue_is_promoted(gql: GraphQL) -> None:
    slots = [await gql.create_slot(resource="course", hold_seconds=2) for _ in range(3)]
    carol = token("group-carol")
    group = await reserve_slots(gql, carol, slots, "course-4")
    assert group["state"] == "RESERVED", group
    waiters = [await gql.reserve(token(f"group-waiter-{i}"), s, "k") for i, s in enumerate(slots)]
    assert {w["state"] for w in waiters} == {"PENDING"}

    # Only the database is watched: the workers expire the group and promote each queue.
    waiter_ids = [w["id"] for w in waiters]
    await eventually(lambda: states_of(waiter_ids), lambda s: s == ["RESERVED"] * 3, within=20)
    members = [b["id"] for b in group["bookings"]]
    assert await states_of(members) == ["EXPIRED"] * 3
    # Every hold ended at the group's one expiresAt (the group's timer, or the sweep when it ran
    # first: either way by PostgreSQL's clock at the same instant).
    ended = await connection().execute_query_dict(
        "SELECT DISTINCT b.expires_at FROM bookings b WHERE b.group_id = $1", [group["id"]]
    )
    assert [r["expires_at"].isoformat() for r in ended] == [
        datetime.fromisoformat(group["expiresAt"]).isoformat()
    ]

    late = await group_call(gql, carol, "confirmGroup", group["id"])
    assert late["__typename"] == "HoldExpired", late
    assert late["bookingId"] in members
    seen = await read_group(gql, carol, group["id"])
    assert seen is not None and seen["state"] == "EXPIRED"


async def test_cancelling_the_group_frees_every_slot_for_its_queue(gql: GraphQL) -> None:
    slots = [await gql.create_slot(resource="course") for _ in range(3)]
    dave = token("group-dave")
    group = await reserve_slots(gql, dave, slots, "course-5")
    waiters = [await gql.reserve(token(f"group-next-{i}"), s, "k") for i, s in enumerate(slots)]

    data = await gql.run(
        f"""mutation($g: ID!) {{ cancelGroup(groupId: $g, reason: "plans changed") {{ {GROUP_FIELDS} }} }}""",
        {"g": group["id"]},
        as_=ADMIN,
    )
    cancelled = data["cancelGroup"]

    assert cancelled["state"] == "CANCELLED", cancelled
    assert {b["state"] for b in cancelled["bookings"]} == {"CANCELLED"}
    assert await states_of([w["id"] for w in waiters]) == ["RESERVED"] * 3
    assert (await group_call(gql, dave, "cancelGroup", group["id"]))["__typename"] == "InvalidTransition"


async def test_reserve_slots_refuses_bad_input_with_a_validation_error(gql: GraphQL) -> None:
    slot_id = await gql.create_slot()
    erin = token("group-erin")
    for slot_ids in ([], [slot_id, slot_id], ["not-an-id"]):
        answer = await reserve_slots(gql, erin, slot_ids, "k")
        assert answer["__typename"] == "ValidationError", answer
    response = await gql.post('mutation { reserveSlots(slotIds: [], idempotencyKey: "k") { __typename } }')
    assert response.json()["data"]["reserveSlots"]["__typename"] == "NotAuthorized"


async def test_the_group_reads_back_for_its_holder_only(gql: GraphQL) -> None:
    slots = [await gql.create_slot(resource="course") for _ in range(2)]
    group = await reserve_slots(gql, token("group-fay"), slots, "k")
    mine = await read_group(gql, token("group-fay"), group["id"])
    assert mine is not None and mine["state"] == "RESERVED"
    assert await read_group(gql, token("group-gus"), group["id"]) is None
    assert await read_group(gql, ADMIN, group["id"]) is not None


async def offer_on(ws: GraphQLWebSocket, op: str) -> dict[str, Any]:
    """The first queuePosition message that is no longer a place in line (moves may come first)."""
    while True:
        update: dict[str, Any] = (await ws.next(op, within=20))["queuePosition"]
        if update["state"] != "PENDING":
            return update


async def group_state(group_id: str) -> str:
    rows = await connection().execute_query_dict("SELECT state FROM booking_groups WHERE id = $1", [group_id])
    return str(rows[0]["state"])


async def test_a_waiting_group_is_passed_by_nobody_and_gets_every_slot_at_once(
    gql: GraphQL, api_processes: list[ApiProcess]
) -> None:
    free, busy = await gql.create_slot(resource="doctor"), await gql.create_slot(resource="room")
    first = await gql.reserve(token("wait-first"), busy, "k")
    hana = token("wait-hana")

    group = await reserve_slots(gql, hana, [free, busy], "visit", wait=True)

    assert group["state"] == "PENDING", group
    assert group["expiresAt"] is None
    assert [(b["state"], b["queuePosition"]) for b in group["bookings"]] == [("PENDING", 1)] * 2
    # The doctor's unit is free, but the group waits for it: a newcomer queues behind the group.
    behind = await gql.reserve(token("wait-ivan"), free, "k")
    assert (behind["state"], behind["queuePosition"]) == ("PENDING", 2), behind
    doctor = await gql.slot(free)
    assert doctor is not None and (doctor["available"], doctor["queueLength"]) == (1, 2)

    # The room frees: the group heads both queues with a unit free in each, and gets both at once;
    # the group's waiter hears each offer on its queuePosition subscription.
    async with GraphQLWebSocket(api_processes[1].ws, hana) as ws:
        ops = [await ws.subscribe(QUEUE_POSITION, {"b": b["id"]}) for b in group["bookings"]]
        for op in ops:
            assert (await ws.next(op))["queuePosition"]["state"] == "PENDING"
        await gql.cancel(token("wait-first"), first["id"])
        offers = [await offer_on(ws, op) for op in ops]
    assert [o["state"] for o in offers] == ["RESERVED", "RESERVED"]
    assert offers[0]["expiresAt"] == offers[1]["expiresAt"] is not None
    await eventually(lambda: group_state(group["id"]), lambda s: s == "RESERVED", within=20)
    held = await read_group(gql, hana, group["id"])
    assert held is not None
    assert [b["state"] for b in held["bookings"]] == ["RESERVED"] * 2
    assert await states_of([behind["id"]]) == ["PENDING"]
    member_events = await connection().execute_query_dict(
        "SELECT t.event, t.actor FROM transitions t JOIN bookings b ON b.id = t.booking_id"
        " WHERE b.group_id = $1 ORDER BY t.id",
        [group["id"]],
    )
    assert [(r["event"], r["actor"]) for r in member_events] == [("queue", "wait-hana")] * 2 + [
        ("promote", "system")
    ] * 2

    confirmed = await group_call(gql, hana, "confirmGroup", group["id"])
    assert confirmed["state"] == "CONFIRMED", confirmed
    # The group gives the doctor back: the one behind it is next.
    await group_call(gql, hana, "cancelGroup", group["id"])
    assert await states_of([behind["id"]]) == ["RESERVED"]


async def test_a_waiting_group_lapses_whole_when_one_of_its_slots_starts(gql: GraphQL) -> None:
    soon = await gql.create_slot(resource="doctor", starts_in=timedelta(seconds=3))
    later = await gql.create_slot(resource="room")
    await gql.reserve(token("lapse-first"), soon, "k")
    await gql.reserve(token("lapse-first"), later, "k")

    group = await reserve_slots(gql, token("lapse-jo"), [soon, later], "visit", wait=True)
    assert group["state"] == "PENDING", group

    # The doctor's slot starts: its queue lapses, and with it the group's entry in the room's queue.
    await eventually(lambda: group_state(group["id"]), lambda s: s == "EXPIRED", within=20)
    members = [b["id"] for b in group["bookings"]]
    assert await states_of(members) == ["EXPIRED", "EXPIRED"]
    room = await gql.slot(later)
    assert room is not None and room["queueLength"] == 0
