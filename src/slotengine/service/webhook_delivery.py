"""Sending the outbox: each (endpoint, slot) chain in order, one attempt at a time, at least once.

A chain's head is its oldest pending delivery. A worker claims the head with a lease (so one
attempt runs at a time, whichever worker or run tries), sends it, records the outcome and moves
on to the next; a failed head is retried after its backoff and holds back the deliveries behind
it, so a slot's later event never overtakes an earlier one at an endpoint. A worker that dies
mid-attempt leaves a lease that runs out: the delivery is attempted again (at least once).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import certifi
import httpx

from slotengine.domain.errors import DomainError
from slotengine.domain.webhook_policy import DeliveryRules, parse_url, payload, response_note, retry_delay
from slotengine.domain.webhook_signing import signed_headers
from slotengine.service.engine import Engine
from slotengine.service.webhook_targets import check
from slotengine.store.database import connection

log = logging.getLogger(__name__)

CHAINS_PER_RUN = 200
PARALLEL_CHAINS = 20
DELIVERIES_PER_CHAIN_RUN = 200  # then the chain waits for the next run, letting others go
LEASE_MARGIN_SECONDS = 30.0  # beyond the attempt's timeout: resolving, recording, a slow loop

# The head of every chain, found by skipping through the chain index (one probe per chain, not a
# scan of every pending delivery: a receiver down for a day leaves a long backlog), kept when due.
_DUE_CHAINS = (
    "WITH RECURSIVE heads AS ("
    " (SELECT endpoint_id, slot_id, next_attempt_at, lease_until FROM webhook_deliveries"
    "  WHERE status = 'pending' ORDER BY endpoint_id, slot_id, id LIMIT 1)"
    " UNION ALL"
    " SELECT n.* FROM heads h, LATERAL (SELECT endpoint_id, slot_id, next_attempt_at, lease_until"
    "  FROM webhook_deliveries d WHERE d.status = 'pending'"
    "  AND (d.endpoint_id, d.slot_id) > (h.endpoint_id, h.slot_id)"
    "  ORDER BY d.endpoint_id, d.slot_id, d.id LIMIT 1) n)"
    " SELECT endpoint_id, slot_id FROM heads"
    " WHERE next_attempt_at <= now() AND (lease_until IS NULL OR lease_until <= now()) LIMIT $1"
)

# Lease the chain's head when it is due and nobody holds it; with what its body and signature need.
_CLAIM_HEAD = (
    "WITH head AS (SELECT id FROM webhook_deliveries"
    "  WHERE endpoint_id = $1 AND slot_id = $2 AND status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE)"
    " UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(),"
    "  lease_until = now() + make_interval(secs => $3)"
    " FROM head, transitions t, bookings b, webhook_endpoints e"
    " WHERE d.id = head.id AND t.id = d.transition_id AND b.id = t.booking_id AND e.id = d.endpoint_id"
    "  AND e.deleted_at IS NULL AND d.next_attempt_at <= now()"
    "  AND (d.lease_until IS NULL OR d.lease_until <= now())"
    " RETURNING d.id, d.message_id, d.attempts, d.slot_id, d.slot_version, t.booking_id, t.from_state,"
    "  t.to_state, t.event, t.actor, t.reason, t.at, b.holder, e.url, e.secret,"
    "  floor(extract(epoch FROM now()))::bigint AS sent_at"
)


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt went: delivered (a 2xx answer), or the status code and error."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None


async def dispatch(engine: Engine) -> int:
    """Send every chain whose head is due; returns how many deliveries went out."""
    chains = await connection().execute_query_dict(_DUE_CHAINS, [CHAINS_PER_RUN])
    if not chains:
        return 0
    gate = asyncio.Semaphore(PARALLEL_CHAINS)

    async def one(chain: dict[str, Any]) -> int:
        # A client per chain (one endpoint): its connections are pooled by the address they go
        # to, and one verified for another endpoint's name must not carry this one's requests.
        async with gate, _client() as http:
            return await deliver_chain(engine, http, chain["endpoint_id"], chain["slot_id"])

    sent = await asyncio.gather(*(one(chain) for chain in chains), return_exceptions=True)
    for failure in (outcome for outcome in sent if isinstance(outcome, BaseException)):
        # Its lease runs out and the next run sends the delivery again.
        log.error("webhook chain failed", exc_info=failure)
    return sum(outcome for outcome in sent if isinstance(outcome, int))


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one (reading the CA bundle) costs milliseconds."""
    return ssl.create_default_context(cafile=certifi.where())


def _client() -> httpx.AsyncClient:
    # No redirects (a 3xx is a failed attempt), no proxies from the environment (they would
    # bypass the address check), no cookies kept between receivers.
    return httpx.AsyncClient(verify=_tls(), follow_redirects=False, trust_env=False, cookies=None)


async def deliver_chain(engine: Engine, http: httpx.AsyncClient, endpoint_id: UUID, slot_id: UUID) -> int:
    """Send the chain's deliveries in order until one fails or none is due; returns how many went."""
    rules = engine.webhooks
    delivered = 0
    for _ in range(DELIVERIES_PER_CHAIN_RUN):
        rows = await connection().execute_query_dict(
            _CLAIM_HEAD, [endpoint_id, slot_id, rules.timeout_seconds + LEASE_MARGIN_SECONDS]
        )
        if not rows:
            return delivered
        claimed = rows[0]
        attempt = await send(rules, http, claimed)
        await _record(rules, claimed, attempt)
        if not attempt.delivered:
            return delivered
        delivered += 1
    return delivered


def message_id(message: UUID) -> str:
    """The webhook-id header of a delivery: the same on every attempt and replay."""
    return f"msg_{message.hex}"


def body_of(claimed: dict[str, Any]) -> bytes:
    return json.dumps(payload(claimed), separators=(",", ":")).encode()


async def send(rules: DeliveryRules, http: httpx.AsyncClient, claimed: dict[str, Any]) -> Attempt:
    """One attempt: check where the URL points now, then POST the signed body to that address."""
    try:
        target = parse_url(claimed["url"])
    except DomainError as refusal:  # an endpoint from the settings, never checked at registration
        return Attempt(False, error=refusal.message)
    checked = await check(target, rules.addresses)
    if checked.refusal is not None:
        return Attempt(False, error=f"refused: {checked.refusal}")
    body = body_of(claimed)
    original = httpx.URL(claimed["url"])
    headers = {
        "content-type": "application/json",
        "user-agent": "slotengine-webhooks",
        # The name the receiver serves, while the connection goes to the address just checked.
        "host": original.netloc.decode("ascii"),
        **signed_headers(claimed["secret"], message_id(claimed["message_id"]), claimed["sent_at"], body),
    }
    url = original.copy_with(host=str(checked.addresses[0]))
    extensions = {}
    if target.scheme == "https" and target.literal is None:
        extensions["sni_hostname"] = original.raw_host.decode("ascii")
    try:
        async with asyncio.timeout(rules.timeout_seconds):
            request = http.build_request(
                "POST",
                url,
                content=body,
                headers=headers,
                extensions=extensions,
                timeout=rules.timeout_seconds,
            )
            response = await http.send(request, stream=True)
            await response.aclose()  # the answer's body is not read: only its status counts
    except (TimeoutError, httpx.TimeoutException):
        return Attempt(False, error=f"no answer within {rules.timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return Attempt(False, error=f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__)
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(True, status)
    if 300 <= status < 400:
        location = response.headers.get("location", "")[:200]
        return Attempt(False, status, f"HTTP {status}: redirect to {location!r} not followed")
    return Attempt(False, status, f"HTTP {status}")


async def _record(rules: DeliveryRules, claimed: dict[str, Any], attempt: Attempt) -> None:
    if attempt.delivered:
        await connection().execute_query(
            "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), lease_until = NULL,"
            " last_status_code = $2, last_error = NULL WHERE id = $1",
            [claimed["id"], attempt.status_code],
        )
        return
    delay = retry_delay(rules.schedule, int(claimed["attempts"]))
    note = response_note(attempt.status_code, attempt.error)
    if delay is None:
        log.warning(
            "webhook delivery %s given up after %d attempts: %s",
            claimed["message_id"],
            claimed["attempts"],
            note,
        )
    await connection().execute_query(
        "UPDATE webhook_deliveries SET lease_until = NULL, last_status_code = $2, last_error = $3,"
        " status = CASE WHEN $4::float8 IS NULL THEN 'failed' ELSE 'pending' END,"
        " next_attempt_at = now() + make_interval(secs => coalesce($4::float8, 0))"
        # Not when its endpoint was deleted during the attempt: that gave it up already.
        " WHERE id = $1 AND status = 'pending'",
        [claimed["id"], attempt.status_code, note, delay],
    )
