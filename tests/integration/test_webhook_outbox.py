"""The webhook outbox costs nothing while no endpoint is registered: its trigger is disabled."""

from __future__ import annotations

from slotengine.service.engine import Engine
from slotengine.service.reservations import cancel_booking, reserve_slot
from slotengine.service.views import Caller
from tests.integration.conftest import new_slot, sql


async def test_with_no_endpoint_the_trigger_is_off_and_transitions_write_no_delivery(engine: Engine) -> None:
    assert await sql("SELECT 1 FROM webhook_endpoints WHERE deleted_at IS NULL") == []
    trigger = await sql(
        "SELECT tgenabled::text AS tgenabled FROM pg_trigger WHERE tgrelid = 'transitions'::regclass"
        " AND tgname = 'transitions_to_webhooks'"
    )
    assert trigger == [{"tgenabled": "D"}]
    slot_id = await new_slot(engine)
    holder = Caller("outbox-holder")
    booking = await reserve_slot(engine, holder, slot_id, "k")
    await cancel_booking(engine, holder, booking.id, None)
    assert await sql("SELECT 1 FROM transitions WHERE booking_id = $1", booking.id) != []
    assert await sql("SELECT 1 FROM webhook_deliveries WHERE slot_id = $1", slot_id) == []
