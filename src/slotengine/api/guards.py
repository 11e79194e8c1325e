"""Edge guards: a cap on request bodies and on WebSocket messages."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MESSAGE_TOO_BIG = 1009  # RFC 6455's close code; uvicorn's own limit closes with it too


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuses HTTP bodies over `max_bytes` with 413, whether announced or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body larger than {self.max_bytes} bytes"
        body = {"errors": [{"message": message, "extensions": {"code": "REQUEST_TOO_LARGE"}}]}
        await JSONResponse(body, status_code=413)(scope, receive, send)


def websocket_message_limit(receive: Receive, send: Send, max_bytes: int) -> tuple[Receive, Send]:
    """`receive` and `send` of a WebSocket that is closed (1009) on a message over `max_bytes`.

    The app then sees the client leave; whatever it still sends after the close is dropped.
    """
    closed = False

    async def limited_receive() -> Message:
        nonlocal closed
        message = await receive()
        if message["type"] == "websocket.receive" and _over(message, max_bytes):
            closed = True
            await send({"type": "websocket.close", "code": MESSAGE_TOO_BIG, "reason": "message too big"})
            return {"type": "websocket.disconnect", "code": MESSAGE_TOO_BIG}
        return message

    async def guarded_send(message: Message) -> None:
        if not closed:
            await send(message)

    return limited_receive, guarded_send


def _over(message: Message, max_bytes: int) -> bool:
    text: str | None = message.get("text")
    if text is not None:
        # UTF-8 takes at most 4 bytes a character: encode only when that could matter.
        return len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes
    data: bytes | None = message.get("bytes")
    return len(data or b"") > max_bytes


# What every response says to browsers: never render this inside another site's frame, never guess
# a content type, never leak the URL as a referrer. Pages that run scripts (the board, GraphiQL)
# set a Content-Security-Policy of their own; anything else gets one that allows nothing.
BROWSER_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


class BrowserHeaders:
    """Adds BROWSER_HEADERS to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(name.encode(), value.encode()) for name, value in BROWSER_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                missing = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *missing]}
            await send(message)

        await self.app(scope, receive, with_headers)
