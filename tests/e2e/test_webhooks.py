"""Webhooks end to end: the engine, a worker and a scheduler send every transition, signed, to a
real receiver on loopback that is killed and brought back mid-run; none is lost, each slot's
arrive in order; a failing, a slow and a redirecting receiver; replay; who may register what.

The delivering processes work on a database and key prefix of their own (loopback receivers
allowed, retries shortened), so the suite's other workers never see these deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from slotengine.config import Settings
from slotengine.domain.webhook_signing import secret_from, verify
from slotengine.embedded import free_port
from slotengine.redis.connection import connect
from slotengine.store.database import create_database, migrate
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, GraphQL, token
from tests.processes import kill_tree, spawn, wait_for_consumers, wait_for_scheduler

# Quick retries, given up after about 10 s: longer than the receiver is down here.
RETRY_SCHEDULE = [0.2, 0.4, 0.8, *[1.0] * 9]
TIMEOUT_SECONDS = 1.0
WEBHOOK_ENV = {
    "SLOTENGINE_WEBHOOK_ALLOW_LOOPBACK": "true",
    "SLOTENGINE_WEBHOOK_RETRY_SCHEDULE": json.dumps(RETRY_SCHEDULE),
    "SLOTENGINE_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
    "SLOTENGINE_WEBHOOK_POLL_SECONDS": "0.1",
    "SLOTENGINE_READ_RATE_PER_MINUTE": "0",  # the test polls the delivery log
    "SLOTENGINE_DB_POOL_SIZE": "8",  # a shared PostgreSQL: take little
}

CONFIGURED_SECRET = secret_from(bytes(range(100, 132)))
CREATE = """mutation($u: String!, $e: [String!]) { createWebhookEndpoint(url: $u, events: $e) {
  __typename ... on WebhookEndpoint { id url events secret source }
  ... on ValidationError { field message } ... on NotAuthorized { message } } }"""
DELIVERIES = """query($e: ID, $s: WebhookDeliveryStatus, $first: Int, $after: String) {
  webhookDeliveries(endpointId: $e, status: $s, first: $first, after: $after) {
    __typename ... on WebhookDeliveryPage { endCursor hasNextPage items {
      id endpointId slotId bookingId eventType slotVersion status attempts lastStatusCode lastError
      nextAttemptAt deliveredAt cursor } } } }"""
ENDPOINTS = (
    "{ webhookEndpoints { __typename ... on WebhookEndpointList { items { id url secret source } } } }"
)


class Receiver:
    """The receiver process (tests/e2e/webhook_receiver.py) and what it logged."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.webhook_receiver", str(self.port), str(self.log)],
            stdin=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self.process = self._spawn()

        async def answers() -> bool:
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(self.url("/ok"))).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(answers, bool, within=30)

    def kill(self) -> None:
        assert self.process is not None
        kill_tree(self.process, signal.SIGKILL)
        self.process = None

    def lines(self, path: str) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        found = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [line for line in found if line["path"] == path and "webhook-id" in line["headers"]]


@pytest.fixture
async def hooks_settings(settings: Settings, postgres_server_url: str) -> Settings:
    database = f"slotengine_hooks_{uuid.uuid4().hex[:12]}"
    url = await create_database(postgres_server_url, database)
    await migrate(url)
    return settings.model_copy(update={"database_url": url, "redis_prefix": f"hooks-{uuid.uuid4().hex[:8]}:"})


@pytest.fixture
async def engine_processes(hooks_settings: Settings, receiver: Receiver) -> AsyncIterator[GraphQL]:
    """An API, a worker and a scheduler delivering webhooks on the hooks database, one endpoint
    listed in their settings; a client of the API."""
    port = free_port()
    configured = [{"url": receiver.url("/configured"), "secret": CONFIGURED_SECRET}]
    env = {**WEBHOOK_ENV, "SLOTENGINE_WEBHOOK_ENDPOINTS": json.dumps(configured)}
    running = [
        spawn(hooks_settings, "serve", "--port", str(port), env=env),
        spawn(hooks_settings, "worker", "--workers", "1", env=env),
        spawn(hooks_settings, "scheduler", env=env),
    ]
    redis = connect(hooks_settings)
    try:
        await wait_for_consumers(redis, hooks_settings, at_least=1)
        await wait_for_scheduler(redis, hooks_settings)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(up, bool, within=60)
            yield GraphQL(http)
    finally:
        for process in running:
            kill_tree(process, signal.SIGTERM)
        await redis.aclose()


@contextlib.asynccontextmanager
async def _receiving(log: Path) -> AsyncIterator[Receiver]:
    running = Receiver(free_port(), log)
    await running.start()
    try:
        yield running
    finally:
        if running.process is not None:
            running.kill()


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Receiver]:
    """The receiver the test kills and brings back."""
    async with _receiving(tmp_path / "received.jsonl") as running:
        yield running


@pytest.fixture
async def steady_receiver(tmp_path: Path) -> AsyncIterator[Receiver]:
    """A receiver that stays up (for the redirect, which must fail by its answers alone)."""
    async with _receiving(tmp_path / "steady.jsonl") as running:
        yield running


async def _deliveries(gql: GraphQL, endpoint_id: str, status: str | None = None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = None
    while True:
        data = await gql.run(
            DELIVERIES, {"e": endpoint_id, "s": status, "first": 200, "after": after}, as_=ADMIN
        )
        page = data["webhookDeliveries"]
        assert page["__typename"] == "WebhookDeliveryPage", page
        found += page["items"]
        if not page["hasNextPage"]:
            return found
        after = page["endCursor"]


async def _create(gql: GraphQL, url: str, events: list[str] | None = None) -> dict[str, Any]:
    created: dict[str, Any] = (await gql.run(CREATE, {"u": url, "e": events}, as_=ADMIN))[
        "createWebhookEndpoint"
    ]
    assert created["__typename"] == "WebhookEndpoint", created
    return created


async def _transitions(settings: Settings, slot_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every transition of these slots, as committed, in order per slot."""
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url.replace("postgres://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT b.slot_id::text AS slot_id, t.booking_id::text AS booking_id, t.from_state, t.to_state,"
            " t.event, t.actor FROM transitions t JOIN bookings b ON b.id = t.booking_id"
            " WHERE b.slot_id = ANY($1::uuid[]) ORDER BY t.id",
            slot_ids,
        )
    finally:
        await conn.close()
    per_slot: dict[str, list[dict[str, Any]]] = {slot: [] for slot in slot_ids}
    for row in rows:
        per_slot[row["slot_id"]].append(dict(row))
    return per_slot


def _verified_messages(receiver: Receiver, path: str, secret: str) -> list[dict[str, Any]]:
    """Each message that reached `path`, signature checked, first arrival only (at least once)."""
    messages: dict[str, dict[str, Any]] = {}
    for line in receiver.lines(path):
        headers = line["headers"]
        body = line["body"].encode()
        timestamp = int(headers["webhook-timestamp"])
        assert verify(
            secret, headers["webhook-id"], timestamp, body, headers["webhook-signature"], now=int(time.time())
        )
        assert headers["content-type"] == "application/json"
        messages.setdefault(headers["webhook-id"], json.loads(body))
    return list(messages.values())


def _as_sent(
    transitions: dict[str, list[dict[str, Any]]], messages: list[dict[str, Any]]
) -> dict[str, list[Any]]:
    per_slot: dict[str, list[Any]] = {slot: [] for slot in transitions}
    for message in messages:
        data = message["data"]
        assert message["type"] == f"booking.{data['event']}"
        per_slot[data["slotId"]].append(
            {
                "slot_id": data["slotId"],
                "booking_id": data["bookingId"],
                "from_state": data["fromState"],
                "to_state": data["toState"],
                "event": data["event"],
                "actor": data["actor"],
            }
        )
    return per_slot


async def test_every_transition_arrives_signed_and_in_order_through_a_receiver_outage(
    engine_processes: GraphQL, receiver: Receiver, steady_receiver: Receiver, hooks_settings: Settings
) -> None:
    gql = engine_processes
    ok = await _create(gql, receiver.url("/ok"))
    failing = await _create(gql, receiver.url("/fail"))
    slow = await _create(gql, receiver.url("/slow"))
    # The first event of each slot only, so that its retries run along with the rest of the test.
    redirecting = await _create(gql, steady_receiver.url("/redirect"), ["booking.hold"])
    confirms = await _create(gql, receiver.url("/confirms"), ["booking.confirm"])
    assert ok["secret"].startswith("whsec_") and ok["events"] is None and ok["source"] == "api"
    assert confirms["events"] == ["booking.confirm"]
    listed = (await gql.run(ENDPOINTS, as_=ADMIN))["webhookEndpoints"]["items"]
    from_settings = [e for e in listed if e["source"] == "settings"]
    assert [e["url"] for e in from_settings] == [receiver.url("/configured")]
    assert {e["id"] for e in listed} - {from_settings[0]["id"]} == {
        e["id"] for e in (ok, failing, slow, redirecting, confirms)
    }
    assert all(e["secret"] is None for e in listed)  # shown once, at creation

    alice, bob, carol, dave, erin = (token(n) for n in ("alice", "bob", "carol", "dave", "erin"))
    seat = await gql.create_slot(capacity=1)
    quick = await gql.create_slot(capacity=1, hold_seconds=1)
    held = await gql.reserve(alice, seat, "a")
    queued = await gql.reserve(bob, seat, "b")
    lapsing = await gql.reserve(carol, quick, "c")
    waiting = await gql.reserve(dave, quick, "d")
    assert (held["state"], queued["state"], lapsing["state"], waiting["state"]) == (
        "RESERVED", "PENDING", "RESERVED", "PENDING",
    )  # fmt: skip
    first_four = await eventually(
        lambda: asyncio.sleep(0, receiver.lines("/ok")), lambda lines: len(lines) >= 4, within=30
    )
    lags = sorted(
        line["received_at"] - datetime.fromisoformat(json.loads(line["body"])["data"]["at"]).timestamp()
        for line in first_four
    )
    # A figure, not a check: from the transition to its arrival, receiver up (poll every 0.1 s).
    print(f"webhook lag, receiver up: min {lags[0]:.3f} s, max {lags[-1]:.3f} s over {len(lags)}")

    receiver.kill()  # mid-run: what happens now must wait for it
    assert (await gql.confirm(alice, held["id"]))["state"] == "CONFIRMED"
    assert (await gql.cancel(bob, queued["id"], "changed my mind"))["state"] == "CANCELLED"
    assert (await gql.reserve(erin, seat, "e"))["state"] == "PENDING"
    completed = await gql.run(
        "mutation($b: ID!) { completeBooking(bookingId: $b) { __typename ... on Booking { state } } }",
        {"b": held["id"]},
        as_=ADMIN,
    )
    assert completed["completeBooking"]["state"] == "COMPLETED"

    async def refused_attempts() -> list[dict[str, Any]]:
        return [d for d in await _deliveries(gql, ok["id"]) if d["status"] == "PENDING" and d["lastError"]]

    await eventually(refused_attempts, bool, within=30)  # the engine did find it down
    await receiver.start()
    # Meanwhile carol's hold lapsed (a worker's timer), dave was offered the unit and let it lapse too.
    await eventually(
        lambda: gql.booking(dave, waiting["id"]),
        lambda b: b is not None and b["state"] == "EXPIRED",
        within=30,
    )

    for endpoint in (ok, failing, slow, confirms, from_settings[0]):
        await eventually(
            lambda endpoint=endpoint: _deliveries(gql, endpoint["id"], "PENDING"),
            lambda d: d == [],
            within=60,
        )

    transitions = await _transitions(hooks_settings, [seat, quick])
    assert [t["event"] for t in transitions[seat]] == [
        "hold",
        "queue",
        "confirm",
        "cancel",
        "queue",
        "complete",
    ]
    assert [t["event"] for t in transitions[quick]] == ["hold", "queue", "expire", "promote", "expire"]
    secrets = {"/ok": ok["secret"], "/fail": failing["secret"], "/slow": slow["secret"]}
    for path, secret in {**secrets, "/configured": CONFIGURED_SECRET}.items():
        messages = _verified_messages(receiver, path, secret)
        assert _as_sent(transitions, messages) == transitions, path  # all of them, each slot in order
        for slot in (seat, quick):
            versions = [m["data"]["slotVersion"] for m in messages if m["data"]["slotId"] == slot]
            assert versions == sorted(versions) and None not in versions
    only_confirms = _verified_messages(receiver, "/confirms", confirms["secret"])
    # Only what it asked for; order holds per slot, not across slots.
    assert sorted((m["type"], m["data"]["bookingId"]) for m in only_confirms) == sorted(
        [("booking.confirm", held["id"])]
    )

    # The failing receiver's 500s and the slow one's timeout were retried, under the same webhook-id.
    failed_first = [line for line in receiver.lines("/fail") if line["status"] == 500]
    assert len(failed_first) >= 2
    slow_ids = [line["headers"]["webhook-id"] for line in receiver.lines("/slow")]
    assert slow_ids.count(slow_ids[0]) >= 2
    slow_log = await _deliveries(gql, slow["id"])
    assert any(d["attempts"] >= 2 and d["status"] == "DELIVERED" for d in slow_log)

    # Redirects are not followed: each attempt fails, and the delivery is given up after the schedule.
    async def redirect_log() -> list[dict[str, Any]]:
        return await _deliveries(gql, redirecting["id"])

    given_up = await eventually(
        redirect_log, lambda log: len(log) == 2 and all(d["status"] == "FAILED" for d in log), within=60
    )
    assert all(d["attempts"] == len(RETRY_SCHEDULE) + 1 and d["lastStatusCode"] == 302 for d in given_up)
    assert all("not followed" in d["lastError"] and d["nextAttemptAt"] is None for d in given_up)
    # Every attempt a 302, none beyond the schedule (one may fail on its way, on a loaded machine).
    answers = steady_receiver.lines("/redirect")
    assert {line["status"] for line in answers} == {302}
    assert 2 < len(answers) <= 2 * (len(RETRY_SCHEDULE) + 1)
    assert '"/redirect-target"' not in steady_receiver.log.read_text()

    # Replay: the same message (webhook-id, body) arrives again.
    first = (await _deliveries(gql, ok["id"]))[-1]
    replayed = await gql.run(
        "mutation($d: ID!) { replayWebhookDelivery(id: $d) {"
        " __typename ... on WebhookDelivery { id status } } }",
        {"d": first["id"]},
        as_=ADMIN,
    )
    assert replayed["replayWebhookDelivery"] == {
        "__typename": "WebhookDelivery",
        "id": first["id"],
        "status": "PENDING",
    }
    message_id = f"msg_{uuid.UUID(first['id']).hex}"

    def arrivals() -> int:
        return sum(line["headers"]["webhook-id"] == message_id for line in receiver.lines("/ok"))

    await eventually(lambda: asyncio.sleep(0, arrivals()), lambda n: n >= 2, within=30)

    deleted = await gql.run(
        "mutation($e: ID!) { deleteWebhookEndpoint(id: $e) { __typename ... on WebhookEndpoint { id } } }",
        {"e": redirecting["id"]},
        as_=ADMIN,
    )
    assert deleted["deleteWebhookEndpoint"] == {"__typename": "WebhookEndpoint", "id": redirecting["id"]}
    listed = (await gql.run(ENDPOINTS, as_=ADMIN))["webhookEndpoints"]["items"]
    assert redirecting["id"] not in {e["id"] for e in listed}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "http://user:secret@example.com/hook",
        "http://no-such-host.invalid/hook",
    ],
)
async def test_hostile_urls_are_refused_at_registration(gql: GraphQL, url: str) -> None:
    refused = (await gql.run(CREATE, {"u": url, "e": None}, as_=ADMIN))["createWebhookEndpoint"]
    assert refused["__typename"] == "ValidationError" and refused["field"] == "url", refused


async def test_unknown_event_types_are_refused(gql: GraphQL) -> None:
    refused = await gql.run(CREATE, {"u": "http://10.0.0.7/", "e": ["booking.teleport"]}, as_=ADMIN)
    assert refused["createWebhookEndpoint"]["__typename"] == "ValidationError"
    assert refused["createWebhookEndpoint"]["field"] == "events"


async def test_webhooks_are_for_admins_only(gql: GraphQL) -> None:
    alice = token("alice")
    for as_ in (alice, None):
        created = await gql.run(CREATE, {"u": "https://example.com/", "e": None}, as_=as_)
        assert created["createWebhookEndpoint"]["__typename"] == "NotAuthorized"
        for mutation in ("deleteWebhookEndpoint", "replayWebhookDelivery"):
            answer = await gql.run(
                f'mutation {{ {mutation}(id: "{uuid.uuid4()}") {{ __typename }} }}', as_=as_
            )
            assert answer[mutation]["__typename"] == "NotAuthorized"
        for query in ("webhookEndpoints", "webhookDeliveries"):
            read = await gql.run(
                f"{{ {query} {{ __typename ... on NotAuthorized {{ message }} }} }}", as_=as_
            )
            assert read[query]["__typename"] == "NotAuthorized", read


async def test_delivery_log_refuses_a_cursor_it_did_not_hand_out(gql: GraphQL) -> None:
    read = await gql.run(
        '{ webhookDeliveries(after: "x1") { __typename ... on ValidationError { field } } }', as_=ADMIN
    )
    assert read["webhookDeliveries"] == {"__typename": "ValidationError", "field": "after"}
    empty = await gql.run(DELIVERIES, {"e": None, "s": None, "first": 5, "after": None}, as_=ADMIN)
    assert empty["webhookDeliveries"] == {
        "__typename": "WebhookDeliveryPage",
        "endCursor": None,
        "hasNextPage": False,
        "items": [],
    }


async def test_unknown_endpoint_and_delivery_are_not_found(gql: GraphQL) -> None:
    missing = str(uuid.uuid4())
    deleted = await gql.run(
        "mutation($e: ID!) { deleteWebhookEndpoint(id: $e) {"
        " __typename ... on WebhookEndpointNotFound { endpointId } } }",
        {"e": missing},
        as_=ADMIN,
    )
    assert deleted["deleteWebhookEndpoint"] == {
        "__typename": "WebhookEndpointNotFound",
        "endpointId": missing,
    }
    replayed = await gql.run(
        "mutation($d: ID!) { replayWebhookDelivery(id: $d) {"
        " __typename ... on WebhookDeliveryNotFound { deliveryId } } }",
        {"d": missing},
        as_=ADMIN,
    )
    assert replayed["replayWebhookDelivery"] == {
        "__typename": "WebhookDeliveryNotFound",
        "deliveryId": missing,
    }
    malformed = await gql.run(
        'mutation { deleteWebhookEndpoint(id: "nope") { __typename ... on ValidationError { field } } }',
        as_=ADMIN,
    )
    assert malformed["deleteWebhookEndpoint"] == {"__typename": "ValidationError", "field": "id"}
