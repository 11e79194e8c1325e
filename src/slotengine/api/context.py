"""What every resolver gets: the engine and the caller the bearer token named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strawberry.types import Info as StrawberryInfo

from slotengine.domain.errors import NotAuthorized
from slotengine.service.engine import Engine
from slotengine.service.events import EventHub
from slotengine.service.views import Caller


@dataclass
class Context:
    engine: Engine
    hub: EventHub
    caller: Caller | None
    # What a WebSocket client sent in connection_init (Strawberry fills it in).
    connection_params: dict[str, Any] | None = None

    def require_caller(self) -> Caller:
        """The caller, or NotAuthorized when the request carried no token."""
        if self.caller is None:
            raise NotAuthorized("this operation needs 'Authorization: Bearer <token>'")
        return self.caller


Info = StrawberryInfo[Context, None]
