"""Registering webhook endpoints, reading the delivery log, replaying a delivery (admins only).

Deliveries themselves are written by PostgreSQL (migration 0008's trigger on the audit trail)
and sent by workers (service/webhook_delivery.py).
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from slotengine.config import ConfiguredEndpoint
from slotengine.domain.errors import (
    NotAuthorized,
    ValidationError,
    WebhookDeliveryNotFound,
    WebhookEndpointNotFound,
)
from slotengine.domain.webhook_policy import event_names, parse_url
from slotengine.domain.webhook_signing import SECRET_BYTES, secret_from
from slotengine.service.engine import Engine
from slotengine.service.ids import parse_id
from slotengine.service.views import Caller
from slotengine.service.webhook_targets import check
from slotengine.service.webhook_views import WebhookDeliveryPage, WebhookDeliveryView, WebhookEndpointView
from slotengine.store.database import connection

DELIVERY_STATUSES = ("pending", "delivered", "failed")
_ENDPOINT_COLUMNS = "id, url, events, source, created_at"
_DELIVERY_COLUMNS = (
    "d.id, d.message_id, d.endpoint_id, d.slot_id, d.slot_version, d.status, d.attempts,"
    " d.last_status_code, d.last_error, d.last_attempt_at, d.next_attempt_at, d.delivered_at,"
    " d.created_at, t.booking_id, t.event"
)


@contextlib.asynccontextmanager
async def _changing_endpoints() -> AsyncIterator[BaseDBAsyncClient]:
    """A transaction changing endpoints, one at a time, that leaves the audit trail's trigger
    enabled exactly while an endpoint is active (migration 0008)."""
    async with in_transaction() as conn:
        await conn.execute_query("LOCK TABLE webhook_endpoints IN SHARE ROW EXCLUSIVE MODE")
        yield conn
        await conn.execute_query("SELECT webhook_endpoints_changed()")


def _admin(caller: Caller) -> None:
    if not caller.admin:
        raise NotAuthorized("only an admin can manage webhooks")


async def create_endpoint(
    engine: Engine, caller: Caller, url: str, events: Sequence[str] | None
) -> WebhookEndpointView:
    """Register `url` for `events` (None or empty: all); the answer carries the secret, once."""
    _admin(caller)
    names = event_names(events)
    checked = await check(parse_url(url), engine.webhooks.addresses)
    if checked.refusal is not None:
        raise ValidationError("url", f"refused: {checked.refusal}")
    secret = secret_from(secrets.token_bytes(SECRET_BYTES))
    async with _changing_endpoints() as conn:
        rows = await conn.execute_query_dict(
            "INSERT INTO webhook_endpoints (id, url, secret, events, source, created_by)"
            f" VALUES ($1, $2, $3, $4, 'api', $5) RETURNING {_ENDPOINT_COLUMNS}",
            [uuid.uuid4(), url, secret, names, caller.holder],
        )
    return WebhookEndpointView.of(rows[0], secret=secret)


async def delete_endpoint(engine: Engine, caller: Caller, endpoint_id: str) -> WebhookEndpointView:
    """Stop sending to an endpoint; what it had pending is given up (the log keeps it)."""
    _admin(caller)
    canonical = parse_id("id", endpoint_id)
    async with _changing_endpoints() as conn:
        rows = await conn.execute_query_dict(
            "WITH gone AS (UPDATE webhook_endpoints SET deleted_at = now()"
            f"  WHERE id = $1 AND deleted_at IS NULL AND source = 'api' RETURNING {_ENDPOINT_COLUMNS}),"
            " dropped AS (UPDATE webhook_deliveries SET status = 'failed', lease_until = NULL,"
            "  last_error = 'endpoint deleted' WHERE endpoint_id IN (SELECT id FROM gone)"
            "  AND status = 'pending')"
            " SELECT * FROM gone",
            [canonical],
        )
    if not rows:
        raise WebhookEndpointNotFound(str(canonical))
    return WebhookEndpointView.of(rows[0])


async def list_endpoints(engine: Engine, caller: Caller) -> list[WebhookEndpointView]:
    _admin(caller)
    rows = await connection().execute_query_dict(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE deleted_at IS NULL ORDER BY created_at, id"
    )
    return [WebhookEndpointView.of(row) for row in rows]


async def list_deliveries(
    engine: Engine,
    caller: Caller,
    *,
    endpoint_id: str | None,
    slot_id: str | None,
    status: str | None,
    first: int,
    after: str | None,
) -> WebhookDeliveryPage:
    """The delivery log, newest first; `after` is the cursor of the last delivery of a page."""
    _admin(caller)
    where: list[str] = ["true"]
    args: list[Any] = []
    if endpoint_id is not None:
        args.append(parse_id("endpointId", endpoint_id))
        where.append(f"d.endpoint_id = ${len(args)}")
    if slot_id is not None:
        args.append(parse_id("slotId", slot_id))
        where.append(f"d.slot_id = ${len(args)}")
    if status is not None:
        args.append(status)
        where.append(f"d.status = ${len(args)}")
    if after is not None:
        if not after.isdigit() or len(after) > 19:
            raise ValidationError("after", "not a cursor this engine handed out")
        args.append(int(after))
        where.append(f"d.id < ${len(args)}")
    args.append(first + 1)  # one more: is there a next page
    rows = await connection().execute_query_dict(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN transitions t ON t.id = d.transition_id"
        f" WHERE {' AND '.join(where)} ORDER BY d.id DESC LIMIT ${len(args)}",
        args,
    )
    views = [WebhookDeliveryView.of(row) for row in rows[:first]]
    return WebhookDeliveryPage(views, views[-1].cursor if views else None, len(rows) > first)


async def replay_delivery(engine: Engine, caller: Caller, delivery_id: str) -> WebhookDeliveryView:
    """Send a delivery again (same webhook-id and body), in its place in its slot's order."""
    _admin(caller)
    canonical = parse_id("id", delivery_id)
    rows = await connection().execute_query_dict(
        "WITH replayed AS (UPDATE webhook_deliveries d SET status = 'pending', attempts = 0,"
        "  next_attempt_at = now(), lease_until = NULL, delivered_at = NULL"
        "  FROM webhook_endpoints e WHERE d.message_id = $1 AND e.id = d.endpoint_id"
        "  AND e.deleted_at IS NULL AND (d.lease_until IS NULL OR d.lease_until <= now()) RETURNING d.*)"
        f" SELECT {_DELIVERY_COLUMNS} FROM replayed d JOIN transitions t ON t.id = d.transition_id",
        [canonical],
    )
    if not rows:
        raise WebhookDeliveryNotFound(str(canonical))
    return WebhookDeliveryView.of(rows[0])


async def sync_configured_endpoints(configured: Sequence[ConfiguredEndpoint]) -> None:
    """Make the endpoints of SLOTENGINE_WEBHOOK_ENDPOINTS the registered 'settings' endpoints:
    add or update those listed (an id derived from the URL), retire those no longer listed."""
    rows: list[dict[str, Any]] = [
        {
            "id": uuid.uuid5(uuid.NAMESPACE_URL, endpoint.url),
            "url": endpoint.url,
            "secret": endpoint.secret,
            "events": event_names(endpoint.events),
        }
        for endpoint in configured
    ]
    ids: list[UUID] = [row["id"] for row in rows]
    active = await connection().execute_query_dict(
        "SELECT id, url, secret, events FROM webhook_endpoints"
        " WHERE source = 'settings' AND deleted_at IS NULL"
    )
    if sorted(active, key=lambda r: r["id"]) == sorted(rows, key=lambda r: r["id"]):
        return  # as listed already: every process starting needs no lock
    async with _changing_endpoints() as conn:
        for row in rows:
            await conn.execute_query(
                "INSERT INTO webhook_endpoints (id, url, secret, events, source)"
                " VALUES ($1, $2, $3, $4, 'settings')"
                " ON CONFLICT (id) DO UPDATE SET secret = excluded.secret, events = excluded.events,"
                " deleted_at = NULL",
                [row["id"], row["url"], row["secret"], row["events"]],
            )
        await conn.execute_query(
            "WITH gone AS (UPDATE webhook_endpoints SET deleted_at = now()"
            "  WHERE source = 'settings' AND deleted_at IS NULL AND NOT (id = ANY($1::uuid[])) RETURNING id)"
            " UPDATE webhook_deliveries SET status = 'failed', lease_until = NULL,"
            " last_error = 'endpoint deleted'"
            " WHERE endpoint_id IN (SELECT id FROM gone) AND status = 'pending'",
            [ids],
        )
