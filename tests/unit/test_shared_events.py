"""Subscription events of shareable types are executed once per document, variables and event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from graphql import ExecutionResult, parse

from slotengine.api.schema import schema
from slotengine.api.shared_events import SharedEventExecutor, shared_slot
from slotengine.api.types import QueuePosition
from slotengine.domain.states import BookingState
from slotengine.service.views import LiveMessage, QueuePositionView, SlotView

STATUS = "subscription($s: ID!) { slotStatus(slotId: $s) { held queueLength } }"
STARTS = datetime(2026, 12, 1, 9, tzinfo=UTC)


def _view(held: int, cursor: str = "c1") -> LiveMessage[SlotView]:
    """The slot with `held` holds, as a subscription message at `cursor`."""
    return LiveMessage(_slot(held), cursor)


def _slot(held: int) -> SlotView:
    return SlotView(
        id="s1",
        resource="chair",
        starts_at=STARTS,
        ends_at=STARTS + timedelta(minutes=30),
        capacity=3,
        hold_seconds=120,
        closed=False,
        held=held,
        confirmed=0,
        queue_length=2,
    )


def _run(document: object, event: object, slot_id: str = "s1") -> ExecutionResult:
    executor = SharedEventExecutor.build(
        schema._schema,
        document,
        raw_variable_values={"s": slot_id},  # type: ignore[arg-type]
    )
    assert isinstance(executor, SharedEventExecutor)
    result = executor.build_per_event_executor(event).execute_operation(False)
    assert isinstance(result, ExecutionResult)
    return result


def test_equal_states_share_one_slot_object() -> None:
    assert shared_slot(_view(1)) is shared_slot(_view(1))
    assert shared_slot(_view(1)) is not shared_slot(_view(2))
    # The cursor is part of the message: another version of the same counts is another object.
    assert shared_slot(_view(1)) is not shared_slot(_view(1, cursor="c2"))
    assert shared_slot(_view(1, cursor="c2")).cursor == "c2"


def test_listeners_of_one_event_share_one_result() -> None:
    document = parse(STATUS)
    event = shared_slot(_view(1))
    first, second = _run(document, event), _run(document, event)
    assert first.data == {"slotStatus": {"held": 1, "queueLength": 2}}
    assert second is first


def test_another_event_or_variables_are_executed_afresh() -> None:
    document = parse(STATUS)
    first = _run(document, shared_slot(_view(1)))
    later = _run(document, shared_slot(_view(2)))
    assert later is not first and later.data == {"slotStatus": {"held": 2, "queueLength": 2}}
    assert _run(document, shared_slot(_view(1)), slot_id="s2") is not first


def test_events_of_other_types_are_never_shared() -> None:
    document = parse("subscription($s: ID!) { queuePosition(bookingId: $s) { position ahead } }")
    view = QueuePositionView("b1", BookingState.PENDING, position=2, ahead=1, expires_at=None)
    event = QueuePosition.of(view)
    first, second = _run(document, event), _run(document, event)
    assert first.data == {"queuePosition": {"position": 2, "ahead": 1}} and not first.errors
    assert second is not first
