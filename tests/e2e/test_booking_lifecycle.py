"""Done-when 4, 5 and 7: confirm, expiry, cancel with promotion, and the audit trail."""

from __future__ import annotations

from datetime import datetime

from slotengine.store.database import connection
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, GraphQL, token


async def database_clock_passed(moment: str) -> bool:
    rows = await connection().execute_query_dict(
        "SELECT now() > $1::timestamptz AS passed", [datetime.fromisoformat(moment)]
    )
    return bool(rows[0]["passed"])


async def test_the_holder_confirms_their_hold(gql: GraphQL) -> None:
    alice = token("confirm-alice")
    slot_id = await gql.create_slot()
    held = await gql.reserve(alice, slot_id, "k")
    assert held["state"] == "RESERVED"

    confirmed = await gql.confirm(alice, held["id"])

    assert confirmed["__typename"] == "Booking"
    assert confirmed["state"] == "CONFIRMED"
    slot = await gql.slot(slot_id)
    assert slot is not None
    assert (slot["available"], slot["held"], slot["confirmed"]) == (0, 0, 1)


async def test_someone_elses_confirm_is_refused_and_changes_nothing(gql: GraphQL) -> None:
    alice, mallory = token("owner-alice"), token("mallory")
    slot_id = await gql.create_slot()
    held = await gql.reserve(alice, slot_id, "k")

    by_stranger = await gql.confirm(mallory, held["id"])
    by_admin = await gql.confirm(ADMIN, held["id"])

    assert by_stranger["__typename"] == "BookingNotFound"
    assert by_admin["__typename"] == "NotHolder"
    booking = await gql.booking(alice, held["id"])
    assert booking is not None and booking["state"] == "RESERVED"
    assert await gql.booking(mallory, held["id"]) is None


async def test_a_confirm_after_expiry_is_hold_expired_and_the_booking_reads_expired(
    gql: GraphQL,
) -> None:
    alice = token("late-alice")
    slot_id = await gql.create_slot(hold_seconds=1)
    held = await gql.reserve(alice, slot_id, "k")
    await eventually(lambda: database_clock_passed(held["expiresAt"]), bool)

    late = await gql.confirm(alice, held["id"])

    assert late["__typename"] == "HoldExpired"
    assert late["bookingId"] == held["id"]
    assert late["expiredAt"] == held["expiresAt"]
    booking = await gql.booking(alice, held["id"])
    assert booking is not None and booking["state"] == "EXPIRED"
    # Asking again tells the same thing: the holder needs to know why.
    assert (await gql.confirm(alice, held["id"]))["__typename"] == "HoldExpired"


async def test_confirming_twice_is_an_invalid_transition_naming_the_states(gql: GraphQL) -> None:
    alice = token("twice-alice")
    slot_id = await gql.create_slot()
    held = await gql.reserve(alice, slot_id, "k")
    await gql.confirm(alice, held["id"])

    again = await gql.confirm(alice, held["id"])

    assert again["__typename"] == "InvalidTransition"
    assert again["fromState"] == "CONFIRMED"
    assert again["event"] == "confirm"
    assert "CONFIRMED" in again["message"]


async def test_cancelling_a_hold_offers_the_unit_to_the_head_of_the_queue(gql: GraphQL) -> None:
    slot_id = await gql.create_slot()
    holders = [token(f"line-{i}") for i in range(5)]
    answers = [await gql.reserve(t, slot_id, "k") for t in holders]
    assert [a["state"] for a in answers] == ["RESERVED"] + ["PENDING"] * 4
    assert [a["queuePosition"] for a in answers[1:]] == [1, 2, 3, 4]

    cancelled = await gql.cancel(holders[0], answers[0]["id"], "plans changed")

    assert cancelled["state"] == "CANCELLED"
    head = await gql.booking(holders[1], answers[1]["id"])
    assert head is not None
    assert head["state"] == "RESERVED"
    assert head["queuePosition"] is None
    assert head["expiresAt"] and head["expiresAt"] > answers[0]["expiresAt"]
    rest = [await gql.booking(t, a["id"]) for t, a in zip(holders[2:], answers[2:], strict=True)]
    assert [b["queuePosition"] for b in rest if b] == [1, 2, 3]
    slot = await gql.slot(slot_id)
    assert slot is not None and (slot["held"], slot["queueLength"]) == (1, 3)


async def test_leaving_the_queue_moves_everyone_behind_up(gql: GraphQL) -> None:
    slot_id = await gql.create_slot()
    holders = [token(f"leave-{i}") for i in range(4)]
    answers = [await gql.reserve(t, slot_id, "k") for t in holders]

    left = await gql.cancel(holders[1], answers[1]["id"])

    assert left["state"] == "CANCELLED"
    first = await gql.booking(holders[0], answers[0]["id"])
    assert first is not None and first["state"] == "RESERVED"  # the hold is untouched
    behind = [await gql.booking(holders[i], answers[i]["id"]) for i in (2, 3)]
    assert [b["queuePosition"] for b in behind if b] == [1, 2]


async def test_admin_completes_a_confirmed_booking_but_a_holder_cannot(gql: GraphQL) -> None:
    alice = token("complete-alice")
    slot_id = await gql.create_slot()
    held = await gql.reserve(alice, slot_id, "k")
    query = """mutation($b: ID!) { completeBooking(bookingId: $b) {
                 __typename ... on Booking { state } ... on InvalidTransition { fromState } } }"""

    too_early = await gql.run(query, {"b": held["id"]}, as_=ADMIN)
    await gql.confirm(alice, held["id"])
    by_holder = await gql.run(query, {"b": held["id"]}, as_=alice)
    done = await gql.run(query, {"b": held["id"]}, as_=ADMIN)

    assert too_early["completeBooking"] == {"__typename": "InvalidTransition", "fromState": "RESERVED"}
    assert by_holder["completeBooking"]["__typename"] == "NotAuthorized"
    assert done["completeBooking"] == {"__typename": "Booking", "state": "COMPLETED"}
    slot = await gql.slot(slot_id)
    assert slot is not None and slot["available"] == 0  # a served booking still used its unit


async def test_history_lists_every_transition_in_order_with_actor_event_and_time(
    gql: GraphQL,
) -> None:
    alice, bob = token("hist-alice"), token("hist-bob")
    slot_id = await gql.create_slot()
    first = await gql.reserve(alice, slot_id, "k")
    waiting = await gql.reserve(bob, slot_id, "k")
    await gql.cancel(alice, first["id"], "changed my mind")
    await gql.confirm(bob, waiting["id"])
    await gql.cancel(bob, waiting["id"])

    alice_booking = await gql.booking(alice, first["id"])
    bob_booking = await gql.booking(bob, waiting["id"])

    assert alice_booking is not None and bob_booking is not None
    steps = [(h["fromState"], h["toState"], h["event"], h["actor"]) for h in bob_booking["history"]]
    assert steps == [
        (None, "PENDING", "queue", "hist-bob"),
        ("PENDING", "RESERVED", "promote", "system"),
        ("RESERVED", "CONFIRMED", "confirm", "hist-bob"),
        ("CONFIRMED", "CANCELLED", "cancel", "hist-bob"),
    ]
    times = [h["at"] for h in bob_booking["history"]]
    assert times == sorted(times)
    assert alice_booking["history"][-1]["reason"] == "changed my mind"
    assert [h["toState"] for h in alice_booking["history"]] == ["RESERVED", "CANCELLED"]


async def test_an_admin_cancels_anyones_booking_and_is_the_recorded_actor(gql: GraphQL) -> None:
    alice = token("admin-cancel-alice")
    slot_id = await gql.create_slot()
    held = await gql.reserve(alice, slot_id, "k")

    cancelled = await gql.cancel(ADMIN, held["id"], "double-booked room")

    assert cancelled["state"] == "CANCELLED"
    booking = await gql.booking(alice, held["id"])
    assert booking is not None
    assert booking["history"][-1]["actor"] == "admin"
