"""The ASGI app: GraphQL (and GraphiQL) at /graphql, /healthz; resources opened in the lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from slotengine.api import board, explorer, operations
from slotengine.api.auth import InvalidToken, caller_from_header
from slotengine.api.context import Context
from slotengine.api.guards import BodySizeLimit, origin_allowed
from slotengine.api.schema import build_schema
from slotengine.config import Settings
from slotengine.service.engine import Engine, close_engine, open_engine
from slotengine.service.events import EventHub

log = logging.getLogger(__name__)


class SlotengineGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context, bearer auth and graphql-transport-ws only."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            build_schema(introspection=settings.introspection),
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            max_subscriptions_per_connection=20,
        )
        self.settings = settings

    async def render_graphql_ide(self, request: Request) -> Response:
        if explorer.assets_present():
            return HTMLResponse(explorer.local_page(self.graphql_ide_html))
        return await super().render_graphql_ide(request)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        engine: Engine = request.app.state.engine
        caller = request.scope.get("state", {}).get("caller")
        address = request.client.host if request.client else None
        return Context(engine=engine, hub=request.app.state.hub, caller=caller, client_address=address)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Only authenticated connections are accepted; the token comes in connection_init."""
        params = context.connection_params or {}
        header = params.get("Authorization") or params.get("authorization")
        try:
            caller = caller_from_header(self.settings.jwt_secret, header if isinstance(header, str) else None)
        except InvalidToken as exc:
            raise ConnectionRejectionError({"message": str(exc)}) from None
        if caller is None:
            raise ConnectionRejectionError({"message": 'send {"Authorization": "Bearer <token>"}'})
        context.caller = caller
        return UNSET


def _unauthenticated(reason: str) -> Response:
    body = {"errors": [{"message": reason, "extensions": {"code": "UNAUTHENTICATED"}}]}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class _AuthenticatedGraphQL:
    """Reads the bearer token of an HTTP request before GraphQL runs; a bad one is a 401."""

    def __init__(self, graphql: SlotengineGraphQL, settings: Settings) -> None:
        self.graphql = graphql
        self.secret = settings.jwt_secret
        self.allowed_origins = settings.allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not origin_allowed(Headers(scope=scope), self.allowed_origins):
            # Closing before accepting answers the handshake with HTTP 403.
            await send({"type": "websocket.close", "code": 4403, "reason": "origin not allowed"})
            return
        if scope["type"] == "http":
            try:
                caller = caller_from_header(self.secret, Headers(scope=scope).get("authorization"))
            except InvalidToken as exc:
                await _unauthenticated(str(exc))(scope, receive, send)
                return
            scope.setdefault("state", {})["caller"] = caller
        await self.graphql(scope, receive, send)


def create_app(settings: Settings) -> Starlette:
    """The engine's ASGI app; settings must name the database and Redis URLs."""
    if not settings.database_url or not settings.redis_url:
        raise ValueError("SLOTENGINE_DATABASE_URL and SLOTENGINE_REDIS_URL must be set")
    database_url, redis_url = settings.database_url, settings.redis_url
    graphql = _AuthenticatedGraphQL(SlotengineGraphQL(settings), settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engine = await open_engine(settings, database_url=database_url, redis_url=redis_url)
        app.state.hub = EventHub(app.state.engine.redis, app.state.engine.channel)
        # What exists now (modules, the schema) lives as long as the process: keep it out of
        # CPython's full collections, whose pauses stall every listener of a fan-out at once.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.hub.close()
            await close_engine(app.state.engine)

    return Starlette(
        routes=[
            Route("/", board.page),
            Mount(board.ASSET_PREFIX, StaticFiles(directory=board.ASSETS), name="board-assets"),
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", graphql),
            # Both check PostgreSQL and Redis: /healthz for what exists, /readyz for orchestrators.
            Route("/healthz", operations.readiness),
            Route("/readyz", operations.readiness),
            Route("/metrics", operations.metrics_page),
            Mount(
                explorer.ASSET_PREFIX,
                StaticFiles(directory=explorer.VENDOR, check_dir=False),
                name="graphiql-assets",
            ),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(operations.RequestTiming),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        ],
    )
