"""What the webhook service hands back: endpoints and the delivery log, as plain read models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slotengine.domain.webhook_policy import EVENT_TYPE_PREFIX


@dataclass(frozen=True, slots=True)
class WebhookEndpointView:
    id: str
    url: str
    events: list[str] | None  # event types (booking.<event>); None: every event
    source: str  # 'api' or 'settings'
    created_at: datetime
    secret: str | None = None  # only in the answer that created it

    @classmethod
    def of(cls, row: dict[str, Any], *, secret: str | None = None) -> WebhookEndpointView:
        events = row["events"]
        return cls(
            id=str(row["id"]),
            url=row["url"],
            events=None if events is None else [EVENT_TYPE_PREFIX + e for e in events],
            source=row["source"],
            created_at=row["created_at"],
            secret=secret,
        )


@dataclass(frozen=True, slots=True)
class WebhookDeliveryView:
    id: str  # the message id (webhook-id header)
    endpoint_id: str
    slot_id: str
    booking_id: str
    event_type: str
    slot_version: int | None
    status: str  # pending, delivered, failed (given up)
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None  # only while pending
    delivered_at: datetime | None
    created_at: datetime
    cursor: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> WebhookDeliveryView:
        return cls(
            id=str(row["message_id"]),
            endpoint_id=str(row["endpoint_id"]),
            slot_id=str(row["slot_id"]),
            booking_id=str(row["booking_id"]),
            event_type=EVENT_TYPE_PREFIX + row["event"],
            slot_version=row["slot_version"],
            status=row["status"],
            attempts=int(row["attempts"]),
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            last_attempt_at=row["last_attempt_at"],
            next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
            delivered_at=row["delivered_at"],
            created_at=row["created_at"],
            cursor=str(row["id"]),
        )


@dataclass(frozen=True, slots=True)
class WebhookDeliveryPage:
    items: list[WebhookDeliveryView]
    end_cursor: str | None
    has_next_page: bool
