"""graphql-transport-ws held to the HTTP rules: well-formed messages only (else 4400), the token's
`exp` ends the socket (4403), and caps per holder on sockets (4429) and operations.

The caps count what this API process holds: N processes behind a balancer let a holder N times
as much, which bounds a holder's cost per process (what exhausts a process) all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any, cast

from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)

from slotengine.api.auth import InvalidToken, credentials_from_header
from slotengine.api.context import Context

log = logging.getLogger(__name__)

# Close codes of graphql-transport-ws (and the 44xx range it reserves for applications).
BAD_MESSAGE = 4400
FORBIDDEN = 4403
TOO_MANY = 4429


class HolderCounts:
    """How many sockets and operations each holder has open in this process, against caps."""

    def __init__(self, max_sockets: int, max_operations: int) -> None:
        self.max_sockets = max_sockets
        self.max_operations = max_operations
        self.sockets: Counter[str] = Counter()
        self.operations: Counter[str] = Counter()

    def open_socket(self, holder: str) -> bool:
        """Count a socket for `holder`; False (and not counted) when it has its share already."""
        if self.sockets[holder] >= self.max_sockets:
            return False
        self.sockets[holder] += 1
        return True

    def close_socket(self, holder: str) -> None:
        self.sockets[holder] -= 1
        if self.sockets[holder] <= 0:
            del self.sockets[holder]

    def start_operation(self, holder: str) -> bool:
        if self.operations[holder] >= self.max_operations:
            return False
        self.operations[holder] += 1
        return True

    def end_operation(self, holder: str) -> None:
        self.operations[holder] -= 1
        if self.operations[holder] <= 0:
            del self.operations[holder]


def message_problem(message: object) -> str | None:
    """What makes `message` no graphql-transport-ws message, or None when it is one."""
    if not isinstance(message, dict):
        return "a message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str):
        return "a message needs a string 'type'"
    payload = message.get("payload")
    if kind in ("connection_init", "ping", "pong"):
        return None if payload is None or isinstance(payload, dict) else f"{kind} payload must be an object"
    if kind == "complete":
        return None if _is_id(message.get("id")) else "complete needs a non-empty string 'id'"
    if kind == "subscribe":
        if not _is_id(message.get("id")):
            return "subscribe needs a non-empty string 'id'"
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return "subscribe needs a payload with a string 'query'"
        for field, kind in (("variables", dict), ("operationName", str), ("extensions", dict)):
            value = payload.get(field)
            if value is not None and not isinstance(value, kind):
                return f"{field} must be {'a string' if kind is str else 'an object'}"
        return None
    return f"unknown message type {kind[:40]!r}"


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100


class RuledTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler with the engine's socket rules."""

    holder: str | None = None
    expiry: asyncio.TimerHandle | None = None
    closing: asyncio.Task[None] | None = None

    @property
    def counts(self) -> HolderCounts:
        return cast(HolderCounts, self.view.holder_counts)  # type: ignore[attr-defined]

    async def handle_message(self, message: Message) -> None:
        problem = message_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        if message["type"] == "connection_init" and message.get("payload") is None:
            message = cast(ConnectionInitMessage, {**message, "payload": {}})  # the spec allows none
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if not self.connection_acknowledged or self.holder is not None:
            return
        caller = self.context.caller
        assert caller is not None  # on_ws_connect refuses connections without one
        if not self.counts.open_socket(caller.holder):
            self.connection_acknowledged = False
            await self._close(TOO_MANY, "too many open sockets for this holder")
            return
        self.holder = caller.holder
        # The token was checked once, at connection_init; its expiry ends the socket, as HTTP
        # answers 401 from then on.
        self.expiry = asyncio.get_running_loop().call_later(self._token_seconds_left(), self._token_expired)

    def _token_seconds_left(self) -> float:
        secret: str = self.view.settings.jwt_secret  # type: ignore[attr-defined]
        try:
            credentials = credentials_from_header(
                secret, payload_authorization(self.context.connection_params)
            )
        except InvalidToken:  # expired since on_ws_connect read it
            return 0.0
        return 0.0 if credentials is None else max(0.0, credentials.expires_at - time.time())

    def _token_expired(self) -> None:
        self.closing = asyncio.create_task(self._close(FORBIDDEN, "the token has expired"))

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.holder is None or message["id"] in self.operations:
            await super().handle_subscribe(message)  # refused by Strawberry's own rules
            return
        if not self.counts.start_operation(self.holder):
            await self.send_message(
                cast(
                    Message,
                    {
                        "id": message["id"],
                        "type": "error",
                        "payload": [
                            {
                                "message": "too many subscriptions for this holder",
                                "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS"},
                            }
                        ],
                    },
                )
            )
            return
        await super().handle_subscribe(message)
        operation = self.operations.get(message["id"])
        if operation is None or operation.task is None:
            self.counts.end_operation(self.holder)  # refused (per-connection cap): nothing runs
            return
        holder = self.holder
        operation.task.add_done_callback(lambda _task: self.counts.end_operation(holder))

    async def shutdown(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        try:
            await super().shutdown()
        finally:
            if self.holder is not None:
                self.counts.close_socket(self.holder)
                self.holder = None

    async def _close(self, code: int, reason: str) -> None:
        # The client may have gone, or the socket closed already (a close is sent once).
        with contextlib.suppress(WebSocketDisconnected, RuntimeError):
            await self.websocket.close(code=code, reason=reason)


def payload_authorization(params: dict[str, Any] | None) -> str | None:
    """The `Authorization` value a client sent in connection_init, if it is text."""
    header = (params or {}).get("Authorization") or (params or {}).get("authorization")
    return header if isinstance(header, str) else None
