"""What operators scrape and probe: /metrics, /healthz and /readyz, and request timing."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import RedisCluster
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slotengine import metrics
from slotengine.api.auth import InvalidToken, caller_from_header
from slotengine.redis.connection import RedisClient
from slotengine.redis.keys import expiry_lateness_key
from slotengine.service.engine import Engine
from slotengine.store.database import connection

CHECK_TIMEOUT_SECONDS = 2.0


async def readiness(request: Request) -> Response:
    """200 when PostgreSQL and Redis both answer, else 503 naming what is down."""
    engine: Engine = request.app.state.engine
    postgres, redis = await asyncio.gather(
        _check(connection().execute_query("SELECT 1")), _check(redis_ready(engine.redis))
    )
    checks = {"postgres": postgres, "redis": redis}
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(checks, status_code=200 if healthy else 503)


async def redis_ready(redis: RedisClient) -> None:
    """Raise unless Redis answers: on a cluster, it reports cluster_state:ok and every primary answers."""
    if not isinstance(redis, RedisCluster):
        await redis.ping()
        return
    info = await redis.cluster_info()
    if info.get("cluster_state") != "ok":
        raise ClusterNotReady(f"cluster_state:{info.get('cluster_state')}")
    # A down primary's slots are unserved even if the node asked above says ok (it has not
    # noticed yet): ask each primary itself.
    await redis.ping(target_nodes=RedisCluster.PRIMARIES)


class ClusterNotReady(Exception):
    """The Redis Cluster reports a state other than ok."""


async def _check(probe: object) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)  # type: ignore[arg-type]
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


def metrics_endpoint(jwt_secret: str, metrics_token: str | None) -> Callable[[Request], Awaitable[Response]]:
    """/metrics for a scraper holding `metrics_token`, or for an admin's JWT; anyone else is refused."""

    async def guarded(request: Request) -> Response:
        refusal = _metrics_refusal(request.headers.get("authorization"), jwt_secret, metrics_token)
        return refusal or await metrics_page(request)

    return guarded


def _metrics_refusal(
    authorization: str | None, jwt_secret: str, metrics_token: str | None
) -> Response | None:
    scheme, _, presented = (authorization or "").partition(" ")
    expected = (metrics_token or "").encode()
    if scheme.lower() == "bearer" and expected and hmac.compare_digest(presented.strip().encode(), expected):
        return None
    try:
        caller = caller_from_header(jwt_secret, authorization)
    except InvalidToken:
        caller = None
    if caller is not None and caller.admin:
        return None
    status, code = (403, "FORBIDDEN") if caller is not None else (401, "UNAUTHENTICATED")
    message = "/metrics needs the metrics token or an admin token"
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status, headers={"WWW-Authenticate": "Bearer"})


async def metrics_page(request: Request) -> Response:
    """Prometheus' text format; engine-wide figures are read when scraped."""
    engine: Engine = request.app.state.engine
    rows = await connection().execute_query_dict(
        "SELECT state, count(*) AS n FROM bookings WHERE state IN ('RESERVED', 'PENDING') GROUP BY state"
    )
    counts = {row["state"]: int(row["n"]) for row in rows}
    metrics.ACTIVE_HOLDS.set(counts.get("RESERVED", 0))
    metrics.QUEUE_LENGTH.set(counts.get("PENDING", 0))
    metrics.EXPIRY_LATENESS.update(await engine.redis.hgetall(expiry_lateness_key(engine.prefix)))
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


class RequestTiming:
    """Observes each HTTP request's latency, labelled by route template (not by raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            metrics.REQUEST_LATENCY.labels(_route(scope), scope["method"], str(status)).observe(
                time.perf_counter() - began
            )


def _route(scope: Scope) -> str:
    """The matching route's path template, so that ids in paths do not explode the labels."""
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", ())
    # Routes are fixed, so the answer depends on these alone; remembered for the commonest paths.
    key = (id(routes), scope["type"], scope["path"], scope.get("root_path", ""), scope.get("method"))
    known = _ROUTES.get(key)
    if known is not None:
        return known
    found = "unmatched"
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            found = str(getattr(route, "path", scope["path"]))
            break
    if len(_ROUTES) < _ROUTES_KEPT:  # paths are the client's to choose: a bound, not an LRU
        _ROUTES[key] = found
    return found


_ROUTES_KEPT = 1024
_ROUTES: dict[tuple[object, ...], str] = {}
