"""Edge guards: a cap on request bodies, and which browser origins may open WebSockets."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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


def origin_allowed(headers: Headers, allowed: list[str]) -> bool:
    """A WebSocket may open from no browser, from the API's own origin, or from an allowed one.

    Browsers send Origin on every WebSocket handshake and let any page open one, so this is
    what stops another site's page from talking to the engine with its visitor's network.
    """
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser: nothing to check against
    if origin in allowed or "*" in allowed:
        return True
    return urlsplit(origin).netloc == headers.get("host")
