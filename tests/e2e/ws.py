"""A small graphql-transport-ws client over a real WebSocket (the `websockets` package)."""

from __future__ import annotations

import asyncio
import itertools
import json
from types import TracebackType
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

PROTOCOL = "graphql-transport-ws"


class GraphQLWebSocket:
    """One connection; `subscribe` starts an operation, `next` waits for its next payload."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self.ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._inbox: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GraphQLWebSocket:
        self.ws = await websockets.connect(self.url, subprotocols=[PROTOCOL])  # type: ignore[list-item]
        payload = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        await self.ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            message = json.loads(raw)
            if message.get("type") == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif "id" in message:
                self._inbox.setdefault(message["id"], asyncio.Queue()).put_nowait(message)

    async def subscribe(self, query: str, variables: dict[str, Any]) -> str:
        assert self.ws is not None
        operation = str(next(self._ids))
        self._inbox.setdefault(operation, asyncio.Queue())
        await self.ws.send(
            json.dumps(
                {"id": operation, "type": "subscribe", "payload": {"query": query, "variables": variables}}
            )
        )
        return operation

    async def message(self, operation: str, within: float = 15) -> dict[str, Any]:
        """The next protocol message (next, error or complete) for the operation."""
        return await asyncio.wait_for(self._inbox[operation].get(), within)

    async def next(self, operation: str, within: float = 15) -> dict[str, Any]:
        """The next result's data; fails on an error or completion."""
        message = await self.message(operation, within)
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message["payload"]
        data: dict[str, Any] = message["payload"]["data"]
        return data

    async def stop(self, operation: str) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps({"id": operation, "type": "complete"}))
