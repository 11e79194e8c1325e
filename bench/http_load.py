"""A small raw HTTP/1.1 client over asyncio streams: keep-alive connections opened first, then
requests written all at once. Lighter than httpx, so the client takes less CPU from the servers
it measures on a small machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

OPEN_AT_ONCE = 200  # connects in flight together (stays under the listen backlog)


def post_request(path: str, body: dict[str, Any], token: str) -> bytes:
    """The bytes of one keep-alive `POST path` with a JSON body and a bearer token."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


@dataclass
class Answer:
    status: int
    body: bytes
    seconds: float  # from the moment every request was written to this answer's arrival

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def read_response(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding":
                raise ValueError(f"this client reads Content-Length bodies only, not {value.strip()}")
        if length is None:
            raise ValueError("response without Content-Length")
        return status, await self.reader.readexactly(length)

    async def call(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        return await self.read_response()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def open_connections(port: int, count: int) -> list[Connection]:
    """`count` keep-alive connections to 127.0.0.1:port, opened before any request is sent."""
    connections: list[Connection] = []
    while len(connections) < count:
        batch = min(OPEN_AT_ONCE, count - len(connections))
        connections += await asyncio.gather(*(Connection.open(port) for _ in range(batch)))
    return connections


async def close_all(connections: list[Connection]) -> None:
    await asyncio.gather(*(c.close() for c in connections))


async def burst(port: int, requests: list[bytes]) -> tuple[float, list[Answer]]:
    """Open one connection per request, then write every request at once; return the time from
    the writes to the last answer, and every answer in request order."""
    connections = await open_connections(port, len(requests))
    try:
        began = time.perf_counter()
        for connection, request in zip(connections, requests, strict=True):
            connection.writer.write(request)

        async def answer(connection: Connection) -> Answer:
            status, body = await connection.read_response()
            return Answer(status, body, time.perf_counter() - began)

        answers = await asyncio.gather(*(answer(c) for c in connections))
        return max(a.seconds for a in answers), list(answers)
    finally:
        await close_all(connections)


async def closed_loop(
    port: int, requests: list[bytes], connections: int, seconds: float
) -> tuple[int, list[float], list[Answer]]:
    """`connections` clients each sending the next request as soon as the last is answered, for
    `seconds`: (requests answered, latencies in ms, a sample of answers). Used when wrk is absent."""
    pool = await open_connections(port, connections)
    latencies: list[float] = []
    sample: list[Answer] = []
    cursor = 0
    deadline = time.perf_counter() + seconds

    async def client(connection: Connection) -> None:
        nonlocal cursor
        while time.perf_counter() < deadline and cursor < len(requests):
            request = requests[cursor]
            cursor += 1
            began = time.perf_counter()
            status, body = await connection.call(request)
            latencies.append((time.perf_counter() - began) * 1000)
            if len(sample) < 1000:
                sample.append(Answer(status, body, 0.0))

    try:
        await asyncio.gather(*(client(c) for c in pool))
    finally:
        await close_all(pool)
    return len(latencies), latencies, sample
