"""What every resolver gets: the engine and the caller the bearer token named."""

from __future__ import annotations

from dataclasses import dataclass

from strawberry.types import Info as StrawberryInfo

from slotengine.domain.errors import NotAuthorized
from slotengine.service.engine import Engine
from slotengine.service.views import Caller


@dataclass
class Context:
    engine: Engine
    caller: Caller | None

    def require_caller(self) -> Caller:
        """The caller, or NotAuthorized when the request carried no token."""
        if self.caller is None:
            raise NotAuthorized("this operation needs 'Authorization: Bearer <token>'")
        return self.caller


Info = StrawberryInfo[Context, None]
