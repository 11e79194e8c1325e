"""Done-when 6: an idempotency key replays the first answer."""

from __future__ import annotations

import asyncio

from slotengine.store.database import connection
from tests.e2e.conftest import GraphQL, token


async def test_the_same_key_replays_the_same_booking(gql: GraphQL) -> None:
    alice = token("idem-alice")
    slot_id = await gql.create_slot()

    first = await gql.reserve(alice, slot_id, "checkout-1")
    again = await gql.reserve(alice, slot_id, "checkout-1")

    assert first["__typename"] == again["__typename"] == "Booking"
    assert again["id"] == first["id"]
    assert again["state"] == "RESERVED"


async def test_twenty_concurrent_duplicates_make_one_booking(gql: GraphQL) -> None:
    alice = token("idem-burst")
    slot_id = await gql.create_slot(capacity=5)

    answers = await asyncio.gather(*(gql.reserve(alice, slot_id, "burst") for _ in range(20)))

    assert {a["id"] for a in answers} == {answers[0]["id"]}
    rows = await connection().execute_query_dict(
        "SELECT count(*) AS n FROM bookings WHERE slot_id = $1", [slot_id]
    )
    assert rows[0]["n"] == 1


async def test_the_same_key_for_another_slot_is_idempotency_key_reused(gql: GraphQL) -> None:
    alice = token("idem-other")
    slot_a, slot_b = await gql.create_slot(), await gql.create_slot()
    await gql.reserve(alice, slot_a, "k")

    reused = await gql.reserve(alice, slot_b, "k")

    assert reused["__typename"] == "IdempotencyKeyReused"
    assert "k" in reused["message"]


async def test_concurrent_uses_of_one_key_on_two_slots_book_only_one(gql: GraphQL) -> None:
    alice = token("idem-split")
    slots = [await gql.create_slot() for _ in range(2)]

    answers = await asyncio.gather(*(gql.reserve(alice, s, "split") for s in slots * 5))

    kinds = sorted({a["__typename"] for a in answers})
    assert kinds == ["Booking", "IdempotencyKeyReused"]
    assert len({a["id"] for a in answers if a["__typename"] == "Booking"}) == 1


async def test_keys_belong_to_their_holder(gql: GraphQL) -> None:
    slot_id = await gql.create_slot(capacity=2)

    alice = await gql.reserve(token("idem-a"), slot_id, "same-key")
    bob = await gql.reserve(token("idem-b"), slot_id, "same-key")

    assert alice["id"] != bob["id"]
    assert alice["state"] == bob["state"] == "RESERVED"


async def test_a_new_key_for_a_slot_already_held_returns_the_live_booking(gql: GraphQL) -> None:
    alice = token("idem-live")
    slot_id = await gql.create_slot(capacity=3)

    first = await gql.reserve(alice, slot_id, "one")
    second = await gql.reserve(alice, slot_id, "two")

    assert second["id"] == first["id"]
    slot = await gql.slot(slot_id)
    assert slot is not None and slot["held"] == 1
