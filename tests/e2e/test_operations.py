"""What operators get: /metrics, readiness that follows PostgreSQL and Redis, structured logs."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from slotengine.config import Settings
from slotengine.embedded import free_port
from slotengine.logs import JsonFormatter
from tests.deadlines import eventually
from tests.e2e.conftest import ADMIN, GraphQL, token
from tests.processes import kill_tree, spawn
from tests.tcp_proxy import TcpProxy


async def _samples(gql: GraphQL) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await gql.http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_reservations_by_result_and_read_holds_and_queues(gql: GraphQL) -> None:
    before = await _samples(gql)
    slot_id = await gql.create_slot(capacity=1)
    held = await gql.reserve(token("m-ann"), slot_id, "m1")
    queued = await gql.reserve(token("m-bob"), slot_id, "m1")
    replayed = await gql.reserve(token("m-bob"), slot_id, "m1")
    refused = await gql.reserve(token("m-cat"), "not-a-slot", "m1")
    assert (held["state"], queued["state"], replayed["id"]) == ("RESERVED", "PENDING", queued["id"])
    assert refused["__typename"] == "ValidationError"

    after = await _samples(gql)
    for result in ("held", "queued", "replayed", "ValidationError"):
        grown = _value(after, "slotengine_reservations_total", result=result) - _value(
            before, "slotengine_reservations_total", result=result
        )
        assert grown == 1, result
    assert _value(after, "slotengine_active_holds") - _value(before, "slotengine_active_holds") == 1
    assert _value(after, "slotengine_queue_length") - _value(before, "slotengine_queue_length") == 1
    posts = _value(
        after, "slotengine_http_request_duration_seconds_count", route="/graphql", method="POST", status="200"
    )
    assert posts >= 5


async def test_a_lapsed_hold_is_observed_in_the_expiry_lateness_histogram(gql: GraphQL) -> None:
    before = await _samples(gql)
    slot_id = await gql.create_slot(capacity=1, hold_seconds=1)
    holder = token("m-late")
    booking = await gql.reserve(holder, slot_id, "late")

    async def state() -> str:
        found = await gql.booking(holder, booking["id"])
        assert found is not None
        return str(found["state"])

    await eventually(state, lambda s: s == "EXPIRED", within=10)
    after = await _samples(gql)
    count = "slotengine_expiry_lateness_seconds_count"
    assert _value(after, count) - _value(before, count) >= 1
    assert _value(after, "slotengine_expiry_lateness_seconds_bucket", le="+Inf") == _value(after, count)


async def test_transitions_are_logged_with_slot_and_booking_ids(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    slot_id = await gql.create_slot(capacity=1)
    with caplog.at_level(logging.INFO, logger="slotengine"):
        booking = await gql.reserve(token("m-log"), slot_id, "log")
    records = [r for r in caplog.records if getattr(r, "booking_id", None) == booking["id"]]
    assert records, [r.getMessage() for r in caplog.records]
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["slot_id"] == slot_id and line["booking_id"] == booking["id"]
    assert line["event"] == "hold" and line["level"] == "info"


def _through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username + '@' if parts.username else ''}127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def proxied_api(settings: Settings) -> AsyncIterator[tuple[str, TcpProxy, TcpProxy]]:
    """A `slotengine serve` reaching PostgreSQL and Redis through proxies the test can cut."""
    assert settings.database_url and settings.redis_url
    postgres, redis = urlsplit(settings.database_url), urlsplit(settings.redis_url)
    pg_proxy = TcpProxy(postgres.hostname or "127.0.0.1", postgres.port or 5432)
    redis_proxy = TcpProxy(redis.hostname or "127.0.0.1", redis.port or 6379)
    await pg_proxy.start()
    await redis_proxy.start()
    port = free_port()
    env = {
        "SLOTENGINE_DATABASE_URL": _through(settings.database_url, pg_proxy),
        "SLOTENGINE_REDIS_URL": _through(settings.redis_url, redis_proxy),
    }
    process = spawn(settings, "serve", "--port", str(port), env=env)
    try:
        yield f"http://127.0.0.1:{port}", pg_proxy, redis_proxy
    finally:
        kill_tree(process, signal.SIGTERM)
        await pg_proxy.cut()
        await redis_proxy.cut()


async def test_readiness_fails_while_postgres_or_redis_is_unreachable(
    proxied_api: tuple[str, TcpProxy, TcpProxy],
) -> None:
    base, pg_proxy, redis_proxy = proxied_api
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:

        async def ready() -> tuple[int, dict[str, str]]:
            try:
                response = await http.get("/readyz")
            except httpx.HTTPError:
                return 0, {}
            return response.status_code, response.json()

        assert (await eventually(ready, lambda r: r[0] == 200, within=60))[1] == {
            "postgres": "ok",
            "redis": "ok",
        }

        await redis_proxy.cut()
        _, checks = await eventually(ready, lambda r: r[0] == 503, within=15)
        assert checks["postgres"] == "ok" and checks["redis"].startswith("down")
        await redis_proxy.start()
        await eventually(ready, lambda r: r[0] == 200, within=15)

        await pg_proxy.cut()
        _, checks = await eventually(ready, lambda r: r[0] == 503, within=15)
        assert checks["postgres"].startswith("down") and checks["redis"] == "ok"
        assert (await http.get("/healthz")).status_code == 503
        await pg_proxy.start()
        await eventually(ready, lambda r: r[0] == 200, within=30)
