"""Issue 13, item 2 over GraphQL: reserveSlot(units:) books a party as one booking, Slot.fillPolicy
and maxPassOvers are set by createSlot and updateSlot, and every refusal is a typed member."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.conftest import ADMIN, GraphQL, token

SLOT_FIELDS = """__typename
  ... on Slot { id capacity available held confirmed queueLength fillPolicy maxPassOvers }
  ... on ValidationError { field message }
  ... on Error { message }"""
CREATE = f"mutation($i: CreateSlotInput!) {{ createSlot(input: $i) {{ {SLOT_FIELDS} }} }}"
UPDATE = (
    f"mutation($s: ID!, $i: UpdateSlotInput!) {{ updateSlot(slotId: $s, input: $i) {{ {SLOT_FIELDS} }} }}"
)
SLOT = "query($s: ID!) { slot(id: $s) { available held confirmed queueLength fillPolicy maxPassOvers } }"
RESERVE = """mutation($s: ID!, $k: String!, $u: Int!) {
  reserveSlot(slotId: $s, idempotencyKey: $k, units: $u) {
  __typename
  ... on Booking { id state units queuePosition expiresAt }
  ... on ValidationError { field message }
  ... on Error { message } } }"""
CONFIRM = """mutation($b: ID!) { confirmBooking(bookingId: $b) {
  __typename ... on Booking { state units } ... on Error { message } } }"""
BOOKING = "query($b: ID!) { booking(id: $b) { state units queuePosition history { event } } }"


async def _create(gql: GraphQL, capacity: int, **terms: Any) -> dict[str, Any]:
    starts = datetime.now(UTC) + timedelta(days=1)
    spec = {
        "resource": "e2e-units",
        "startsAt": starts.isoformat(),
        "endsAt": (starts + timedelta(hours=1)).isoformat(),
    }
    created: dict[str, Any] = (
        await gql.run(CREATE, {"i": {**spec, "capacity": capacity, **terms}}, as_=ADMIN)
    )["createSlot"]
    return created


async def _reserve(gql: GraphQL, who: str, slot_id: str, units: int, key: str = "k") -> dict[str, Any]:
    answer: dict[str, Any] = (await gql.run(RESERVE, {"s": slot_id, "k": key, "u": units}, as_=who))[
        "reserveSlot"
    ]
    return answer


async def test_a_party_is_held_and_confirmed_as_one_booking_and_the_slot_counts_its_units(
    gql: GraphQL,
) -> None:
    slot = await _create(gql, 4)
    assert (slot["fillPolicy"], slot["maxPassOvers"]) == ("STRICT_FIFO", 3)  # today's behaviour by default
    party = token("e2e-party")
    held = await _reserve(gql, party, slot["id"], 3)
    assert (held["__typename"], held["state"], held["units"]) == ("Booking", "RESERVED", 3)
    assert held["expiresAt"] is not None
    assert (await gql.run(SLOT, {"s": slot["id"]}))["slot"] == {
        "available": 1, "held": 3, "confirmed": 0, "queueLength": 0,
        "fillPolicy": "STRICT_FIFO", "maxPassOvers": 3,
    }  # fmt: skip

    confirmed = (await gql.run(CONFIRM, {"b": held["id"]}, as_=party))["confirmBooking"]

    assert confirmed == {"__typename": "Booking", "state": "CONFIRMED", "units": 3}
    counts = (await gql.run(SLOT, {"s": slot["id"]}))["slot"]
    assert (counts["available"], counts["held"], counts["confirmed"]) == (1, 0, 3)
    again = await _reserve(gql, party, slot["id"], 3)  # the same key replays the booking
    assert (again["id"], again["state"]) == (held["id"], "CONFIRMED")


async def test_units_out_of_range_and_a_key_reused_for_another_size_are_typed_refusals(gql: GraphQL) -> None:
    slot = await _create(gql, 2)
    who = token("e2e-bad-units")
    for units in (0, 3):
        refused = await _reserve(gql, who, slot["id"], units, key=f"k-{units}")
        assert (refused["__typename"], refused["field"]) == ("ValidationError", "units")
    await _reserve(gql, who, slot["id"], 2)
    reused = await _reserve(gql, who, slot["id"], 1)
    assert reused["__typename"] == "IdempotencyKeyReused"


async def test_first_fit_set_by_update_slot_lets_a_single_pass_a_party_that_cannot_fit(gql: GraphQL) -> None:
    slot = await _create(gql, 3)
    await _reserve(gql, token("e2e-ff-a"), slot["id"], 2)
    party = await _reserve(gql, token("e2e-ff-party"), slot["id"], 2)
    single = await _reserve(gql, token("e2e-ff-single"), slot["id"], 1)
    assert (party["state"], party["queuePosition"]) == ("PENDING", 1)
    assert (single["state"], single["queuePosition"]) == ("PENDING", 2)  # STRICT_FIFO: the party blocks

    updated = (
        await gql.run(
            UPDATE, {"s": slot["id"], "i": {"fillPolicy": "FIRST_FIT", "maxPassOvers": 1}}, as_=ADMIN
        )
    )["updateSlot"]

    assert (updated["fillPolicy"], updated["maxPassOvers"]) == ("FIRST_FIT", 1)
    assert (updated["available"], updated["queueLength"]) == (0, 1)
    seen = (await gql.run(BOOKING, {"b": single["id"]}, as_=token("e2e-ff-single")))["booking"]
    assert seen["state"] == "RESERVED" and [h["event"] for h in seen["history"]] == ["queue", "promote"]
    waiting = (await gql.run(BOOKING, {"b": party["id"]}, as_=token("e2e-ff-party")))["booking"]
    assert (waiting["state"], waiting["units"], waiting["queuePosition"]) == ("PENDING", 2, 1)


async def test_a_pass_over_bound_out_of_range_is_a_validation_error(gql: GraphQL) -> None:
    refused = await _create(gql, 2, fillPolicy="FIRST_FIT", maxPassOvers=-1)
    assert (refused["__typename"], refused["field"]) == ("ValidationError", "maxPassOvers")
    slot = await _create(gql, 2, fillPolicy="FIRST_FIT", maxPassOvers=5)
    assert (slot["fillPolicy"], slot["maxPassOvers"]) == ("FIRST_FIT", 5)
    updated = (await gql.run(UPDATE, {"s": slot["id"], "i": {"maxPassOvers": 1001}}, as_=ADMIN))["updateSlot"]
    assert (updated["__typename"], updated["field"]) == ("ValidationError", "maxPassOvers")
