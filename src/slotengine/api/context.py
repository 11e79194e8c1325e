"""What every resolver gets: the engine and the caller the bearer token named."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from slotengine.domain.errors import NotAuthorized
from slotengine.service import queries
from slotengine.service.engine import Engine
from slotengine.service.events import EventHub
from slotengine.service.views import Caller, TransitionView


@dataclass
class Context:
    engine: Engine
    hub: EventHub
    caller: Caller | None
    # What a WebSocket client sent in connection_init (Strawberry fills it in).
    connection_params: dict[str, Any] | None = None
    # The peer's address (from the ASGI scope): who an anonymous reader is, for the read limit.
    client_address: str | None = None
    # Batches the audit trails a response asks for into one query. No cache: a WebSocket keeps
    # its context for as long as it is open, and a trail grows.
    histories: DataLoader[str, list[TransitionView]] = field(init=False)

    @classmethod
    def of_request(cls, scope: Scope) -> Context:
        """The context of an HTTP request or WebSocket: the app's engine, the caller auth found."""
        state = scope["app"].state
        client = scope.get("client")
        caller = scope.get("state", {}).get("caller")
        return cls(
            engine=state.engine, hub=state.hub, caller=caller, client_address=client[0] if client else None
        )

    def __post_init__(self) -> None:
        engine = self.engine

        async def load(booking_ids: list[str]) -> list[list[TransitionView]]:
            async with engine.read_gate.entered():
                return await queries.booking_histories(booking_ids)

        self.histories = DataLoader(load_fn=load, cache=False)

    @property
    def reader(self) -> str:
        """Whom a read counts against: the holder, or an anonymous caller's address."""
        if self.caller is not None:
            return self.caller.holder
        return f"ip:{self.client_address or 'unknown'}"

    def require_caller(self) -> Caller:
        """The caller, or NotAuthorized when the request carried no token."""
        if self.caller is None:
            raise NotAuthorized("this operation needs 'Authorization: Bearer <token>'")
        return self.caller


Info = StrawberryInfo[Context, None]
