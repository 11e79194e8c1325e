"""A hold never outlives its slot: it expires at the slot's end, and a confirm after that is HoldExpired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from slotengine.domain.errors import HoldExpired
from slotengine.domain.policy import SlotSpec
from slotengine.domain.states import BookingState
from slotengine.service import queries
from slotengine.service.engine import Engine
from slotengine.service.reservations import confirm_booking, reserve_slot
from slotengine.service.views import Caller
from tests.deadlines import eventually
from tests.integration.conftest import ADMIN, db_clock_passed, events_of


async def test_a_confirm_after_the_slot_ended_is_hold_expired(engine: Engine) -> None:
    starts = datetime.now(UTC) + timedelta(seconds=2)
    slot = await queries.create_slot(
        engine, ADMIN, SlotSpec("slot-end", starts, starts + timedelta(seconds=1), 1, 3600)
    )
    holder = Caller("slot-end-holder")
    held = await reserve_slot(engine, holder, slot.id, "k")
    assert held.state is BookingState.RESERVED
    assert held.expires_at == slot.ends_at  # not an hour from now

    await eventually(lambda: db_clock_passed(slot.ends_at), bool, within=30)
    with pytest.raises(HoldExpired) as refused:
        await confirm_booking(engine, holder, held.id)

    assert refused.value.expired_at == slot.ends_at
    assert await events_of(held.id) == ["hold", "expire"]
    after = await queries.get_booking(engine, holder, held.id)
    assert after is not None and after.state is BookingState.EXPIRED
