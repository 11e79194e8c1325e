"""GraphQL types of webhooks: endpoints and the delivery log (admins only)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from slotengine.service.webhook_views import WebhookDeliveryPage as DeliveryPageView
from slotengine.service.webhook_views import WebhookDeliveryView, WebhookEndpointView


@strawberry.enum(description="Where a delivery stands: still to send, sent (a 2xx answer), or given up.")
class WebhookDeliveryStatus(Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@strawberry.type(description="A URL that receives every booking transition, signed (Standard Webhooks).")
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    events: list[str] | None = strawberry.field(
        description="Event types sent (booking.hold, booking.confirm, ...); null: every event."
    )
    source: str = strawberry.field(
        description="'api' (createWebhookEndpoint) or 'settings' (SLOTENGINE_WEBHOOK_ENDPOINTS)."
    )
    created_at: datetime
    secret: str | None = strawberry.field(
        description="The signing secret (whsec_...): only in the answer to createWebhookEndpoint, "
        "null everywhere else. Keep it: it is never shown again."
    )

    @classmethod
    def of(cls, view: WebhookEndpointView) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(view.id),
            url=view.url,
            events=view.events,
            source=view.source,
            created_at=view.created_at,
            secret=view.secret,
        )


@strawberry.type(description="One transition sent to one endpoint: the delivery log's entry.")
class WebhookDelivery:
    id: strawberry.ID = strawberry.field(description="The message id; webhook-id is msg_ and its hex.")
    endpoint_id: strawberry.ID
    slot_id: strawberry.ID
    booking_id: strawberry.ID
    event_type: str
    slot_version: int | None
    status: WebhookDeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = strawberry.field(
        description="When it is tried next; null unless PENDING."
    )
    delivered_at: datetime | None
    created_at: datetime
    cursor: str = strawberry.field(description="Pass as `after` to read the log on from here.")

    @classmethod
    def of(cls, view: WebhookDeliveryView) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(view.id),
            endpoint_id=strawberry.ID(view.endpoint_id),
            slot_id=strawberry.ID(view.slot_id),
            booking_id=strawberry.ID(view.booking_id),
            event_type=view.event_type,
            slot_version=view.slot_version,
            status=WebhookDeliveryStatus(view.status),
            attempts=view.attempts,
            last_status_code=view.last_status_code,
            last_error=view.last_error,
            last_attempt_at=view.last_attempt_at,
            next_attempt_at=view.next_attempt_at,
            delivered_at=view.delivered_at,
            created_at=view.created_at,
            cursor=view.cursor,
        )


@strawberry.type(description="The registered webhook endpoints, oldest first.")
class WebhookEndpointList:
    items: list[WebhookEndpoint]

    @classmethod
    def of(cls, views: list[WebhookEndpointView]) -> WebhookEndpointList:
        return cls(items=[WebhookEndpoint.of(v) for v in views])


@strawberry.type(
    description="One page of the delivery log, newest first; pass endCursor as `after` for the next."
)
class WebhookDeliveryPage:
    items: list[WebhookDelivery]
    end_cursor: str | None
    has_next_page: bool

    @classmethod
    def of(cls, page: DeliveryPageView) -> WebhookDeliveryPage:
        return cls(
            items=[WebhookDelivery.of(v) for v in page.items],
            end_cursor=page.end_cursor,
            has_next_page=page.has_next_page,
        )
