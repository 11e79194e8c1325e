"""The one place uvicorn is started: the API behind limits on request heads and WebSocket messages.

uvicorn bounds neither how long a client may take to send a request head (its keep-alive timer
runs only after a response, and every byte received stops it) nor, with httptools, how large the
head may be. A client trickling a header byte every few seconds would hold a connection forever;
these limits close it.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from slotengine.config import Settings

log = logging.getLogger(__name__)


class HeadTooLarge(Exception):
    """The request line and headers are over the limit (answered 431)."""


def guarded_http_protocol(max_head_bytes: int, head_timeout_seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, refusing heads over `max_head_bytes` or slower than the timeout."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _head_timer: asyncio.TimerHandle | None = None
        _answered = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()  # a connection that never sends a byte is closed too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._arm_head_timer()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if not self._answered:  # a 431 or 408 already went out
                super().send_400_response(msg)

        def _count(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > max_head_bytes:
                self._refuse(431, "Request Header Fields Too Large")
                raise HeadTooLarge

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(head_timeout_seconds, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            self._refuse(408, "Request Timeout")

        def _refuse(self, status: int, reason: str) -> None:
            self._disarm_head_timer()
            if self._answered or self.transport.is_closing():
                return
            self._answered = True
            log.warning("closed the connection of %s: %d %s", self.client, status, reason)
            body = reason.encode()
            head = b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n" % (status, body)
            self.transport.write(head + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
            self.transport.close()

    return GuardedHttpProtocol


def run_api(settings: Settings, host: str, port: int) -> None:
    """Serve the engine's ASGI app until SIGINT or SIGTERM."""
    from slotengine.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level,
        http=guarded_http_protocol(settings.max_header_bytes, settings.request_head_timeout_seconds),
        # For the h11 protocol, should anyone pick it: the same bound on a head.
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=settings.keep_alive_seconds,
        # A WebSocket message may be no larger than an HTTP body (the app checks it too).
        ws_max_size=settings.max_body_bytes,
        # Per-message deflate costs more CPU than it saves on small GraphQL messages, and
        # fan-out multiplies that cost by the number of listeners.
        ws_per_message_deflate=False,
    )
