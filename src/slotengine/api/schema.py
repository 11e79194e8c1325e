"""The GraphQL schema: thin resolvers, each one service call mapped to a result union."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxTokensLimiter,
    SchemaExtension,
)
from strawberry.types import ExecutionContext

from slotengine.api import gc_policy
from slotengine.api.context import Info
from slotengine.api.document_budget import DocumentBudget, document_budget_rule
from slotengine.api.document_cache import BoundedParserCache, BoundedValidationCache
from slotengine.api.errors import (
    BookingNotFound,
    ExtensionLimitReached,
    GroupNotFound,
    HoldExpired,
    IdempotencyKeyReused,
    InvalidTransition,
    NotAuthorized,
    NotHolder,
    RateLimited,
    SlotClosed,
    SlotNotFound,
    SlotUnavailable,
    TooManyBookings,
    ValidationError,
    WebhookDeliveryNotFound,
    WebhookEndpointNotFound,
    error_member,
)
from slotengine.api.fast_path import LearnPlans, PlanBook
from slotengine.api.shared_events import SharedEventExecutor, shared_slot
from slotengine.api.types import (
    Booking,
    BookingGroup,
    BookingPage,
    CreateSlotInput,
    CreateSlotsInput,
    QueuePosition,
    Slot,
    SlotBatch,
    SlotHistoryPage,
    SlotPage,
    UpdateSlotInput,
)
from slotengine.api.webhook_types import (
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEndpointList,
)
from slotengine.domain import errors as domain_errors
from slotengine.domain.errors import DomainError
from slotengine.domain.policy import SlotSpec
from slotengine.domain.recurrence import RecurrencePattern
from slotengine.domain.states import BookingState
from slotengine.logs import excerpt
from slotengine.service import (
    extension,
    groups,
    live,
    operator_views,
    queries,
    reservations,
    slot_admin,
    slot_generation,
    webhook_endpoints,
)
from slotengine.service.ids import parse_id
from slotengine.service.rate_limit import admitted_read

T = TypeVar("T")

# Strawberry's own logger name, so operators' filters on it keep working.
_errors_log = logging.getLogger("strawberry.execution")

CreateSlotResult = Annotated[Slot | ValidationError | NotAuthorized, strawberry.union("CreateSlotResult")]
CreateSlotsResult = Annotated[
    SlotBatch | ValidationError | NotAuthorized, strawberry.union("CreateSlotsResult")
]
ReserveSlotResult = Annotated[
    Booking
    | SlotNotFound
    | SlotClosed
    | IdempotencyKeyReused
    | ValidationError
    | NotAuthorized
    | RateLimited
    | TooManyBookings,
    strawberry.union("ReserveSlotResult"),
]
ConfirmBookingResult = Annotated[
    Booking | BookingNotFound | NotHolder | HoldExpired | InvalidTransition | NotAuthorized | ValidationError,
    strawberry.union("ConfirmBookingResult"),
]
CancelBookingResult = Annotated[
    Booking | BookingNotFound | NotHolder | InvalidTransition | ValidationError | NotAuthorized,
    strawberry.union("CancelBookingResult"),
]
CompleteBookingResult = Annotated[
    Booking | BookingNotFound | NotAuthorized | InvalidTransition | ValidationError,
    strawberry.union("CompleteBookingResult"),
]
ExtendHoldResult = Annotated[
    Booking
    | BookingNotFound
    | NotHolder
    | HoldExpired
    | InvalidTransition
    | ExtensionLimitReached
    | NotAuthorized
    | ValidationError,
    strawberry.union("ExtendHoldResult"),
]
SlotResult = Annotated[Slot | SlotNotFound | NotAuthorized | ValidationError, strawberry.union("SlotResult")]

CreateWebhookEndpointResult = Annotated[
    WebhookEndpoint | ValidationError | NotAuthorized, strawberry.union("CreateWebhookEndpointResult")
]
DeleteWebhookEndpointResult = Annotated[
    WebhookEndpoint | WebhookEndpointNotFound | ValidationError | NotAuthorized,
    strawberry.union("DeleteWebhookEndpointResult"),
]
WebhookEndpointsResult = Annotated[
    WebhookEndpointList | NotAuthorized, strawberry.union("WebhookEndpointsResult")
]
WebhookDeliveriesResult = Annotated[
    WebhookDeliveryPage | ValidationError | NotAuthorized, strawberry.union("WebhookDeliveriesResult")
]
ReplayWebhookDeliveryResult = Annotated[
    WebhookDelivery | WebhookDeliveryNotFound | ValidationError | NotAuthorized,
    strawberry.union("ReplayWebhookDeliveryResult"),
]
ReserveSlotsResult = Annotated[
    BookingGroup
    | SlotNotFound
    | SlotClosed
    | SlotUnavailable
    | IdempotencyKeyReused
    | ValidationError
    | NotAuthorized
    | RateLimited
    | TooManyBookings,
    strawberry.union("ReserveSlotsResult"),
]
ConfirmGroupResult = Annotated[
    BookingGroup | GroupNotFound | HoldExpired | InvalidTransition | NotAuthorized | ValidationError,
    strawberry.union("ConfirmGroupResult"),
]
CancelGroupResult = Annotated[
    BookingGroup | GroupNotFound | InvalidTransition | NotAuthorized | ValidationError,
    strawberry.union("CancelGroupResult"),
]

MAX_PAGE = 200


async def _answer(call: Callable[[], Awaitable[T]], present: Callable[[T], Any]) -> Any:
    """Run one service call; a domain refusal becomes its typed union member."""
    try:
        return present(await call())
    except DomainError as refusal:
        return error_member(refusal)


def _refused(refusal: DomainError) -> GraphQLError:
    """A refusal where no union can carry it (a list read, a subscription): an error coded with its name."""
    return GraphQLError(refusal.message, extensions={"code": type(refusal).__name__})


# The codes refusals carry: the names of the domain's errors.
_REFUSAL_CODES = frozenset(
    name
    for name, kind in vars(domain_errors).items()
    if isinstance(kind, type) and issubclass(kind, DomainError)
)


def _is_refusal(error: GraphQLError) -> bool:
    """A domain refusal is an answer, not a failure: a flood of malformed or rate-limited reads
    must not become a flood of log lines."""
    return (error.extensions or {}).get("code") in _REFUSAL_CODES


async def _admin_read(info: Info, call: Callable[[], Awaitable[T]], present: Callable[[T], Any]) -> Any:
    """A read for admins: a refusal of the caller or the input is its union member; the readers'
    limits (RateLimited, Busy) stay coded errors, as for every read."""

    async def answered() -> Any:
        try:
            return present(await call())
        except (domain_errors.NotAuthorized, domain_errors.ValidationError) as refusal:
            return error_member(refusal)

    return await _read(info, answered)


async def _read(info: Info, call: Callable[[], Awaitable[T]]) -> T:
    """Run one read in the caller's read allowance and the readers' connection budget; a refusal
    (malformed input, RateLimited, Busy) becomes an error coded with its name."""
    try:
        async with admitted_read(info.context.engine, info.context.reader):
            return await call()
    except DomainError as refusal:
        raise _refused(refusal) from None


def _page_size(first: int | None) -> int:
    """A page of `first` items, 1 to MAX_PAGE; null asks for the default, 50."""
    return max(1, min(50 if first is None else first, MAX_PAGE))


def _id(field: str, raw: strawberry.ID) -> str:
    """The id's one spelling; a malformed one is a ValidationError naming `field`."""
    try:
        return str(parse_id(field, str(raw)))
    except DomainError as refusal:
        raise _refused(refusal) from None


@strawberry.type
class Query:
    @strawberry.field(description="A slot with its live counts; null when there is no such slot.")
    async def slot(self, info: Info, id: strawberry.ID) -> Slot | None:
        slot_id = _id("id", id)
        view = await _read(info, lambda: queries.get_slot(info.context.engine, slot_id))
        return Slot.of(view) if view else None

    @strawberry.field(
        description="Slots in start order, filtered by resource and start time; `after` takes the "
        "endCursor of slotPage. With onlyAvailable: open slots that have not started and have a free unit."
    )
    async def slots(
        self,
        info: Info,
        resource: str | None = None,
        starts_after: datetime | None = None,
        starts_before: datetime | None = None,
        only_available: bool = False,
        first: int = 50,
        after: str | None = None,
    ) -> list[Slot]:
        page = await _slot_page(info, resource, starts_after, starts_before, only_available, first, after)
        return page.items

    @strawberry.field(
        description="One page of slots in start order, with the cursor to the next (see slots)."
    )
    async def slot_page(
        self,
        info: Info,
        resource: str | None = None,
        starts_after: datetime | None = None,
        starts_before: datetime | None = None,
        only_available: bool = False,
        first: int = 50,
        after: str | None = None,
    ) -> SlotPage:
        return await _slot_page(info, resource, starts_after, starts_before, only_available, first, after)

    @strawberry.field(description="A booking of yours (any booking, for an admin).")
    async def booking(self, info: Info, id: strawberry.ID) -> Booking | None:
        booking_id = _id("id", id)
        caller = info.context.caller
        if caller is None:
            return None
        view = await _read(info, lambda: queries.get_booking(info.context.engine, caller, booking_id))
        return Booking.of(view) if view else None

    @strawberry.field(description="Your bookings, newest first.")
    async def my_bookings(self, info: Info, first: int = 50) -> list[Booking]:
        caller = info.context.caller
        if caller is None:
            return []
        size = max(1, min(first, MAX_PAGE))
        views = await _read(info, lambda: queries.my_bookings(info.context.engine, caller, size))
        return [Booking.of(v) for v in views]

    @strawberry.field(description="A booking group of yours (any, for an admin).")
    async def booking_group(self, info: Info, id: strawberry.ID) -> BookingGroup | None:
        group_id = _id("id", id)
        caller = info.context.caller
        if caller is None:
            return None
        view = await _read(info, lambda: groups.get_group(info.context.engine, caller, group_id))
        return BookingGroup.of(view) if view else None

    @strawberry.field(description="Where a booking of yours stands in its slot's queue.")
    async def queue_position(self, info: Info, booking_id: strawberry.ID) -> QueuePosition | None:
        canonical = _id("bookingId", booking_id)
        caller = info.context.caller
        if caller is None:
            return None
        view = await _read(info, lambda: queries.get_queue_position(info.context.engine, caller, canonical))
        return QueuePosition.of(view) if view else None

    @strawberry.field(
        description="The operator's view of a slot (admins only): its bookings in arrival order, "
        "holds with their expiresAt, waiters with their queuePosition (FIFO among themselves), "
        "confirmed and final ones; `states` keeps only those states. Anyone else gets an error "
        "coded NotAuthorized."
    )
    async def slot_bookings(
        self,
        info: Info,
        slot_id: strawberry.ID,
        states: list[BookingState] | None = None,
        first: int | None = 50,
        after: str | None = None,
    ) -> BookingPage:
        canonical = _id("slotId", slot_id)
        ctx = info.context
        size = _page_size(first)
        page = await _read(
            info,
            lambda: operator_views.slot_bookings(
                ctx.engine, ctx.caller, canonical, None if states is None else set(states), size, after
            ),
        )
        return BookingPage.of(page)

    @strawberry.field(
        description="A slot's audit trail, newest first, each row naming its booking and holder. "
        "Admins read every row; a holder reads the rows of their own bookings of the slot (an "
        'admin\'s actions as actor "admin"); without a token, an error coded NotAuthorized.'
    )
    async def slot_history(
        self, info: Info, slot_id: strawberry.ID, first: int | None = 50, after: str | None = None
    ) -> SlotHistoryPage:
        canonical = _id("slotId", slot_id)
        ctx = info.context
        size = _page_size(first)
        page = await _read(
            info, lambda: operator_views.slot_history(ctx.engine, ctx.caller, canonical, size, after)
        )
        return SlotHistoryPage.of(page)

    @strawberry.field(description="Registered webhook endpoints, oldest first (admins only).")
    async def webhook_endpoints(self, info: Info) -> WebhookEndpointsResult:
        ctx = info.context
        return await _admin_read(
            info,
            lambda: webhook_endpoints.list_endpoints(ctx.engine, ctx.require_caller()),
            WebhookEndpointList.of,
        )

    @strawberry.field(
        description="The webhook delivery log, newest first (admins only); `after` takes endCursor."
    )
    async def webhook_deliveries(
        self,
        info: Info,
        endpoint_id: strawberry.ID | None = None,
        slot_id: strawberry.ID | None = None,
        status: WebhookDeliveryStatus | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> WebhookDeliveriesResult:
        ctx = info.context
        return await _admin_read(
            info,
            lambda: webhook_endpoints.list_deliveries(
                ctx.engine,
                ctx.require_caller(),
                endpoint_id=None if endpoint_id is None else str(endpoint_id),
                slot_id=None if slot_id is None else str(slot_id),
                status=None if status is None else status.value,
                first=max(1, min(first, MAX_PAGE)),
                after=after,
            ),
            WebhookDeliveryPage.of,
        )


async def _slot_page(
    info: Info,
    resource: str | None,
    starts_after: datetime | None,
    starts_before: datetime | None,
    only_available: bool,
    first: int,
    after: str | None,
) -> SlotPage:
    page = await _read(
        info,
        lambda: queries.list_slots(
            info.context.engine,
            resource,
            starts_after,
            starts_before,
            only_available,
            max(1, min(first, MAX_PAGE)),
            after,
        ),
    )
    return SlotPage.of(page)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a slot (admins only).")
    async def create_slot(self, info: Info, input: CreateSlotInput) -> CreateSlotResult:
        spec = SlotSpec(
            resource=input.resource,
            starts_at=input.starts_at,
            ends_at=input.ends_at,
            capacity=input.capacity,
            hold_seconds=input.hold_seconds,
            max_extensions=input.max_extensions,
            max_hold_seconds=input.max_hold_seconds,
            fill_policy=input.fill_policy,
            max_pass_overs=input.max_pass_overs,
        )
        ctx = info.context
        return await _answer(lambda: queries.create_slot(ctx.engine, ctx.require_caller(), spec), Slot.of)

    @strawberry.mutation(
        description="Create the slots of a weekly pattern in one go, all or none (admins only)."
    )
    async def create_slots(self, info: Info, input: CreateSlotsInput) -> CreateSlotsResult:
        pattern = RecurrencePattern(
            resource=input.resource,
            time_zone=input.time_zone,
            first_date=input.first_date,
            last_date=input.last_date,
            weekdays=frozenset(input.weekdays),
            window_start=input.window_start,
            window_end=input.window_end,
            slot_minutes=input.slot_minutes,
            every_minutes=input.every_minutes,
            capacity=input.capacity,
            hold_seconds=input.hold_seconds,
            max_extensions=input.max_extensions,
            max_hold_seconds=input.max_hold_seconds,
            fill_policy=input.fill_policy,
            max_pass_overs=input.max_pass_overs,
        )
        ctx = info.context
        return await _answer(
            lambda: slot_generation.create_slots(ctx.engine, ctx.require_caller(), pattern), SlotBatch.of
        )

    @strawberry.mutation(
        description="Hold a unit of the slot (RESERVED) or join its queue (PENDING). "
        "The same idempotencyKey replays the first answer. `units` (default 1) books a party: that "
        "many units held, confirmed, expired and offered as one booking (1 to the slot's capacity)."
    )
    async def reserve_slot(
        self, info: Info, slot_id: strawberry.ID, idempotency_key: str, units: int = 1
    ) -> ReserveSlotResult:
        ctx = info.context
        return await _answer(
            lambda: reservations.reserve_slot(
                ctx.engine, ctx.require_caller(), str(slot_id), idempotency_key, units
            ),
            Booking.of,
        )

    @strawberry.mutation(description="Confirm your live hold.")
    async def confirm_booking(self, info: Info, booking_id: strawberry.ID) -> ConfirmBookingResult:
        ctx = info.context
        return await _answer(
            lambda: reservations.confirm_booking(ctx.engine, ctx.require_caller(), str(booking_id)),
            Booking.of,
        )

    @strawberry.mutation(description="Cancel a booking; a freed unit goes to the head of the queue.")
    async def cancel_booking(
        self, info: Info, booking_id: strawberry.ID, reason: str | None = None
    ) -> CancelBookingResult:
        ctx = info.context
        return await _answer(
            lambda: reservations.cancel_booking(ctx.engine, ctx.require_caller(), str(booking_id), reason),
            Booking.of,
        )

    @strawberry.mutation(
        description="Hold a unit of every slot named, with one expiresAt, or none of them: a refusal "
        "names the slot that could not be held (SlotUnavailable, SlotClosed, SlotNotFound). With wait: "
        "true a group that cannot hold every slot now joins every slot's queue (state PENDING) and is "
        "offered every hold at once when it heads every queue and each slot has a unit free; nobody "
        "behind it passes it. The same idempotencyKey replays the group."
    )
    async def reserve_slots(
        self, info: Info, slot_ids: list[strawberry.ID], idempotency_key: str, wait: bool | None = False
    ) -> ReserveSlotsResult:
        ctx = info.context
        return await _answer(
            lambda: groups.reserve_slots(
                ctx.engine, ctx.require_caller(), [str(s) for s in slot_ids], idempotency_key, bool(wait)
            ),
            BookingGroup.of,
        )

    @strawberry.mutation(description="Confirm every hold of your group together, before its expiresAt.")
    async def confirm_group(self, info: Info, group_id: strawberry.ID) -> ConfirmGroupResult:
        ctx = info.context
        return await _answer(
            lambda: groups.confirm_group(ctx.engine, ctx.require_caller(), str(group_id)), BookingGroup.of
        )

    @strawberry.mutation(description="Cancel every booking of a group; freed units go to the queues' heads.")
    async def cancel_group(
        self, info: Info, group_id: strawberry.ID, reason: str | None = None
    ) -> CancelGroupResult:
        ctx = info.context
        return await _answer(
            lambda: groups.cancel_group(ctx.engine, ctx.require_caller(), str(group_id), reason),
            BookingGroup.of,
        )

    @strawberry.mutation(description="Mark a confirmed booking as served (admins only).")
    async def complete_booking(self, info: Info, booking_id: strawberry.ID) -> CompleteBookingResult:
        ctx = info.context
        return await _answer(
            lambda: reservations.complete_booking(ctx.engine, ctx.require_caller(), str(booking_id)),
            Booking.of,
        )

    @strawberry.mutation(
        description="Give your live hold `seconds` more from now (default: the slot's holdSeconds), "
        "within the slot's maxExtensions and maxHoldSeconds."
    )
    async def extend_hold(
        self, info: Info, booking_id: strawberry.ID, seconds: int | None = None
    ) -> ExtendHoldResult:
        ctx = info.context
        return await _answer(
            lambda: extension.extend_hold(ctx.engine, ctx.require_caller(), str(booking_id), seconds),
            Booking.of,
        )

    @strawberry.mutation(
        description="Take no more reservations; everyone waiting becomes EXPIRED with the reason. "
        "Holds already granted may still be confirmed until they lapse (admins only)."
    )
    async def close_slot(self, info: Info, slot_id: strawberry.ID, reason: str | None = None) -> SlotResult:
        ctx = info.context
        return await _answer(
            lambda: slot_admin.close_slot(ctx.engine, ctx.require_caller(), str(slot_id), reason), Slot.of
        )

    @strawberry.mutation(description="Take reservations on a closed slot again (admins only).")
    async def reopen_slot(self, info: Info, slot_id: strawberry.ID) -> SlotResult:
        ctx = info.context
        return await _answer(
            lambda: slot_admin.reopen_slot(ctx.engine, ctx.require_caller(), str(slot_id)), Slot.of
        )

    @strawberry.mutation(
        description="Change a slot's capacity, holdSeconds, extension limits and fill policy (admins "
        "only). New units go to the queue at once, in order; capacity cannot go below the units in use."
    )
    async def update_slot(self, info: Info, slot_id: strawberry.ID, input: UpdateSlotInput) -> SlotResult:
        update = slot_admin.SlotUpdate(
            capacity=input.capacity,
            hold_seconds=input.hold_seconds,
            max_extensions=input.max_extensions,
            max_hold_seconds=input.max_hold_seconds,
            fill_policy=input.fill_policy,
            max_pass_overs=input.max_pass_overs,
        )
        ctx = info.context
        return await _answer(
            lambda: slot_admin.update_slot(ctx.engine, ctx.require_caller(), str(slot_id), update), Slot.of
        )

    @strawberry.mutation(
        description="Send every booking transition to `url`, signed (admins only). `events` lists the event "
        "types wanted (booking.hold, booking.confirm, ...); null or empty: all. The answer carries the "
        "signing secret, shown this once."
    )
    async def create_webhook_endpoint(
        self, info: Info, url: str, events: list[str] | None = None
    ) -> CreateWebhookEndpointResult:
        ctx = info.context
        return await _answer(
            lambda: webhook_endpoints.create_endpoint(ctx.engine, ctx.require_caller(), url, events),
            WebhookEndpoint.of,
        )

    @strawberry.mutation(
        description="Stop sending to an endpoint; its pending deliveries are given up (admins only)."
    )
    async def delete_webhook_endpoint(self, info: Info, id: strawberry.ID) -> DeleteWebhookEndpointResult:
        ctx = info.context
        return await _answer(
            lambda: webhook_endpoints.delete_endpoint(ctx.engine, ctx.require_caller(), str(id)),
            WebhookEndpoint.of,
        )

    @strawberry.mutation(
        description="Send a delivery again, same webhook-id and body, in its place in its slot's order "
        "(admins only)."
    )
    async def replay_webhook_delivery(self, info: Info, id: strawberry.ID) -> ReplayWebhookDeliveryResult:
        ctx = info.context
        return await _answer(
            lambda: webhook_endpoints.replay_delivery(ctx.engine, ctx.require_caller(), str(id)),
            WebhookDelivery.of,
        )


async def _live(updates: AsyncIterator[T], present: Callable[[T], Any]) -> AsyncGenerator[Any, None]:
    """Stream a service watcher; a refusal ends the subscription with a coded GraphQL error."""
    started = False
    try:
        async for update in updates:
            yield present(update)
            if not started:  # the first answer is out: this listener is set up, and stays
                started = True
                gc_policy.POLICY.subscription_started()
    except DomainError as refusal:
        raise _refused(refusal) from None
    finally:
        if started:
            gc_policy.POLICY.subscription_ended()


# A cursor of any message of the slot's subscriptions; see the `cursor` fields.
After = Annotated[
    str | None,
    strawberry.argument(
        description="Resume after this cursor (the `cursor` of a message received before): every "
        "change since is replayed, in order, then the subscription goes live, missing and repeating "
        "nothing. A cursor that cannot be resumed from gives one message with `cursorExpired` and the "
        "current state, then live. Without it the first message is the current state."
    ),
]


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The slot now, then after every change, in order.")
    async def slot_status(
        self, info: Info, slot_id: strawberry.ID, after: After = None
    ) -> AsyncGenerator[Slot, None]:
        ctx = info.context
        watcher = live.watch_slot(ctx.engine, ctx.hub, str(slot_id), after)
        async for slot in _live(watcher, shared_slot):
            yield slot

    @strawberry.subscription(
        description="Your place in the queue on every move, then the hold you are offered."
    )
    async def queue_position(
        self, info: Info, booking_id: strawberry.ID, after: After = None
    ) -> AsyncGenerator[QueuePosition, None]:
        ctx = info.context
        watcher = live.watch_queue_position(ctx.engine, ctx.hub, ctx.require_caller(), str(booking_id), after)
        async for update in _live(watcher, QueuePosition.live):
            yield update

    @strawberry.subscription(
        description="Your booking now, then on every change of its state or of its hold's expiry."
    )
    async def booking_updates(
        self, info: Info, booking_id: strawberry.ID, after: After = None
    ) -> AsyncGenerator[Booking, None]:
        ctx = info.context
        watcher = live.watch_booking(ctx.engine, ctx.hub, ctx.require_caller(), str(booking_id), after)
        async for update in _live(watcher, Booking.live):
            yield update


def _is_internal(error: GraphQLError) -> bool:
    """Hide what went wrong inside the engine; keep what the client sent wrong (bad input)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


INTERNAL_ERROR = "Internal error."
# The mask every request's MaskErrors applies, kept for the fast path, which has no extensions.
_MASK = MaskErrors(should_mask_error=_is_internal, error_message=INTERNAL_ERROR)


def masked_error(error: GraphQLError) -> GraphQLError:
    """What a client is shown of `error`: an internal failure as INTERNAL_ERROR, the rest as is."""
    return _MASK.anonymise_error(error) if _MASK.should_mask_error(error) else error


# Built once: the same rule class on every request keeps the validation cache's keys equal.
DOCUMENT_BUDGET = DocumentBudget()
_BUDGET_RULES = [document_budget_rule(DOCUMENT_BUDGET)]


def edge_extensions(
    *, introspection: bool = True, plans: PlanBook | None = None
) -> list[Callable[[], SchemaExtension]]:
    """Bounded parse and validation caches, the document budget, error masking; introspection if
    asked; the fast path's plan book learning validated documents, if given."""
    # Factories: each request gets fresh extension state; the caches and the budget's rule
    # class live at module level, shared by all requests.
    extensions: list[Callable[[], SchemaExtension]] = [
        BoundedParserCache,
        BoundedValidationCache,
        # Depth (introspection exempt), aliases, cost, fragments, directives, repeated fields: one pass.
        lambda: AddValidationRules(_BUDGET_RULES),
        lambda: MaxTokensLimiter(max_token_count=2000),
        lambda: MaskErrors(should_mask_error=_is_internal, error_message=INTERNAL_ERROR),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    if plans is not None:
        extensions.append(lambda: LearnPlans(plans))
    return extensions


class EngineSchema(strawberry.Schema):
    """Strawberry's schema, logging each error as a bounded excerpt rather than the whole document."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if not _is_refusal(error):
                _errors_log.error("%s", _error_excerpt(error), exc_info=error.original_error)


def _error_excerpt(error: GraphQLError) -> str:
    """The error's message, cut short, and where it is: never the document's text around it."""
    where = ", ".join(f"{at.line}:{at.column}" for at in (error.locations or ())[:5])
    path = ".".join(str(step) for step in (error.path or ()))
    return (
        excerpt(error.message)
        + (f" (at {where})" if where else "")
        + (f" path {excerpt(path, 200)}" if path else "")
    )


def build_schema(*, introspection: bool = True, plans: PlanBook | None = None) -> strawberry.Schema:
    """The engine's schema with its edge extensions."""
    extensions = edge_extensions(introspection=introspection, plans=plans)
    return EngineSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=SharedEventExecutor,
    )


# The full schema: what `slotengine schema` exports. Apps build theirs from their settings.
schema = build_schema()
