"""Party-size bookings (units) and fill policies on the real PostgreSQL and Redis: a party is held,
confirmed, expired and promoted as one booking; STRICT_FIFO and FIRST_FIT decide who is offered
freed units; the database refuses a unit owned twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from tortoise.exceptions import IntegrityError

from slotengine.domain.errors import IdempotencyKeyReused, ValidationError
from slotengine.domain.fill_policy import FillPolicy
from slotengine.domain.policy import SlotSpec
from slotengine.domain.states import BookingState
from slotengine.redis import scripts
from slotengine.service import expiry, queries, slot_admin
from slotengine.service.engine import Engine
from slotengine.service.reservations import cancel_booking, confirm_booking, reserve_slot, settle_slot
from slotengine.service.views import Caller
from tests.deadlines import eventually
from tests.integration.conftest import ADMIN, db_clock_passed, events_of, sql

S = BookingState


async def _slot(
    engine: Engine,
    capacity: int,
    fill: FillPolicy = FillPolicy.STRICT_FIFO,
    *,
    hold_seconds: int = 120,
    max_pass_overs: int = 3,
) -> str:
    starts = datetime.now(UTC) + timedelta(days=1)
    spec = SlotSpec(
        "units", starts, starts + timedelta(minutes=30), capacity, hold_seconds,
        fill_policy=fill, max_pass_overs=max_pass_overs,
    )  # fmt: skip
    return (await queries.create_slot(engine, ADMIN, spec)).id


async def _owned(slot_id: str) -> dict[str, list[int]]:
    """booking id -> the unit numbers it owns in booking_units."""
    rows = await sql(
        "SELECT booking_id, unit FROM booking_units WHERE slot_id = $1 ORDER BY unit", UUID(slot_id)
    )
    owned: dict[str, list[int]] = {}
    for row in rows:
        owned.setdefault(str(row["booking_id"]), []).append(int(row["unit"]))
    return owned


async def _state(booking_id: str) -> str:
    return str((await sql("SELECT state FROM bookings WHERE id = $1", UUID(booking_id)))[0]["state"])


async def _mirror_counts(engine: Engine, slot_id: str) -> tuple[int, int]:
    """(held units, confirmed units) as the Redis mirror counts them."""
    status = await scripts.read_slot_status(engine.redis, engine.keys(slot_id).all())
    assert status is not None
    return status.live_holds + status.lapsed_holds, status.confirmed


async def test_a_party_holds_its_units_as_one_booking_and_confirms_and_cancels_as_one(engine: Engine) -> None:
    slot_id = await _slot(engine, 5)
    party = await reserve_slot(engine, Caller("u-party"), slot_id, "k", units=3)
    assert party.state is S.RESERVED and party.units == 3
    assert await _owned(slot_id) == {party.id: [1, 2, 3]}
    slot = await queries.get_slot(engine, slot_id)
    assert slot is not None and (slot.held, slot.available) == (3, 2)
    assert await _mirror_counts(engine, slot_id) == (3, 0)

    confirmed = await confirm_booking(engine, Caller("u-party"), party.id)
    assert confirmed.state is S.CONFIRMED and confirmed.units == 3
    assert await _mirror_counts(engine, slot_id) == (0, 3)
    cancelled = await cancel_booking(engine, Caller("u-party"), party.id, None)
    assert cancelled.state is S.CANCELLED
    assert await _owned(slot_id) == {}
    assert await _mirror_counts(engine, slot_id) == (0, 0)
    assert await events_of(party.id) == ["hold", "confirm", "cancel"]


async def test_a_party_that_does_not_fit_waits_and_is_promoted_whole_when_its_units_free(
    engine: Engine,
) -> None:
    slot_id = await _slot(engine, 3)
    first = await reserve_slot(engine, Caller("u-a"), slot_id, "k", units=2)
    party = await reserve_slot(engine, Caller("u-party2"), slot_id, "k", units=2)
    assert party.state is S.PENDING and party.queue_position == 1
    assert await _owned(slot_id) == {first.id: [1, 2]}

    await cancel_booking(engine, Caller("u-a"), first.id, None)

    promoted = await queries.get_booking(engine, Caller("u-party2"), party.id)
    assert promoted is not None and promoted.state is S.RESERVED and promoted.units == 2
    assert await _owned(slot_id) == {party.id: [1, 2]}
    assert await events_of(party.id) == ["queue", "promote"]
    assert await _mirror_counts(engine, slot_id) == (2, 0)


async def test_a_lapsed_party_expires_as_one_booking_and_its_units_go_to_the_queue(engine: Engine) -> None:
    slot_id = await _slot(engine, 2, hold_seconds=1)
    party = await reserve_slot(engine, Caller("u-lapse"), slot_id, "k", units=2)
    waiter = await reserve_slot(engine, Caller("u-lapse-next"), slot_id, "k", units=2)
    assert party.expires_at is not None and waiter.state is S.PENDING
    await eventually(lambda: db_clock_passed(party.expires_at), bool)  # type: ignore[arg-type]
    fence = int((await sql("SELECT fence FROM bookings WHERE id = $1", UUID(party.id)))[0]["fence"])

    assert await expiry.expire_hold(engine, UUID(party.id), fence) is expiry.ExpiryOutcome.EXPIRED

    assert await events_of(party.id) == ["hold", "expire"]
    assert await events_of(waiter.id) == ["queue", "promote"]
    assert await _owned(slot_id) == {waiter.id: [1, 2]}


async def test_strict_fifo_a_party_at_the_head_blocks_a_single_behind_it(engine: Engine) -> None:
    slot_id = await _slot(engine, 3)
    holder = await reserve_slot(engine, Caller("sf-a"), slot_id, "k", units=2)
    party = await reserve_slot(engine, Caller("sf-party"), slot_id, "k", units=2)
    single = await reserve_slot(engine, Caller("sf-single"), slot_id, "k")
    # One unit is free, but the head needs two: nobody behind it passes.
    assert party.state is S.PENDING and single.state is S.PENDING and single.queue_position == 2
    await settle_slot(engine, UUID(slot_id))
    assert await _state(single.id) == S.PENDING

    await cancel_booking(engine, Caller("sf-a"), holder.id, None)

    assert await _state(party.id) == S.RESERVED
    assert await _state(single.id) == S.RESERVED  # the third unit, after the party took two


async def test_strict_fifo_a_blocking_party_leaving_the_queue_lets_the_next_one_in(engine: Engine) -> None:
    slot_id = await _slot(engine, 3)
    await reserve_slot(engine, Caller("sl-a"), slot_id, "k")
    party = await reserve_slot(engine, Caller("sl-party"), slot_id, "k", units=3)
    single = await reserve_slot(engine, Caller("sl-single"), slot_id, "k")
    assert party.state is S.PENDING and single.state is S.PENDING  # two units free, the head needs three

    await cancel_booking(engine, Caller("sl-party"), party.id, None)

    # The head left: the single behind it fits in a free unit, in the same transaction.
    assert await _state(single.id) == S.RESERVED
    assert await events_of(single.id) == ["queue", "promote"]


async def test_first_fit_a_single_takes_the_unit_a_party_at_the_head_cannot_use(engine: Engine) -> None:
    slot_id = await _slot(engine, 3, FillPolicy.FIRST_FIT)
    await reserve_slot(engine, Caller("ff-a"), slot_id, "k", units=2)
    party = await reserve_slot(engine, Caller("ff-party"), slot_id, "k", units=2)

    single = await reserve_slot(engine, Caller("ff-single"), slot_id, "k")

    assert single.state is S.RESERVED
    assert await events_of(single.id) == ["queue", "promote"]  # it queued behind the party, then passed it
    assert await _state(party.id) == S.PENDING
    rows = await sql("SELECT passed_over FROM bookings WHERE id = $1", UUID(party.id))
    assert rows[0]["passed_over"] == 1


async def test_first_fit_a_party_passed_over_its_bound_blocks_everyone_behind_it(engine: Engine) -> None:
    slot_id = await _slot(engine, 4, FillPolicy.FIRST_FIT, max_pass_overs=1)
    blocker = await reserve_slot(engine, Caller("fb-a"), slot_id, "k", units=2)
    party = await reserve_slot(engine, Caller("fb-party"), slot_id, "k", units=3)
    passing = await reserve_slot(engine, Caller("fb-1"), slot_id, "k")
    assert passing.state is S.RESERVED  # the one pass-over the bound allows

    blocked = await reserve_slot(engine, Caller("fb-2"), slot_id, "k")

    assert blocked.state is S.PENDING and blocked.queue_position == 2  # a unit is free; the party blocks
    await cancel_booking(engine, Caller("fb-a"), blocker.id, None)
    assert await _state(party.id) == S.RESERVED  # three units free: the party first
    assert await _state(blocked.id) == S.PENDING  # and nothing left for the single behind it


async def test_units_below_one_or_above_the_capacity_are_refused_as_validation_errors(engine: Engine) -> None:
    slot_id = await _slot(engine, 2)
    for units in (0, 3):
        with pytest.raises(ValidationError) as refused:
            await reserve_slot(engine, Caller("u-bad"), slot_id, f"k{units}", units=units)
        assert refused.value.field == "units"
    assert await sql("SELECT id FROM bookings WHERE slot_id = $1", UUID(slot_id)) == []


async def test_the_same_key_for_another_party_size_is_a_reused_key(engine: Engine) -> None:
    slot_id = await _slot(engine, 4)
    first = await reserve_slot(engine, Caller("u-key"), slot_id, "k", units=2)
    again = await reserve_slot(engine, Caller("u-key"), slot_id, "k", units=2)
    assert again.id == first.id
    for units in (1, 3):
        with pytest.raises(IdempotencyKeyReused):
            await reserve_slot(engine, Caller("u-key"), slot_id, "k", units=units)


async def test_the_database_refuses_a_unit_owned_twice_whichever_of_a_partys_units_it_is(
    engine: Engine,
) -> None:
    slot_id = await _slot(engine, 3)
    await reserve_slot(engine, Caller("db-party"), slot_id, "k", units=2)  # units 1 and 2
    insert = (
        "INSERT INTO bookings (id, slot_id, holder, state, unit, units, extra_units, fence, expires_at,"
        " idempotency_key) VALUES (gen_random_uuid(), $1, $2, 'CONFIRMED', $3, $4, $5::int[], 1,"
        " now() + interval '1 minute', 'k')"
    )
    with pytest.raises(IntegrityError, match="booking_units_pkey"):
        await sql(insert, UUID(slot_id), "db-intruder", 3, 2, [2])
    with pytest.raises(IntegrityError, match="exceeds the capacity"):
        await sql(insert, UUID(slot_id), "db-intruder", 3, 2, [4])
    with pytest.raises(IntegrityError, match="booking_units_pkey"):
        await sql("INSERT INTO booking_units (slot_id, unit, booking_id) SELECT slot_id, 1, id FROM bookings"
                  " WHERE slot_id = $1", UUID(slot_id))  # fmt: skip
    assert sum(len(units) for units in (await _owned(slot_id)).values()) == 2


async def test_shrinking_moves_a_partys_units_down_and_never_below_the_units_in_use(engine: Engine) -> None:
    slot_id = await _slot(engine, 5)
    single = await reserve_slot(engine, Caller("sh-a"), slot_id, "k", units=2)  # 1, 2
    party = await reserve_slot(engine, Caller("sh-party"), slot_id, "k", units=3)  # 3, 4, 5
    await cancel_booking(engine, Caller("sh-a"), single.id, None)
    with pytest.raises(ValidationError):
        await slot_admin.update_slot(engine, ADMIN, slot_id, slot_admin.SlotUpdate(capacity=2))

    slot = await slot_admin.update_slot(engine, ADMIN, slot_id, slot_admin.SlotUpdate(capacity=3))

    assert slot.capacity == 3 and slot.held == 3
    assert await _owned(slot_id) == {party.id: [1, 2, 3]}
    assert await _state(party.id) == S.RESERVED


async def test_update_slot_sets_the_fill_policy_and_the_queue_moves_by_it(engine: Engine) -> None:
    slot_id = await _slot(engine, 3)
    await reserve_slot(engine, Caller("up-a"), slot_id, "k", units=2)
    party = await reserve_slot(engine, Caller("up-party"), slot_id, "k", units=2)
    single = await reserve_slot(engine, Caller("up-single"), slot_id, "k")
    assert single.state is S.PENDING

    slot = await slot_admin.update_slot(
        engine, ADMIN, slot_id, slot_admin.SlotUpdate(fill_policy=FillPolicy.FIRST_FIT, max_pass_overs=2)
    )

    assert (slot.fill_policy, slot.max_pass_overs) == (FillPolicy.FIRST_FIT, 2)
    assert await _state(single.id) == S.RESERVED and await _state(party.id) == S.PENDING
