"""The ASGI app: GraphQL (and GraphiQL) at /graphql, /healthz; resources opened in the lifespan."""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
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
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from slotengine.api import board, explorer, operations, vendor
from slotengine.api.auth import InvalidToken, caller_from_header
from slotengine.api.context import Context
from slotengine.api.fast_path import FastPath, PlanBook, read_body
from slotengine.api.guards import BodySizeLimit, BrowserHeaders, websocket_message_limit
from slotengine.api.schema import build_schema, masked_error
from slotengine.api.socket_rules import HolderCounts, RuledTransportWS, payload_authorization
from slotengine.config import Settings, required
from slotengine.service.engine import close_engine, open_engine
from slotengine.service.events import EventHub

log = logging.getLogger(__name__)


class SlotengineGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context, bearer auth and graphql-transport-ws only."""

    graphql_transport_ws_handler_class = RuledTransportWS

    def __init__(self, settings: Settings) -> None:
        book = PlanBook() if settings.fast_path else None
        super().__init__(
            build_schema(introspection=settings.introspection, plans=book),
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            max_subscriptions_per_connection=settings.ws_max_subscriptions_per_connection,
            connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout_seconds),
            # Strawberry checks Origin itself (same origin, or one of these): the one check there is.
            allowed_origins=settings.allowed_origins,
        )
        self.settings = settings
        self.fast_path: FastPath | None = None
        if book is not None:
            schema = self.schema
            self.fast_path = FastPath(
                book,
                parse_json=self.parse_json,
                encode_json=self.encode_json,
                streams=self._get_stream_transport_from_headers,
                report_errors=lambda errors: schema.process_errors(errors, None),
                mask_error=masked_error,
            )
        self.holder_counts = HolderCounts(
            settings.ws_max_sockets_per_holder, settings.ws_max_subscriptions_per_holder
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.fast_path is not None and self.fast_path.wants(scope):
            body, receive = await read_body(receive)
            fast = None if body is None else await self.fast_path.answer(scope, body)
            if fast is not None:
                await fast(scope, receive, send)
                return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as refused:  # Strawberry answers these in plain text: ours are typed
            response = client_error(refused.status_code, refused.reason)
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        """Strict JSON for bodies and WebSocket messages: anything unreadable is a JSONDecodeError."""
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            if text.startswith("\ufeff"):  # as json.loads refuses it
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
            return _JSON.decode(text)
        except json.JSONDecodeError:
            raise
        except (UnicodeDecodeError, RecursionError, ValueError) as exc:
            # Invalid UTF-8, nesting deeper than the parser's stack, a 4,300+ digit number.
            raise json.JSONDecodeError(f"unreadable JSON ({type(exc).__name__})", "", 0) from None

    def parse_json(self, data: str | bytes) -> Any:
        """A body (or GET variables) must be one JSON object; batches are not served."""
        parsed = super().parse_json(data)
        if not isinstance(parsed, dict):
            raise HTTPException(400, "expected a JSON object (one operation; batches are not served)")
        return parsed

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Strawberry's, but subscriptions are WebSocket-only: over HTTP they are a 400."""
        allowed = HTTP_OPERATIONS[request_adapter.method]
        try:
            result = await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from None
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPException(400, "subscriptions are served over WebSocket only") from None
            raise HTTPException(400, exc.as_http_error_reason(request_adapter.method)) from None
        except MissingQueryError:
            raise HTTPException(400, "No GraphQL query found in the request") from None
        return result

    async def render_graphql_ide(self, request: Request) -> Response:
        if explorer.assets_present():
            page = explorer.local_page(self.graphql_ide_html)
            return HTMLResponse(page, headers={"Content-Security-Policy": graphiql_policy(page)})
        return await super().render_graphql_ide(request)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return Context.of_request(request.scope)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Only authenticated connections are accepted; the token comes in connection_init."""
        header = payload_authorization(context.connection_params)
        try:
            caller = caller_from_header(self.settings.jwt_secret, header)
        except InvalidToken as exc:
            raise ConnectionRejectionError({"message": str(exc)}) from None
        if caller is None:
            raise ConnectionRejectionError({"message": 'send {"Authorization": "Bearer <token>"}'})
        context.caller = caller
        return UNSET


_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def graphiql_policy(page: str) -> str:
    """GraphiQL's CSP: scripts from this server plus the page's own inline script, by its hash."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for body in _INLINE_SCRIPT.findall(page)
    )
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' {hashes}",
            # GraphiQL's editor and React set styles at run time.
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# Made once: json.loads with any option builds a new decoder on every call.
_JSON = json.JSONDecoder(parse_constant=_no_constant)


HTTP_OPERATIONS = {
    "GET": frozenset({OperationType.QUERY}),
    "POST": frozenset({OperationType.QUERY, OperationType.MUTATION}),
}
CLIENT_ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def client_error(status: int, reason: str) -> Response:
    """A refused request as GraphQL clients read errors: JSON with `extensions.code`."""
    if status == 400 and reason == "Unsupported content type":
        status, reason = 415, "send the operation as application/json"
    code = CLIENT_ERROR_CODES.get(status, "BAD_REQUEST")
    return JSONResponse({"errors": [{"message": reason, "extensions": {"code": code}}]}, status_code=status)


def _unauthenticated(reason: str) -> Response:
    body = {"errors": [{"message": reason, "extensions": {"code": "UNAUTHENTICATED"}}]}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class _AuthenticatedGraphQL:
    """Reads the bearer token of an HTTP request before GraphQL runs; a bad one is a 401."""

    def __init__(self, graphql: SlotengineGraphQL, settings: Settings) -> None:
        self.graphql = graphql
        self.secret = settings.jwt_secret
        self.max_message_bytes = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # uvicorn is told the same limit (ws_max_size); this holds under any server.
            receive, send = websocket_message_limit(receive, send, self.max_message_bytes)
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
    required(settings, "database_url")
    required(settings, "redis_url")
    graphql = _AuthenticatedGraphQL(SlotengineGraphQL(settings), settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engine = await open_engine(settings)
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
            # First: nearly every request is for it, and Starlette tries routes in order.
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", graphql),
            Route("/", board.page),
            Mount(board.ASSET_PREFIX, StaticFiles(directory=board.ASSETS), name="board-assets"),
            # Both check PostgreSQL and Redis: /healthz for what exists, /readyz for orchestrators.
            Route("/healthz", operations.readiness),
            Route("/readyz", operations.readiness),
            Route("/metrics", operations.metrics_endpoint(settings.jwt_secret, settings.metrics_token)),
            Mount(
                explorer.ASSET_PREFIX,
                StaticFiles(directory=explorer.VENDOR, check_dir=False),
                name="graphiql-assets",
            ),
            # The board's graphql-ws client (fetched at install, like GraphiQL's scripts).
            Mount(vendor.PREFIX, StaticFiles(directory=vendor.VENDOR, check_dir=False), name="vendor"),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(operations.RequestTiming),
            Middleware(BrowserHeaders),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        ],
    )
