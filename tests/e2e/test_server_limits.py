"""Limits the server holds, each beside its twin: a WebSocket message may be no larger than an HTTP
body, and a request head must be small and arrive promptly (`slotengine serve`, real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from slotengine.config import Settings
from slotengine.embedded import free_port
from tests.deadlines import eventually
from tests.e2e.conftest import token
from tests.e2e.ws import PROTOCOL
from tests.processes import kill_tree, serving, spawn

LIMIT = 4096  # SLOTENGINE_MAX_BODY_BYTES of the served API
HEAD_TIMEOUT = 1.0


@pytest.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[tuple[str, int]]:
    """A `slotengine serve` with a small body limit and a short head timeout: (base URL, port)."""
    port = free_port()
    env = {
        "SLOTENGINE_MAX_BODY_BYTES": str(LIMIT),
        "SLOTENGINE_REQUEST_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
        "SLOTENGINE_KEEP_ALIVE_SECONDS": "1",
    }
    process = spawn(settings, "serve", "--port", str(port), env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            await eventually(lambda: serving(http, base), bool, within=60)
        yield base, port
    finally:
        kill_tree(process, signal.SIGTERM)


def _operation(size: int) -> str:
    """A JSON graphql-transport-ws subscribe message of exactly `size` bytes (a padded query)."""
    empty = json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }#"}})
    return empty.replace("#", "#" + "x" * (size - len(empty)))


async def _over_http(base: str, size: int) -> int:
    body = json.loads(_operation(size))["payload"]
    raw = json.dumps(body).encode()
    raw = raw.replace(b"#", b"#" + b"x" * (size - len(raw)))
    assert len(raw) == size
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{base}/graphql", content=raw, headers={"content-type": "application/json"}
        )
    return response.status_code


async def _over_websocket(url: str, message: str) -> int | None:
    """None when the operation was answered, else the close code the server sent."""
    async with websockets.connect(url, subprotocols=[PROTOCOL], max_size=None) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token('sizes')}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(message)
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed:
            return ws.close_code
        assert reply["type"] == "next", reply
        return None


@pytest.mark.parametrize("size", [LIMIT // 2, LIMIT - 1, LIMIT, LIMIT + 1, 2 * LIMIT, 64 * LIMIT])
async def test_a_websocket_message_is_held_to_the_http_body_limit(api: tuple[str, int], size: int) -> None:
    base, _ = api
    http_status = await _over_http(base, size)
    ws_close = await _over_websocket(base.replace("http", "ws", 1) + "/graphql", _operation(size))
    if size <= LIMIT:
        assert (http_status, ws_close) == (200, None)
    else:
        assert (http_status, ws_close) == (413, 1009)


@contextlib.asynccontextmanager
async def _plain_uvicorn(app: Starlette) -> AsyncIterator[str]:
    """The engine's app under uvicorn's defaults (16 MiB WebSocket messages), not `slotengine serve`."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), bool, within=30)
        yield f"ws://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize(
    ("characters", "character"),
    [(60_000, "x"), (70_000, "x"), (20_000, "€"), (23_000, "€"), (1_000_000, "x")],
)
async def test_the_app_holds_the_limit_under_a_server_that_does_not(
    app: Starlette, settings: Settings, characters: int, character: str
) -> None:
    message = _operation(200).replace("#", "#" + character * characters)
    size = len(message.encode())
    async with _plain_uvicorn(app) as url:
        closed = await _over_websocket(url, message)
    # Bytes count, not characters: 23,000 three-byte characters are over 64 KiB.
    assert closed == (1009 if size > settings.max_body_bytes else None), size


# ---- request heads ---------------------------------------------------------------------------


async def _exchange(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)  # until the server closes
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def _head(*headers: bytes, target: bytes = b"/healthz") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"".join(headers) + b"\r\n"


@pytest.mark.parametrize(
    "head",
    [
        _head(b"X-Big: " + b"a" * 100 * 1024 + b"\r\n"),
        _head(b"X-Big: " + b"a" * 17 * 1024 + b"\r\n"),
        _head(*[b"X-Many-%d: %s\r\n" % (i, b"v" * 16) for i in range(2_000)]),
        _head(target=b"/healthz?" + b"q" * 20 * 1024),
        _head(b"Cookie: " + b"c=" * 10_000 + b"\r\n"),
    ],
    ids=["one-100KiB-header", "one-17KiB-header", "2000-headers", "20KiB-url", "20KiB-cookie"],
)
async def test_a_request_head_over_the_limit_is_refused_with_431(api: tuple[str, int], head: bytes) -> None:
    answer = await _exchange(api[1], head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


async def test_a_head_under_the_limit_is_answered(api: tuple[str, int]) -> None:
    answer = await _exchange(api[1], _head(b"X-Fine: " + b"a" * 8 * 1024 + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


async def test_a_slowloris_head_is_cut_off_at_the_head_timeout(api: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api[1])
    loop = asyncio.get_running_loop()
    began, sent = loop.time(), 0
    answer: bytes | None = None
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        # One header line every 100 ms: each byte resets uvicorn's idle timer, none ends the head.
        while answer is None and loop.time() - began < 10:
            writer.write(b"X-Slow-%d: y\r\n" % sent)
            sent += 1
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(), 0.1)  # the server closed
    except ConnectionResetError:
        answer = b""
    finally:
        writer.close()
    took = loop.time() - began
    assert answer is not None, f"still open after {took:.1f}s"
    assert took < HEAD_TIMEOUT + 3
    assert sent >= 5, "closed before the client was slow"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]


async def test_a_connection_that_never_sends_a_head_is_closed(api: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api[1])
    try:
        answer = await asyncio.wait_for(reader.read(), HEAD_TIMEOUT + 5)
    finally:
        writer.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]
